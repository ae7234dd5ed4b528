"""Suites and sessions for the asyncio client: a SubmitSuiteRequest from a suite file's
dict (shared `defaults` merged into every test's job), and the SuiteService and
SessionService calls.

A suite file (YAML or JSON), each test a SubmitJob request in the protobuf JSON
mapping plus its `name`:

    name: checkout
    defaults: {queue: e2e, maxAttempts: 2, browser: {recording: {trace: TRACE_MODE_RETAIN_ON_FAILURE}}}
    setup:
      - {name: log in, browser: {session: {save: shop}, steps: [...]}}
    tests:
      - {name: cart, browser: {session: {use: shop}, steps: [...]}}
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from conveyor.v1 import session_service_pb2, session_service_pb2_grpc, suite_service_pb2, suite_service_pb2_grpc
from conveyor_client._common import jsonable

if TYPE_CHECKING:
    from conveyor_client.aio import AsyncConveyorClient

pb = suite_service_pb2
Suite = suite_service_pb2.Suite
_SUITE_KEYS = {"name", "defaults", "setup", "tests"}


def merged(defaults: Mapping[str, Any], test: Mapping[str, Any]) -> dict[str, Any]:
    """`test` over `defaults`: objects merge key by key, anything else the test's wins."""
    out: dict[str, Any] = dict(defaults)
    for key, value in test.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def suite_request(data: Mapping[str, Any] | suite_service_pb2.SubmitSuiteRequest) -> pb.SubmitSuiteRequest:
    """A SubmitSuiteRequest from a suite file's dict (see the module's doc); ValueError
    says what is wrong and where."""
    if isinstance(data, pb.SubmitSuiteRequest):
        return data
    if not isinstance(data, Mapping):
        raise ValueError(f"a suite is an object with tests, not {type(data).__name__}")
    unknown = set(data) - _SUITE_KEYS
    if unknown:
        raise ValueError(f"unknown top-level key(s) {', '.join(sorted(unknown))}; a suite has "
                         f"{', '.join(sorted(_SUITE_KEYS))}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ValueError("defaults: an object (fields every test's job starts from)")
    request = pb.SubmitSuiteRequest(name=str(data.get("name") or ""))
    for group in ("setup", "tests"):
        items = data.get(group) or []
        if not isinstance(items, list):
            raise ValueError(f"{group}: a list of tests")
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise ValueError(f"{group}[{i}]: a test is an object with a name and a job's fields")
            job = merged(defaults, {k: v for k, v in item.items() if k != "name"})
            test = getattr(request, group).add(name=item["name"])
            try:
                json_format.ParseDict(jsonable(job), test.job)
            except json_format.ParseError as err:
                raise ValueError(f"{group}[{i}] ({item['name']}): " + " ".join(str(err).split())) from err
    if not request.tests:
        raise ValueError("tests: at least one test")
    return request


class AsyncSuites:
    """SuiteService and SessionService on an AsyncConveyorClient's channel (its API
    key, TLS and error mapping)."""

    def __init__(self, client: AsyncConveyorClient) -> None:
        self._client = client
        self._suites = suite_service_pb2_grpc.SuiteServiceStub(client._channel)
        self._sessions = session_service_pb2_grpc.SessionServiceStub(client._channel)

    async def submit(self, request: Mapping[str, Any] | pb.SubmitSuiteRequest) -> pb.SubmitSuiteResponse:
        """Submit a suite: answers at once with its id and each test's job id and position."""
        response: pb.SubmitSuiteResponse = await self._client._call(self._suites.SubmitSuite, suite_request(request))
        return response

    async def get(self, suite_id: str) -> Suite:
        response: pb.GetSuiteResponse = await self._client._call(self._suites.GetSuite,
                                                                 pb.GetSuiteRequest(id=suite_id))
        return response.suite

    async def watch(self, suite_id: str) -> AsyncIterator[pb.WatchSuiteResponse]:
        """The suite, then again whenever a test's state changes, to its end (heartbeats between)."""
        async for message in self._client._stream(self._suites.WatchSuite, pb.WatchSuiteRequest(id=suite_id)):
            yield message

    async def report(self, suite_id: str) -> pb.GetSuiteReportResponse:
        """The JUnit XML report and the summary."""
        response: pb.GetSuiteReportResponse = await self._client._call(
            self._suites.GetSuiteReport, pb.GetSuiteReportRequest(id=suite_id))
        return response

    async def list_sessions(self) -> list[session_service_pb2.Session]:
        response: session_service_pb2.ListSessionsResponse = await self._client._call(
            self._sessions.ListSessions, session_service_pb2.ListSessionsRequest())
        return list(response.sessions)

    async def delete_session(self, name: str) -> None:
        await self._client._call(self._sessions.DeleteSession, session_service_pb2.DeleteSessionRequest(name=name))
