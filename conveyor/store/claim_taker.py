"""The executor's consumer side of the store: take handed-over messages off the
transport queue and claim their jobs in one script (take.lua). Synchronous, since it
runs on Dramatiq's consumer thread, before a worker thread gets the message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from conveyor.store.records import Claim, Delivery, StorePolicy
from conveyor.store.scripts import script_source

#: Entries per message in take.lua's reply.
_STRIDE = 8


@dataclass(frozen=True)
class Taken:
    """A message taken off the queue: its data, and the claim of its job (None for a
    message that is not a hand-over; the actor then claims it itself)."""

    data: bytes
    claim: Claim | None


class ClaimTaker:
    def __init__(self, client: redis.Redis, prefix: str, policy: StorePolicy) -> None:
        self.prefix = prefix
        self.policy = policy
        self._take: Any = client.register_script(script_source("take"))

    def take(self, count: int, worker_id: str, executor_id: str, stall_timeout_ms: int) -> list[Taken]:
        """Up to `count` messages, their jobs claimed by `executor_id`. Stale and
        duplicate deliveries are acknowledged in the script and left out."""
        flat = self._take(args=[self.prefix, count, worker_id, executor_id, stall_timeout_ms, *self.policy.args()])
        out: list[Taken] = []
        for i in range(0, len(flat), _STRIDE):
            data, message_id, ok = flat[i], flat[i + 1].decode(), int(flat[i + 2])
            claim = None
            if ok == 1:
                job_id, attempt, _ = message_id.rsplit("-", 2)
                claim = Claim.from_reply(
                    job_id, int(attempt), flat[i + 2:i + _STRIDE], Delivery(worker_id, message_id)
                )
            out.append(Taken(data, claim))
        return out
