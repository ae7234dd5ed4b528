"""Dramatiq as Conveyor's transport: admission hands jobs over as messages that
carry only (job id, attempt); the executor's actor loads the job from the store.
The store's Lua scripts write those messages straight into this broker's queue, in
the same atomic step as the admission decision (admit() in store/lua/_lib.lua).

Dramatiq's Redis consumer polls an idle queue with a growing sleep (up to the
worker timeout, a second by default). Here an idle consumer instead blocks on a
per-queue *wake list* (BLPOP), and the handoff pushes to it after enqueueing, so an
idle executor picks a job up within milliseconds without busy polling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from conveyor.settings import Settings
from conveyor.store.records import StorePolicy

#: The one Dramatiq queue every Conveyor job travels on. Conveyor's own queues,
#: priorities and limits are decided by admission in the store, not here.
TRANSPORT_QUEUE = "conveyor-jobs"
RUN_JOB_ACTOR = "run_job"
#: Longest an idle consumer blocks before re-checking (shutdown, missed wakes).
IDLE_BLOCK_SECONDS = 1.0

#: take(count, worker id) -> the data of up to `count` messages taken off a queue for
#: that Dramatiq worker (see WakeableRedisBroker.takers).
TakeMessages = Callable[[int, str], list[bytes]]


def wake_key(namespace: str, queue_name: str) -> str:
    """The list idle consumers block on; admit() in store/lua/_lib.lua pushes to it."""
    return f"{namespace}:{queue_name}.wake"


class WakeableRedisBroker(RedisBroker):
    """A RedisBroker whose idle consumers sleep on a wake list instead of polling.

    Dramatiq's own recovery of a dead worker's unacked messages is tuned down from
    60 s to `heartbeat_timeout` (Conveyor also recovers stalled jobs in its store).

    The executor may replace the consumer's fetch of a queue with a taker of its own
    (`takers`, by queue name: it claims the jobs in the same script), and acknowledge
    deliveries itself when it finishes their jobs: their Redis message ids go in
    `acked_by_store`, and the consumer's own ack of those has nothing left to do.
    """

    def __init__(self, *, url: str, heartbeat_timeout_ms: int = 15_000, **kwargs: Any) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            url=url,
            heartbeat_timeout=heartbeat_timeout_ms,
            # Maintenance (requeueing dead workers' messages) runs on ~1% of commands.
            maintenance_chance=10_000,
            **kwargs,
        )
        self.takers: dict[str, TakeMessages] = {}
        self.acked_by_store: set[str] = set()

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakeableConsumer


class _WakeableConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer without idle polling: with room for work and nothing
    to fetch it blocks on the wake list (BLPOP); full (every prefetched message still
    running) it waits for an ack to free room, instead of Dramatiq's growing sleep
    (which, under load, left slots idle for up to the worker timeout).

    With a taker (the executor's queue) the store takes and acknowledges messages, so
    Dramatiq's own script, which beats the worker's heartbeat and now and then hands
    dead workers' messages back, does not run here; the consumer of the queue's delay
    queue (every Dramatiq worker has one) runs it about once a second instead."""

    def __init__(self, broker: WakeableRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._wake_key = wake_key(broker.namespace, queue_name)
        # A connection of its own, so blocking never holds one of the broker's.
        pool = broker.client.connection_pool
        self._wake_client = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=1, **pool.connection_kwargs
            )
        )
        self._room = threading.Event()

    def ack(self, message: Any) -> None:
        redis_id = message.options.get("redis_message_id")
        try:
            if redis_id in self.broker.acked_by_store:
                self.broker.acked_by_store.discard(redis_id)
                self.queued_message_ids.discard(message.message_id)
            else:
                super().ack(message)  # type: ignore[no-untyped-call]
        finally:
            self._room.set()

    def nack(self, message: Any) -> None:
        try:
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self._room.set()

    def __next__(self) -> Any:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                if self.outstanding_message_count >= self.prefetch:
                    self._room.clear()
                    if self.outstanding_message_count >= self.prefetch:
                        self._room.wait(IDLE_BLOCK_SECONDS)
                    return None
                take = self.broker.takers.get(self.queue_name)
                room = self.prefetch - self.outstanding_message_count
                if take is not None:
                    self.message_cache = take(room, self.broker.broker_id)
                else:
                    self.message_cache = self.broker.do_fetch(self.queue_name, room)
                if self.message_cache:
                    continue
                self._wake_client.blpop([self._wake_key], timeout=IDLE_BLOCK_SECONDS)
                return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        try:
            self._wake_client.close()
        finally:
            super().close()


def make_broker(url: str, key_prefix: str, *, middleware: list[Any] | None = None) -> WakeableRedisBroker:
    """The broker both services use. Its keys live beside the store's (one Redis can
    hold several Conveyor deployments, each with its own prefix). Middleware is the
    executor's choice: none of Dramatiq's defaults, since retries and time limits
    are Conveyor's own."""
    return WakeableRedisBroker(url=url, namespace=transport_namespace(key_prefix), middleware=middleware or [])


def transport_namespace(key_prefix: str) -> str:
    return f"{key_prefix}:dramatiq"


def store_policy(settings: Settings) -> StorePolicy:
    """What the store needs to hand jobs over to this transport, and its retention."""
    return StorePolicy(
        transport_namespace=transport_namespace(settings.key_prefix),
        transport_queue=TRANSPORT_QUEUE,
        actor_name=RUN_JOB_ACTOR,
        default_concurrency=settings.queue_concurrency,
        handover_timeout_ms=int(settings.handover_timeout_seconds * 1000),
        keep_completed=settings.keep_completed,
        keep_failed=settings.keep_failed,
        max_age_ms=int(settings.keep_max_age_seconds * 1000),
    )
