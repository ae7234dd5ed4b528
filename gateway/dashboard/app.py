"""The web dashboard: an aiohttp app on its own port in the gateway's process and
event loop. Every page's data comes from the gateway's own servicers through
`Calls` (the caller's API key, the same guard and tenant rules as gRPC); live
updates are server-sent events fed by WatchQueue / WatchJob, that is by the
gateway's event hub. The page itself is static: plain ES modules, no build step.

Login: the API key, checked with WhoAmI, kept in an HttpOnly SameSite=Strict
cookie (or sent as `Authorization: Bearer`); with CONVEYOR_AUTH=off there is no
login. Actions are POSTs that must carry the `X-Conveyor-Dashboard: 1` header,
which no other site's form or image can send."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from google.protobuf import duration_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from conveyor.net import is_loopback
from conveyor.settings import Settings
from conveyor.store.key_store import Role
from conveyor.v1 import job_pb2, key_service_pb2, queue_service_pb2, schedule_service_pb2
from conveyor.v1 import job_service_pb2 as jobs_pb
from conveyor_client import queue_events
from gateway.dashboard.calls import CallError, Calls, Guard, allowed_methods, may

log = structlog.get_logger("gateway.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "conveyor_key"
ACTION_HEADER = "X-Conveyor-Dashboard"
#: Events of one watched queue arriving this close together go to the page as one message.
COALESCE_SECONDS = 0.1
#: How often an overview stream looks for new queues (a queue's first job shows within this).
RELIST_SECONDS = 1.0
#: Events of a queue newly seen by an overview stream that it replays (see relist).
FRESH_REPLAY = 1000
#: Every this many relists it also refreshes the workers' heartbeats.
WORKERS_EVERY = 3
PAGE_SIZE = 50
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
#: Artifact types shown inline; anything else is a download (never rendered as a page of ours).
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "application/json", "text/plain"})

STATE_NAMES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in job_pb2.JobState.items() if value}


class DashboardBindingError(RuntimeError):
    """The dashboard asked to serve beyond loopback without auth."""


def to_dict(message: Message) -> dict[str, Any]:
    """The protobuf JSON mapping (camelCase, enum names, zeros included): new fields
    of a message show up on the page without a change here."""
    return MessageToDict(message, always_print_fields_with_no_presence=True, unquote_int64_if_possible=True)


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise DashboardBindingError(f"CONVEYOR_DASHBOARD_ADDR={addr!r}: expected host:port (or `off`)")
    return host.strip("[]") or "127.0.0.1", int(port)


def secret_of(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE, "")


def _sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Dashboard:
    def __init__(self, settings: Settings, guard: Guard, servicers: dict[str, Any]) -> None:
        self.settings = settings
        self.calls = Calls(guard, servicers)
        self.auth_on = settings.auth == "on"
        self.addr = settings.dashboard_addr.strip()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._streams: set[asyncio.Task[Any]] = set()
        self.app = web.Application(middlewares=[self._errors])
        self.app.on_response_prepare.append(self._headers)
        r = self.app.router
        r.add_get("/", self.index)
        r.add_static("/static", STATIC, show_index=False, append_version=False)
        r.add_get("/api/me", self.me)
        r.add_post("/api/login", self.login)
        r.add_post("/api/logout", self.logout)
        r.add_get("/api/queues", self.queues)
        r.add_get("/api/queues/{name}", self.queue)
        r.add_post("/api/queues/{name}/{action}", self.queue_action)
        r.add_get("/api/jobs", self.jobs)
        r.add_get("/api/jobs/{id}", self.job)
        r.add_get("/api/jobs/{id}/stream", self.job_stream)
        r.add_get("/api/jobs/{id}/artifacts/{name}", self.artifact)
        r.add_post("/api/jobs/{id}/{action}", self.job_action)
        r.add_get("/api/workers", self.workers)
        r.add_get("/api/schedules", self.schedules)
        r.add_get("/api/stream", self.overview_stream)

    @property
    def enabled(self) -> bool:
        return self.addr.lower() not in ("", "off", "none", "false", "0")

    def check_binding(self) -> None:
        """Beyond loopback only when asked, and never without auth (CONVEYOR_INSECURE
        does not stretch to the dashboard: a browser page is too easy to reach)."""
        if not self.enabled:
            return
        split_addr(self.addr)
        if not self.auth_on and not is_loopback(self.addr):
            raise DashboardBindingError(
                f"refusing to serve the dashboard on {self.addr} without auth: keep CONVEYOR_AUTH=on, or bind "
                "CONVEYOR_DASHBOARD_ADDR to loopback (or `off`)"
            )

    async def start(self) -> None:
        if not self.enabled:
            return
        self.check_binding()
        host, port = split_addr(self.addr)
        runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as err:
            # The gateway serves gRPC without it rather than not at all (another gateway on this host has it).
            log.warning("dashboard not served", addr=self.addr, error=err.strerror or str(err))
            await runner.cleanup()
            return
        self._runner = runner
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        self.url = f"http://{shown}:{bound[1]}/"
        log.info("dashboard serving", url=self.url, auth=self.settings.auth)

    async def stop(self) -> None:
        self._closing.set()
        for task in list(self._streams):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- plumbing -------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except CallError as err:
            return web.json_response({"error": err.body}, status=err.status)

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        if not request.path.startswith("/static/"):
            headers.setdefault("Cache-Control", "no-store")
        if request.path == "/":
            headers["Content-Security-Policy"] = CSP

    @staticmethod
    def _action(request: web.Request) -> None:
        if request.headers.get(ACTION_HEADER) != "1":
            raise CallError(403, {"code": "PERMISSION_DENIED", "reason": "DASHBOARD_HEADER_MISSING",
                                  "message": f"actions need the {ACTION_HEADER}: 1 header"})

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise CallError(400, {"code": "INVALID_ARGUMENT", "reason": "MALFORMED_REQUEST",
                                  "message": "the body is not JSON"}) from None
        if not isinstance(body, dict):
            raise CallError(400, {"code": "INVALID_ARGUMENT", "reason": "MALFORMED_REQUEST",
                                  "message": "the body must be a JSON object"})
        return body

    async def _call(self, request: web.Request, method: str, message: Message) -> Any:
        return await self.calls.unary(secret_of(request), method, message)

    # ---- pages ----------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})

    async def _whoami(self, secret: str) -> dict[str, Any]:
        me = await self.calls.unary(secret, "KeyService/WhoAmI", key_service_pb2.WhoAmIRequest())
        role = Role(me.role)
        return {"auth": self.settings.auth, "tenant": me.tenant, "role": role.name.lower(), "keyId": me.key_id,
                "may": allowed_methods(role)}

    async def me(self, request: web.Request) -> web.StreamResponse:
        """Who the page's key is; without a valid key, `authenticated: false` (not a
        401: the page asks before it has a key, and shows its login)."""
        try:
            return web.json_response({**await self._whoami(secret_of(request)), "authenticated": True})
        except CallError as err:
            if err.status != 401:
                raise
            return web.json_response({"auth": self.settings.auth, "authenticated": False, "reason": err.body["reason"]})

    async def login(self, request: web.Request) -> web.StreamResponse:
        self._action(request)
        key = str((await self._json_body(request)).get("key", "")).strip()
        if not key:
            raise CallError(400, {"code": "INVALID_ARGUMENT", "reason": "FIELD_INVALID", "message": "give an API key",
                                  "violations": [{"field": "key", "description": "give an API key"}]})
        response = web.json_response(await self._whoami(key))
        response.set_cookie(COOKIE, key, httponly=True, samesite="Strict", secure=request.secure, path="/")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self._action(request)
        response = web.json_response({})
        response.del_cookie(COOKIE, path="/")
        return response

    # ---- queues ---------------------------------------------------------------------

    async def _queue_names(self, secret: str) -> list[str]:
        names: list[str] = []
        token = ""
        for _ in range(100):
            page = await self.calls.unary(secret, "QueueService/ListQueues",
                                          queue_service_pb2.ListQueuesRequest(page_size=1000, page_token=token))
            names += [q.name for q in page.queues]
            token = page.next_page_token
            if not token:
                break
        return names

    async def _queue(self, secret: str, name: str) -> dict[str, Any]:
        got = await self.calls.unary(secret, "QueueService/GetQueue", queue_service_pb2.GetQueueRequest(queue=name))
        return to_dict(got.queue)

    async def queues(self, request: web.Request) -> web.StreamResponse:
        secret = secret_of(request)
        names = await self._queue_names(secret)
        return web.json_response({"queues": [await self._queue(secret, n) for n in names]})

    async def queue(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._queue(secret_of(request), request.match_info["name"]))

    async def queue_action(self, request: web.Request) -> web.StreamResponse:
        self._action(request)
        name, action = request.match_info["name"], request.match_info["action"]
        body = await self._json_body(request)
        secret = secret_of(request)
        result: Message
        if action == "pause":
            result = await self.calls.unary(secret, "QueueService/PauseQueue",
                                            queue_service_pb2.PauseQueueRequest(queue=name))
        elif action == "resume":
            result = await self.calls.unary(secret, "QueueService/ResumeQueue",
                                            queue_service_pb2.ResumeQueueRequest(queue=name))
        elif action == "retry-failed":
            result = await self.calls.unary(secret, "QueueService/RetryFailedJobs",
                                            queue_service_pb2.RetryFailedJobsRequest(queue=name))
        elif action == "clean":
            state = STATE_NAMES.get(str(body.get("state", "completed")).lower(), 0)
            clean = queue_service_pb2.CleanQueueRequest(queue=name, state=state)  # type: ignore[arg-type]
            older = body.get("olderThanSeconds")
            if older is not None:
                if not isinstance(older, (int, float)) or isinstance(older, bool):
                    raise CallError(400, {"code": "INVALID_ARGUMENT", "reason": "FIELD_INVALID",
                                          "message": "olderThanSeconds: a number of seconds"})
                clean.older_than.CopyFrom(duration_pb2.Duration(seconds=int(older)))
            result = await self.calls.unary(secret, "QueueService/CleanQueue", clean)
        else:
            raise web.HTTPNotFound()
        return web.json_response(to_dict(result))

    # ---- jobs -----------------------------------------------------------------------

    async def jobs(self, request: web.Request) -> web.StreamResponse:
        """ListJobs with the page's filters (`label` as key=value, `owner` the tenant, for
        an admin): what a caller may see, and each page, are ListJobs' to say."""
        q = request.query
        state = 0
        if q.get("state"):
            state = STATE_NAMES.get(q["state"].lower(), -1)
            if state < 0:
                raise CallError(400, {"code": "INVALID_ARGUMENT", "reason": "FIELD_INVALID",
                                      "message": f"state: one of {', '.join(STATE_NAMES)}",
                                      "violations": [{"field": "state", "description": "unknown state"}]})
        labels = {}
        if q.get("label"):
            key, sep, value = (part.strip() for part in q["label"].partition("="))
            if not sep:
                raise CallError(400, {"code": "INVALID_ARGUMENT", "reason": "FIELD_INVALID",
                                      "message": "label: key=value",
                                      "violations": [{"field": "label", "description": "key=value"}]})
            labels[key] = value
        size = PAGE_SIZE
        with contextlib.suppress(ValueError):
            size = max(1, min(int(q.get("pageSize", PAGE_SIZE)), 200))
        page = await self._call(request, "JobService/ListJobs", jobs_pb.ListJobsRequest(
            queue=q.get("queue", ""), state=state, kind=q.get("kind", ""),  # type: ignore[arg-type]
            page_size=size, page_token=q.get("pageToken", ""), labels=labels, tenant=q.get("owner", "")))
        return web.json_response({"jobs": [_job_row(job) for job in page.jobs], "nextPageToken": page.next_page_token})

    async def _job(self, secret: str, job_id: str) -> dict[str, Any]:
        got = await self.calls.unary(secret, "JobService/GetJob", jobs_pb.GetJobRequest(id=job_id))
        return to_dict(got.job)

    async def job(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._job(secret_of(request), request.match_info["id"]))

    async def job_action(self, request: web.Request) -> web.StreamResponse:
        self._action(request)
        job_id, action = request.match_info["id"], request.match_info["action"]
        result: Any
        if action == "cancel":
            result = await self._call(request, "JobService/CancelJob", jobs_pb.CancelJobRequest(id=job_id))
        elif action == "retry":
            result = await self._call(request, "JobService/RetryJob", jobs_pb.RetryJobRequest(id=job_id))
        else:
            raise web.HTTPNotFound()
        return web.json_response(to_dict(result.job))

    async def artifact(self, request: web.Request) -> web.StreamResponse:
        job_id, name = request.match_info["id"], request.match_info["name"]
        chunks = self.calls.stream(secret_of(request), "JobService/GetArtifact",
                                   jobs_pb.GetArtifactRequest(job_id=job_id, name=name))
        first = await anext(chunks)  # errors (not found, not the caller's) before any header
        content_type = first.content_type or "application/octet-stream"
        response = web.StreamResponse(headers={
            "Content-Type": content_type if content_type in INLINE_TYPES else "application/octet-stream",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Content-Disposition": ("inline" if content_type in INLINE_TYPES else "attachment")
            + f"; filename*=UTF-8''{_quote(name)}",
        })
        response.content_length = first.size_bytes or None
        await response.prepare(request)
        await response.write(first.data)
        async for chunk in chunks:
            await response.write(chunk.data)
        await response.write_eof()
        return response

    # ---- workers, schedules -----------------------------------------------------------

    async def _workers(self, secret: str) -> list[dict[str, Any]]:
        got = await self.calls.unary(secret, "QueueService/ListWorkers", queue_service_pb2.ListWorkersRequest())
        return [to_dict(w) for w in got.workers]

    async def workers(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"workers": await self._workers(secret_of(request))})

    async def schedules(self, request: web.Request) -> web.StreamResponse:
        got = await self._call(request, "ScheduleService/ListSchedules", schedule_service_pb2.ListSchedulesRequest(
            page_size=100, page_token=request.query.get("pageToken", "")))
        return web.json_response({"schedules": [to_dict(s) for s in got.schedules],
                                  "nextPageToken": got.next_page_token})

    # ---- live: server-sent events -------------------------------------------------------

    async def _open(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")
        return response

    async def _tracked(self, body: Awaitable[web.StreamResponse]) -> web.StreamResponse:
        task = asyncio.ensure_future(body)
        self._streams.add(task)
        try:
            return await task
        finally:
            self._streams.discard(task)

    async def job_stream(self, request: web.Request) -> web.StreamResponse:
        """The job as it changes: `job` (the whole job, re-read after each event
        batch: steps, artifacts, attempts, error) and `event` (each event, its
        sequence as the SSE id, so a reconnecting EventSource resumes where it left
        off); `end` after the terminal event."""
        secret, job_id = secret_of(request), request.match_info["id"]
        job = await self._job(secret, job_id)  # NOT_FOUND/401 answered as such, before the stream opens
        watch = jobs_pb.WatchJobRequest(id=job_id)
        last_id = request.headers.get("Last-Event-ID", "")
        if last_id.isdigit():
            watch.after_sequence = int(last_id)
        return await self._tracked(self._job_stream(request, secret, job, watch))

    async def _job_stream(
        self, request: web.Request, secret: str, job: dict[str, Any], watch: jobs_pb.WatchJobRequest
    ) -> web.StreamResponse:
        response = await self._open(request)
        await response.write(_sse("job", job))
        try:
            async for message in self.calls.stream(secret, "JobService/WatchJob", watch):
                kind = message.WhichOneof("kind")
                if kind == "event":
                    await response.write(_sse("event", to_dict(message.event), message.event.sequence))
                    await response.write(_sse("job", await self._job(secret, watch.id)))
                elif kind == "heartbeat":
                    await response.write(b": heartbeat\n\n")
            await response.write(_sse("end", {}))
        except CallError as err:
            await response.write(_sse("failure", err.body))
        except ConnectionResetError:
            pass  # the page went away
        return response

    async def overview_stream(self, request: web.Request) -> web.StreamResponse:
        """Queues, their jobs' events and the workers, live: `queue` (a queue re-read
        with GetQueue after its events), `events` (the latest event of each job that
        changed, coalesced over COALESCE_SECONDS) and, for a caller allowed
        ListWorkers, `workers`. One WatchQueue per queue (the caller's view of it)."""
        secret = secret_of(request)
        me = await self._whoami(secret)
        names = await self._queue_names(secret)
        return await self._tracked(self._overview(request, secret, Role[me["role"].upper()], names))

    async def _overview(
        self, request: web.Request, secret: str, role: Role, names: list[str]
    ) -> web.StreamResponse:
        response = await self._open(request)
        inbox: asyncio.Queue[list[job_pb2.JobEvent]] = asyncio.Queue()
        pumps: dict[str, asyncio.Task[None]] = {}
        sees_workers = may(role, "QueueService/ListWorkers")

        async def pump(name: str, since: int | None) -> None:
            """One queue's events into the inbox (after sequence `since`; None: from
            now); on a refusal it ends, and the next relist starts it again."""
            request_ = queue_service_pb2.WatchQueueRequest(queue=name, max_batch_size=500)
            if since is not None:
                request_.after_sequence = since
            try:
                async for message in self.calls.stream(secret, "QueueService/WatchQueue", request_):
                    events = queue_events(message)
                    if events:
                        inbox.put_nowait(events)
            except CallError as err:
                log.info("dashboard queue watch ended", queue=name, error=err.body.get("message", ""))

        def watch(name: str, since: int | None = None) -> None:
            pumps[name] = asyncio.create_task(pump(name, since), name=f"dashboard-watch-{name}")

        async def send_queues(which: set[str]) -> dict[str, int]:
            """Send each queue; returns their last sequences."""
            sequences = {}
            for name in sorted(which):
                queue = await self._queue(secret, name)
                sequences[name] = int(queue.get("lastSequence", 0))
                await response.write(_sse("queue", queue))
            return sequences

        async def relist() -> None:
            # A queue seen for the first time (its first job of the caller's, say) is
            # followed from a little before now: the events since it appeared (its jobs
            # already on the page) are not missed.
            fresh = {n for n in await self._queue_names(secret) if n not in pumps or pumps[n].done()}
            for name, last in (await send_queues(fresh)).items():
                watch(name, max(0, last - FRESH_REPLAY))

        async def send_workers() -> None:
            if sees_workers:
                await response.write(_sse("workers", await self._workers(secret)))

        try:
            for name in names:
                watch(name)
            await send_queues(set(names))
            await send_workers()
            ticks = 0
            loop = asyncio.get_running_loop()
            relisted = loop.time()
            while not self._closing.is_set():
                try:
                    first = await asyncio.wait_for(inbox.get(), max(0.0, relisted + RELIST_SECONDS - loop.time()))
                except TimeoutError:
                    first = None
                if loop.time() >= relisted + RELIST_SECONDS:  # busy or not, once a second
                    relisted = loop.time()
                    ticks += 1
                    await relist()
                    await response.write(b": keepalive\n\n")
                    if ticks % WORKERS_EVERY == 0:
                        await send_workers()
                if first is None:
                    continue
                await asyncio.sleep(COALESCE_SECONDS)
                batch = list(first)
                while not inbox.empty():
                    batch += inbox.get_nowait()
                latest: dict[str, job_pb2.JobEvent] = {}
                for event in batch:
                    latest[event.job_id] = event
                await response.write(_sse("events", [to_dict(e) for e in list(latest.values())[-500:]]))
                await send_queues({e.queue for e in batch})
                if any(e.type == job_pb2.JOB_EVENT_TYPE_STATE_CHANGED for e in batch):
                    await send_workers()
        except CallError as err:
            with contextlib.suppress(ConnectionResetError):
                await response.write(_sse("failure", err.body))
        except ConnectionResetError:
            pass  # the page went away
        finally:
            for task in pumps.values():
                task.cancel()
            await asyncio.gather(*pumps.values(), return_exceptions=True)
        return response


def _job_row(job: job_pb2.Job) -> dict[str, Any]:
    """A job as the list shows it (without its task and result)."""
    row = job_pb2.Job()
    row.CopyFrom(job)
    row.ClearField("task")
    row.ClearField("result")
    row.ClearField("attempts")
    return to_dict(row)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
