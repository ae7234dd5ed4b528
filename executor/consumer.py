"""The executor worker's consumer of its Dramatiq queue, on the process's one event
loop: it takes messages while the worker has free slots, runs each one's actor as a
task on the loop, and acknowledges the deliveries that the store did not.

Why not Dramatiq's own `Worker`: it runs every message on a thread of its own, and an
async actor there is handed to the event-loop thread and waited for, so one message
crosses four threads (consumer, worker, loop, and back to the consumer for the ack).
On the no-op benchmark those hand-offs cost each worker process 0.24 ms of CPU per
job, against 0.07 ms for this consumer; every actor here is async and lives on the
loop anyway (the store client, the browser pool, Playwright).

What it keeps of Dramatiq: the messages (Dramatiq's format, on its Redis broker's
queue), the actors (declared on the broker, looked up by the message's actor name),
and Dramatiq's bookkeeping of deliveries (the worker's ack set and heartbeat, so that
a dead worker's messages are handed back as Dramatiq would: see reap.lua).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from redis.exceptions import RedisError

from conveyor.store.records import Taken, TakenMessage
from conveyor.transport import RUN_JOB_ACTOR, kind_queue, wake_key
from executor.runtime import ExecutorRuntime

log = structlog.get_logger("executor.consumer")

#: Longest an idle consumer blocks on the wake list before taking again (a missed
#: wake costs at most this).
IDLE_BLOCK_SECONDS = 1.0
#: Pause before trying again after Redis went away.
RECONNECT_SECONDS = 0.5

Actor = Callable[..., Awaitable[Any]]


def async_actors(broker: RedisBroker, queue_name: str) -> dict[str, Actor]:
    """The coroutine functions of the actors declared on `queue_name`, by actor name
    (Dramatiq wraps an async actor's function to run it from a worker thread; the
    consumer awaits the function itself)."""
    actors: dict[str, Actor] = {}
    for name in broker.get_declared_actors():
        actor = broker.get_actor(name)
        if actor.queue_name != queue_name:
            continue
        fn = inspect.unwrap(actor.fn)
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"actor {name!r} is not async: the executor runs actors on its event loop")
        actors[name] = fn
    return actors


class QueueConsumer:
    def __init__(self, runtime: ExecutorRuntime, broker: RedisBroker, queue_name: str, wake: aioredis.Redis) -> None:
        self.runtime = runtime
        self.actors = async_actors(broker, queue_name)
        #: A client of its own for blocking on the wake list, so that blocking never
        #: holds one of the store's connections.
        self._wake = wake
        #: The queues of the kinds the worker serves, then the transport queue itself
        #: (messages sent with Dramatiq's own API).
        self.queues = [*(kind_queue(kind) for kind in sorted(runtime.kinds)), queue_name]
        self._wake_keys = [wake_key(broker.namespace, queue) for queue in self.queues]
        self._running: set[asyncio.Task[None]] = set()
        #: Slots promised to messages a finish batch is taking (see reserve()).
        self._reserved = 0
        self._stopping = False
        self._room = asyncio.Event()

    @property
    def worker_id(self) -> str:
        """Dramatiq's worker id of this consumer's deliveries: the executor worker's id."""
        return self.runtime.executor_id

    async def run(self) -> None:
        """Consume until cancelled; Redis going away only pauses it."""
        try:
            while True:
                try:
                    await self._consume()
                except (RedisError, OSError) as exc:
                    log.warning("consumer lost redis; retrying", error=str(exc))
                    await asyncio.sleep(RECONNECT_SECONDS)
        finally:
            self._stopping = True  # finish batches take no more messages

    def _free(self) -> int:
        return self.runtime.slots - len(self._running) - self._reserved

    async def _consume(self) -> None:
        store = self.runtime.store
        #: The last take found the queues empty: the next one waits for a wake first.
        idle = False
        while True:
            free = self._free()
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                idle = False  # messages may have come while every slot was busy
                continue
            self._reserved += free
            try:
                if idle:
                    # Blocks on the wake lists, then takes, in one round trip; the slots
                    # stay reserved meanwhile (finish batches take only for those they free).
                    taken = await store.take_when_woken(self._wake, self._wake_keys, IDLE_BLOCK_SECONDS, free,
                                                        self.worker_id, self.runtime.stall_ms, self.queues)
                else:
                    taken = await store.take(free, self.worker_id, self.runtime.stall_ms, self.queues)
            finally:
                self._reserved -= free
            self._start(taken)
            # Fewer popped than asked: the queues were empty then, and any message
            # handed over since pushed a wake token (another take now would find nothing).
            idle = taken.popped < free

    def _start(self, taken: Taken) -> None:
        for message in taken.messages:
            task = asyncio.create_task(self._process(message), name=f"message {message.message_id}")
            self._running.add(task)
            task.add_done_callback(self._done)

    # The Taker of the runtime's finish batcher (executor/finish_batcher.py): a batch of
    # finishes takes the messages for the slots it frees, in the same script.

    def reserve(self, finishing: int) -> tuple[int, str, int, list[str]]:
        """The slots a batch ending `finishing` of this worker's attempts may fill: those
        it frees and those free now, less what other takes in flight hold."""
        count = 0 if self._stopping else max(0, self._free() + finishing)
        self._reserved += count
        return count, self.worker_id, self.runtime.stall_ms, self.queues

    def taken(self, reserved: int, taken: Taken) -> None:
        self._reserved -= reserved
        self._start(taken)
        self._room.set()

    def released(self, reserved: int) -> None:
        self._reserved -= reserved
        self._room.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._room.set()

    async def _process(self, taken: TakenMessage) -> None:
        """Run one message's actor; acknowledge its delivery unless its job's finish
        did. A failing actor is logged and acknowledged: the store, not redelivery,
        recovers its job (the job's stall deadline passes).

        A hand-over whose job the take claimed is run_job(job id, attempt) by
        construction (admission writes it so, and its id names the job and attempt):
        it goes to the runtime as it is, without decoding the message."""
        message_id = taken.message_id
        claim = taken.claim
        if claim is not None:
            try:
                await self.runtime.run_taken(claim)
            except asyncio.CancelledError:
                raise  # the worker is stopping: the delivery stays outstanding
            except Exception:
                log.exception("actor failed", actor=RUN_JOB_ACTOR, message_id=message_id)
        else:
            try:
                message = Message.decode(taken.data)
                actor = self.actors[message.actor_name]
            except Exception:
                log.exception("message dropped: not a message of an actor of this queue", message_id=message_id)
            else:
                try:
                    await actor(*message.args, **message.kwargs)
                except asyncio.CancelledError:
                    raise  # the worker is stopping: the delivery stays outstanding
                except Exception:
                    log.exception("actor failed", actor=message.actor_name, message_id=message_id)
        acked = self.runtime.acked_by_store
        if message_id in acked:
            acked.discard(message_id)
            return
        try:
            await self.runtime.store.ack(self.worker_id, message_id, taken.queue)
        except (RedisError, OSError) as exc:
            # Outstanding until this worker is gone; then handed back and refused as stale.
            log.warning("ack failed", message_id=message_id, error=str(exc))

    async def drain(self, grace_seconds: float) -> None:
        """After the consumer is cancelled: let running messages finish for up to
        `grace_seconds`, then cancel the rest (their jobs are recovered by the store)."""
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
