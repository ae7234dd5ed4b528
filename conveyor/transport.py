"""Dramatiq as Conveyor's transport: admission hands jobs over as messages of the
`run_job` actor that carry only (job id, attempt); the executor's actor loads the job
from the store. The store's Lua scripts write those messages straight into this
broker's queue (Dramatiq's Redis layout), in the same atomic step as the admission
decision (admit() in store/lua/includes/admission.lua), and push a token to the queue's *wake list*
so that an idle executor, blocked on it, takes the job within milliseconds instead of
polling.

The executor consumes the queue on its event loop (executor/consumer.py): it takes
messages and claims their jobs in one script (take.lua), and the store acknowledges a
delivery as it finishes its job (finish.lua), both in Dramatiq's layout (ack sets per
worker, the worker heartbeat) so that Dramatiq's own tools and maintenance agree.
"""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from conveyor.redis_connection import connect_sync
from conveyor.settings import Settings
from conveyor.store.records import StorePolicy

#: The one Dramatiq queue every Conveyor job travels on. Conveyor's own queues,
#: priorities and limits are decided by admission in the store, not here.
TRANSPORT_QUEUE = "conveyor-jobs"
RUN_JOB_ACTOR = "run_job"
#: A worker whose Dramatiq heartbeat is older than this is dead, and its outstanding
#: deliveries go back to the queue (Dramatiq's default is 60 s; executors beat every
#: second; reap.lua in the store does the hand-back).
WORKER_TIMEOUT_MS = 15_000


def kind_queue(kind: str) -> str:
    """The Dramatiq queue that jobs of `kind` travel on, taken from by the executors
    that serve it (lua: kind_queue() in store/lua/includes/admission.lua)."""
    return f"{TRANSPORT_QUEUE}.{kind}"


def wake_key(namespace: str, queue_name: str) -> str:
    """The list idle consumers block on; admit() in store/lua/includes/admission.lua pushes to it."""
    return f"{namespace}:{queue_name}.wake"


def make_broker(url: str, key_prefix: str) -> RedisBroker:
    """The executor's broker: where its actor is declared (and whence anyone may send
    it a message with Dramatiq's own API). Its keys live beside the store's (one Redis
    can hold several Conveyor deployments, each with its own prefix). No middleware:
    retries, time limits and the rest are Conveyor's own."""
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=connect_sync(url, client_name="conveyor-executor-broker"), namespace=transport_namespace(key_prefix),
        middleware=[], heartbeat_timeout=WORKER_TIMEOUT_MS,
    )


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
        worker_timeout_ms=WORKER_TIMEOUT_MS,
        tenant_max_running=settings.tenant_max_running_jobs,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=max(1, int(settings.redis_wait_timeout_seconds * 1000)),
    )
