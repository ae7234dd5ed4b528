"""SuiteService: many tests submitted in one call and followed as one thing. Each
test is a job, validated as SubmitJob validates it (field paths under
`setup[i].job` / `tests[i].job`), labelled `suite_id` and `suite_test`; the tests
depend on the setup jobs. Outcomes, counts and the JUnit report: gateway/suites.py;
the suite record and the one-pipeline read of its jobs: conveyor/store/suite_store.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc

from conveyor.errors import ConveyorError, FieldViolation, InvalidArgument, Unavailable
from conveyor.kinds import KindSpec
from conveyor.store.records import EventType, NewJob
from conveyor.store.suite_store import SUITE_LABEL, TEST_LABEL, Member, SuiteRecord, SuiteStore, new_suite_id
from conveyor.v1 import job_service_pb2, suite_service_pb2_grpc
from conveyor.v1 import suite_service_pb2 as pb
from gateway.auth import caller
from gateway.event_hub import HubClosed, Subscription
from gateway.mapping import heartbeat_now, submitted_to_proto
from gateway.runtime import GatewayRuntime
from gateway.servicers.jobs import build_job, caller_owner
from gateway.suites import PlannedTest, build_suite, check_room, junit_xml, summary, validate_suite_shape, withdraw
from gateway.validation import capped, check_job_id, validate_submit

SHUTTING_DOWN = "the gateway is shutting down; watch the suite again"


class SuiteServicer(suite_service_pb2_grpc.SuiteServiceServicer):
    def __init__(self, rt: GatewayRuntime, suites: SuiteStore) -> None:
        self.rt = rt
        self.suites = suites

    async def _record(self, suite_id: str) -> SuiteRecord:
        check_job_id(suite_id)
        who = caller()
        return await self.suites.get(suite_id, None if who.sees_every_tenant else who.tenant)

    # ---- submit ---------------------------------------------------------------------

    async def _validated(self, planned: list[PlannedTest]) -> list[KindSpec | None]:
        violations: list[FieldViolation] = []
        kinds: list[KindSpec | None] = []
        for test in planned:
            found = validate_submit(test.request, self.rt.limits, f"{test.path}.job.")
            kind: KindSpec | None = None
            if not found and test.request.WhichOneof("task") == "kind":
                kind, found = await self.rt.kinds.check(test.request.kind, f"{test.path}.job.kind")
            violations += found
            kinds.append(kind)
            if len(violations) >= 10:
                break
        if violations:
            raise InvalidArgument(capped(violations))
        return kinds

    def _new_job(self, test: PlannedTest, owner: str, kind: KindSpec | None, depends_on: list[str]) -> NewJob:
        request = job_service_pb2.SubmitJobRequest()
        request.CopyFrom(test.request)
        request.depends_on.extend(depends_on)
        return build_job(self.rt, request, owner, int(time.time() * 1000), kind)

    async def SubmitSuite(
        self, request: pb.SubmitSuiteRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitSuiteResponse:
        shape = validate_suite_shape(request)
        if shape:
            raise InvalidArgument(capped(shape))
        suite_id = new_suite_id()
        planned: list[PlannedTest] = []
        for group in ("setup", "tests"):
            for i, test in enumerate(getattr(request, group)):
                job = job_service_pb2.SubmitJobRequest()
                job.CopyFrom(test.job)
                job.labels[SUITE_LABEL] = suite_id
                job.labels[TEST_LABEL] = test.name
                planned.append(PlannedTest(test.name, group == "setup", job, f"{group}[{i}]"))
        kinds = await self._validated(planned)
        owner = caller_owner(context)
        # All or nothing: the quota for the whole suite up front; a refusal midway
        # anyway (a race) withdraws what was made (gateway/suites.py).
        await check_room(self.suites, owner, len(planned), self.rt.settings.tenant_max_open_jobs)
        response = pb.SubmitSuiteResponse(suite_id=suite_id)
        members: list[Member] = []
        fresh: set[str] = set()  # the jobs this call made (not deduplicated to existing ones)
        setup_ids: list[str] = []
        # The setup first, then the tests waiting for it: two batches, one round trip each.
        for setup in (True, False):
            batch = [(t, k) for t, k in zip(planned, kinds, strict=True) if t.setup is setup]
            if not batch:
                continue
            jobs = [self._new_job(t, owner, k, [] if setup else setup_ids) for t, k in batch]
            outcomes = await self.rt.store.submit_many(jobs)
            refusal = next((o for o in outcomes if isinstance(o, ConveyorError)), None)
            if refusal is not None:
                made_now = [o.id for o in outcomes if not isinstance(o, ConveyorError) and not o.existing]
                await withdraw(self.rt.store, suite_id, [m.job_id for m in members if m.job_id in fresh]
                               + made_now, refusal)
                raise refusal
            for (test, _), made, outcome in zip(batch, jobs, outcomes, strict=True):
                assert not isinstance(outcome, ConveyorError)
                if not outcome.existing:
                    fresh.add(outcome.id)
                sub = submitted_to_proto(outcome)
                response.tests.add(name=test.name, job_id=sub.id, state=sub.state, position=sub.position,
                                   setup=setup)
                members.append(Member(test.name, sub.id, setup, made.queue))
                if setup:
                    setup_ids.append(sub.id)
            self.rt.admission.wake()
        await self.suites.create(SuiteRecord(suite_id, owner, request.name or "suite", int(time.time() * 1000),
                                             tuple(members)))
        return response

    # ---- read -----------------------------------------------------------------------

    async def _suite(self, record: SuiteRecord) -> pb.Suite:
        return build_suite(record, await self.suites.member_states(record))

    async def GetSuite(self, request: pb.GetSuiteRequest, context: grpc.aio.ServicerContext) -> pb.GetSuiteResponse:
        return pb.GetSuiteResponse(suite=await self._suite(await self._record(request.id)))

    async def GetSuiteReport(
        self, request: pb.GetSuiteReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSuiteReportResponse:
        record = await self._record(request.id)
        states = await self.suites.member_states(record, with_results=True)
        suite = build_suite(record, states)
        return pb.GetSuiteReportResponse(junit_xml=junit_xml(suite, states), summary=summary(suite), suite=suite)

    async def WatchSuite(
        self, request: pb.WatchSuiteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchSuiteResponse]:
        """The suite, then again whenever a member's state changes (seen on its queue's
        events, through the gateway's shared event reader); a re-read every heartbeat
        interval covers anything missed. Ends once every test has ended."""
        record = await self._record(request.id)
        members = {m.job_id for m in record.members}
        hub = self.rt.hub
        subs: list[Subscription] = []
        try:
            try:
                for queue in sorted({m.queue for m in record.members}):
                    subs.append(await hub.subscribe_queue(queue))  # before the first read
            except HubClosed:
                raise Unavailable(SHUTTING_DOWN, reason="GATEWAY_SHUTTING_DOWN") from None
            suite = await self._suite(record)
            yield pb.WatchSuiteResponse(suite=suite)
            heartbeat = self.rt.settings.watch_heartbeat_seconds
            while not suite.done:
                changed = await _member_changed(subs, members, heartbeat)
                if changed is False:
                    continue  # only other jobs' events, or progress: nothing to re-read
                latest = await self._suite(record)
                if latest.tests != suite.tests or latest.done != suite.done:
                    suite = latest
                    yield pb.WatchSuiteResponse(suite=suite)
                elif not changed:
                    yield pb.WatchSuiteResponse(heartbeat=heartbeat_now())
        finally:
            for sub in subs:
                hub.unsubscribe(sub)


async def _member_changed(subs: list[Subscription], members: set[str], timeout: float) -> bool | None:
    """Wait up to `timeout` for a state change of a member job: True if one came (or a
    subscription overflowed and anything may have), False if only other events came,
    None if nothing came."""
    waits = [asyncio.ensure_future(s.wait(timeout)) for s in subs]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        for w in waits:
            with contextlib.suppress(asyncio.CancelledError, HubClosed):
                await w
    changed = any(s.take_overflow() for s in subs)
    got = False
    for w in done:
        try:
            events = w.result()
        except HubClosed:
            raise Unavailable(SHUTTING_DOWN, reason="GATEWAY_SHUTTING_DOWN") from None
        got = got or bool(events)
        changed = changed or any(e.type is EventType.STATE and e.job_id in members for e in events)
    return True if changed else (False if got else None)
