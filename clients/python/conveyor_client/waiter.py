"""Waiting for many jobs of one queue over one WatchQueue stream: what BullMQ's
QueueEvents and `job.waitUntilFinished(queueEvents)` are to BullMQ.

    async with AsyncConveyorClient(target) as client, JobWaiter(client, "agents") as waiter:
        submitted = await waiter.submit(kind="chat", input={...})
        end = await waiter.wait(submitted.id)       # JobEnd: state, error, attempt
        if end.completed:
            output = job_output(await client.get(submitted.id))

`client.wait(id)` (WaitJob) costs a call per job and the gateway a subscription per
call; the waiter opens one stream when it starts and learns every job's end from it,
so a wait costs no call at all. The stream is followed from the moment its headers
arrive (the gateway subscribes before it sends them), so the end of a job submitted
through `waiter.submit` (or `submit_many`) after that cannot be missed, even when it
comes before the submit's own reply (a no-op job's often does): the ends of its jobs
not yet asked for are kept, up to `keep_ends` of them and `keep_seconds` each (and
only those: the ends of other jobs of the queue are not kept).

When the waiter cannot vouch for a job, `wait` asks the gateway with WaitJob instead:
a job submitted elsewhere or before the waiter started, a job whose early end may have
been dropped from the kept ones, and every job in flight across a gap in the stream (a
resume the gateway refused, OUT_OF_RANGE, or a stream that failed for another reason).
A stream cut by UNAVAILABLE (a gateway restart, a network blip) is resumed after the
last queue sequence seen, which loses nothing. So `wait` is always answered: by the
stream when it can, by WaitJob when it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.rpc import status_pb2

from conveyor.v1 import job_pb2, job_service_pb2
from conveyor_client._common import (
    RECONNECT_CODES,
    JobRequest,
    is_terminal,
    job_request,
    queue_events,
    watch_queue_request,
)
from conveyor_client.errors import ConveyorRpcError

if TYPE_CHECKING:
    from conveyor_client.aio import AsyncConveyorClient

_Reply = TypeVar("_Reply")

#: Events per stream message: ends of a busy queue come in bursts.
BATCH_SIZE = 500
#: Back-off between attempts to resume a cut stream (seconds, doubled up to the max).
RESUME_BACKOFF, RESUME_BACKOFF_MAX = 0.2, 5.0


def _resume_delay(failures: int) -> float:
    """Seconds before the next attempt to open the stream, after `failures` in a row."""
    return min(RESUME_BACKOFF * 2.0 ** min(failures, 8), RESUME_BACKOFF_MAX)


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: the state of its end (COMPLETED, FAILED or CANCELLED), the
    error of a FAILED or CANCELLED one, and the attempt it ended in. What a completed
    job returned is in its record: `job_output(await client.get(job_id))`."""

    job_id: str
    state: job_pb2.JobState.ValueType
    error: status_pb2.Status | None
    attempt: int

    @property
    def completed(self) -> bool:
        return self.state == job_pb2.JOB_STATE_COMPLETED

    @classmethod
    def of_event(cls, event: job_pb2.JobEvent) -> JobEnd:
        return cls(event.job_id, event.state, event.error if event.HasField("error") else None, event.attempt)

    @classmethod
    def of_job(cls, job: job_pb2.Job) -> JobEnd:
        return cls(job.id, job.state, job.error if job.HasField("error") else None, job.attempt)


class _Gap:
    """What a pending wait is told when the stream lost events: ask WaitJob."""


_GAP = _Gap()


class JobWaiter:
    """Waits for jobs of one queue on one WatchQueue stream (see the module's text).

    `start()` (or `async with`) opens the stream and returns once the gateway follows
    the queue; it raises ConveyorRpcError when the stream cannot be opened (a queue
    name refused, a key without the right). `close()` ends it."""

    def __init__(
        self,
        client: AsyncConveyorClient,
        queue: str = "default",
        *,
        keep_ends: int = 10_000,
        keep_seconds: float = 60.0,
    ) -> None:
        if keep_ends < 1 or keep_seconds <= 0:
            raise ValueError("keep_ends and keep_seconds must be positive")
        self.queue = queue
        self._client = client
        self._keep_ends, self._keep_seconds = keep_ends, keep_seconds
        #: Ends of this waiter's jobs (or read while a submit was in flight) that nobody
        #: has waited for yet: job id -> (when read, monotonic; the end), oldest first.
        self._ends: OrderedDict[str, tuple[float, JobEnd]] = OrderedDict()
        #: When the newest end dropped from `_ends` was read (monotonic).
        self._dropped_read_at = float("-inf")
        #: Waits in progress: job id -> their futures.
        self._waiting: dict[str, list[asyncio.Future[JobEnd | _Gap]]] = {}
        #: Jobs submitted through `submit` whose end the stream will bring: job id ->
        #: the stream epoch that vouches for it.
        self._mine: dict[str, int] = {}
        #: Submits of this waiter's in flight (an end read meanwhile may be theirs).
        self._submitting = 0
        #: Bumped at every gap in the stream; `_following` while an epoch's stream is
        #: known to be followed (its headers came and it lost nothing since).
        self._epoch = 0
        self._following = False
        self._last_sequence: int | None = None
        self._call: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Waits answered by the stream and by WaitJob (a fallback), for the curious.
        self.answered_by_stream = 0
        self.answered_by_wait_job = 0

    async def __aenter__(self) -> JobWaiter:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the waiter has started already")
        await self._open(None)
        self._task = asyncio.create_task(self._read(), name=f"conveyor-waiter-{self.queue}")

    async def close(self) -> None:
        self._closed = True
        self._following = False
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._tell_gap()  # waits in progress finish with WaitJob

    @property
    def following(self) -> bool:
        """Whether the stream follows the queue now: the ends of jobs submitted through
        the waiter from now on will come by it (while a cut stream is being resumed
        too; not after a gap until it is open again)."""
        return self._following

    @property
    def last_sequence(self) -> int | None:
        """The queue sequence of the last event it read (None before the first, and
        after a gap until the next)."""
        return self._last_sequence

    @property
    def kept(self) -> int:
        """How many ends of the waiter's jobs it holds that nobody has waited for yet."""
        return len(self._ends)

    # --- what callers use ---------------------------------------------------------------
    async def submit(self, request: Any = None, **options: Any) -> job_service_pb2.SubmitJobResponse:
        """`client.submit(...)` into the waiter's queue (its `queue` is the waiter's,
        whatever the request says); the job's end will come on the stream."""
        options["queue"] = self.queue
        submitted = await self._vouched(self._client.submit(request, **options), lambda r: [r.id])
        return submitted

    async def submit_many(self, requests: Iterable[JobRequest], **options: Any) -> job_service_pb2.SubmitJobsResponse:
        """`client.submit_many(...)` (SubmitJobs: one call), each request into the
        waiter's queue; the ends of the jobs submitted will come on the stream."""
        batch = [job_request(r, queue=self.queue) for r in requests]
        return await self._vouched(
            self._client.submit_many(batch, **options), lambda r: [s.id for s in r.results if s.id]
        )

    async def wait(self, job_id: str, timeout: float = 30.0) -> JobEnd:
        """How the job ended, once it has; TimeoutError after `timeout` seconds."""
        kept = self._ends.pop(job_id, None)
        if kept is not None:
            self._mine.pop(job_id, None)
            self.answered_by_stream += 1
            return kept[1]
        deadline = time.monotonic() + timeout
        if self._mine.get(job_id) == self._epoch and self._following:
            fut: asyncio.Future[JobEnd | _Gap] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(job_id, []).append(fut)
            try:
                told = await asyncio.wait_for(fut, timeout)
            finally:
                self._forget(job_id, fut)
            if isinstance(told, JobEnd):
                self.answered_by_stream += 1
                return told
        return await self._wait_job(job_id, deadline)

    # --- inside ------------------------------------------------------------------------
    async def _vouched(self, submit: Awaitable[_Reply], ids: Callable[[_Reply], list[str]]) -> _Reply:
        """A submit, and the jobs the stream vouches for after it: all those its reply
        names when the stream was followed from before it was sent to its reply, and no
        end read since it was sent has been dropped unclaimed (it may have been one of
        these jobs': the end of a short job often comes before its submit's reply)."""
        epoch, following, sent_at = self._epoch, self._following, time.monotonic()
        self._submitting += 1
        try:
            reply = await submit
        finally:
            self._submitting -= 1
        if following and self._following and epoch == self._epoch and self._dropped_read_at < sent_at:
            for job_id in ids(reply):
                if job_id not in self._ends:
                    self._mine[job_id] = epoch
        return reply

    async def _wait_job(self, job_id: str, deadline: float) -> JobEnd:
        left = deadline - time.monotonic()
        job = await self._client.wait(job_id, timeout=max(0.0, left))
        if not is_terminal(job.state):
            raise TimeoutError(f"job {job_id} has not ended yet")
        self.answered_by_wait_job += 1
        return JobEnd.of_job(job)

    def _forget(self, job_id: str, fut: asyncio.Future[JobEnd | _Gap]) -> None:
        futs = self._waiting.get(job_id)
        if futs is not None and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._waiting[job_id]

    async def _open(self, after: int | None) -> None:
        """Open the stream (resuming after `after`) and wait for its headers: from then
        on every event of the queue comes on it."""
        call = self._client._queues.WatchQueue(
            watch_queue_request(self.queue, after, BATCH_SIZE), metadata=self._client._metadata
        )
        try:
            await call.initial_metadata()
            if call.done():  # refused (or unreachable): its status came instead of headers
                await call.read()  # raises it
                raise ConveyorRpcError(grpc.StatusCode.UNKNOWN, "the stream ended as it opened")
        except grpc.aio.AioRpcError as err:
            call.cancel()
            raise ConveyorRpcError.from_grpc(err) from err
        self._call = call
        self._following = True

    async def _read(self) -> None:
        failures = 0
        while True:
            try:
                async for message in self._call:
                    failures = 0
                    for event in queue_events(message):
                        self._last_sequence = event.queue_sequence
                        if is_terminal(event.state):
                            self._ended(JobEnd.of_event(event))
                # (A WatchQueue stream does not end by itself: resumed as if cut.)
                if self._last_sequence is None:
                    self._gap()
            except grpc.aio.AioRpcError as err:
                if self._closed:
                    return
                if err.code() not in RECONNECT_CODES or self._last_sequence is None:
                    self._gap()  # not resumable: what it vouched for goes to WaitJob
            await asyncio.sleep(_resume_delay(failures))
            failures += 1
            await self._reopen()

    async def _reopen(self) -> None:
        """Open the stream again until it opens: resumed after the last event seen, or,
        after a gap, from now (a new epoch)."""
        for failures in itertools.count():
            try:
                await self._open(self._last_sequence if self._following else None)
                return
            except ConveyorRpcError as err:
                if err.code is not grpc.StatusCode.UNAVAILABLE:
                    self._gap()  # e.g. OUT_OF_RANGE: the events after the last seen are gone
            await asyncio.sleep(_resume_delay(failures))

    def _ended(self, end: JobEnd) -> None:
        mine = self._mine.pop(end.job_id, None) is not None
        futs = self._waiting.pop(end.job_id, None)
        if futs:
            for fut in futs:
                if not fut.done():
                    fut.set_result(end)
            return
        if not mine and not self._submitting:
            return  # not a job of this waiter's: WaitJob answers for it, if asked
        now = time.monotonic()
        self._ends[end.job_id] = (now, end)
        self._ends.move_to_end(end.job_id)
        while self._ends:
            read_at, _ = next(iter(self._ends.values()))
            if len(self._ends) <= self._keep_ends and now - read_at <= self._keep_seconds:
                break
            self._ends.popitem(last=False)
            self._dropped_read_at = max(self._dropped_read_at, read_at)

    def _gap(self) -> None:
        """The stream lost events (or cannot vouch any more): what it vouched for is
        asked of WaitJob instead."""
        self._epoch += 1
        self._following = False
        self._last_sequence = None
        self._mine.clear()
        self._tell_gap()

    def _tell_gap(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for futs in waiting.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(_GAP)
