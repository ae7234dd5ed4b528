"""The plain-Dramatiq side of the benchmarks: a default RedisBroker (Dramatiq's own
defaults, middleware included) and a no-op actor that counts its runs in Redis."""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

COUNTER_KEY = "bench-plain:done"

broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ["BENCH_REDIS_URL"], namespace=os.environ.get("BENCH_NAMESPACE", "bench-plain"),
)
dramatiq.set_broker(broker)
_counter = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


@dramatiq.actor(queue_name="bench-plain", max_retries=0)
def noop() -> None:
    _counter.incr(COUNTER_KEY)
