"""Key names, for the Python side (the Lua side builds the same in lua/includes/base.lua;
tests/test_store_scripts.py checks that they agree)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def job_events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def queue(self, queue: str) -> str:
        return f"{self.prefix}:q:{queue}"

    def queue_index(self, queue: str, name: str) -> str:
        return f"{self.prefix}:q:{queue}:{name}"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    def queue_events(self, queue: str) -> str:
        """A queue's event stream, entry ids 0-<queue sequence> (lua: k_index(q, 'events'))."""
        return self.queue_index(queue, "events")

    def hub_wake(self, hub_id: str) -> str:
        """A stream that one gateway's event hub reads along with the queues' streams:
        an entry wakes its blocked read (to start reading a newly watched queue)."""
        return f"{self.prefix}:hub:{hub_id}:wake"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    @property
    def executors(self) -> str:
        return f"{self.prefix}:executors"

    @property
    def capacity(self) -> str:
        """The live executors' slots, summed (lua: K_CAPACITY)."""
        return f"{self.prefix}:capacity"

    def executor(self, executor_id: str) -> str:
        return f"{self.prefix}:executor:{executor_id}"

    @property
    def deleted(self) -> str:
        """Ids of deleted jobs whose artifacts are still to be removed (lua: P .. ':gc')."""
        return f"{self.prefix}:gc"

    @property
    def kinds(self) -> str:
        """The kinds executors published: name -> KindSpec JSON (lua: K_KINDS)."""
        return f"{self.prefix}:kinds"

    @property
    def kind_capacity(self) -> str:
        """Per kind, the slots of the live executors serving it (lua: K_KIND_CAPACITY)."""
        return f"{self.prefix}:capacity:kinds"

    @property
    def kind_inflight(self) -> str:
        """Per kind, its jobs handed over or running (lua: K_KIND_INFLIGHT)."""
        return f"{self.prefix}:inflight:kinds"

    @property
    def tenant_inflight(self) -> str:
        """Per tenant ('<tenant>') and per tenant in a queue ('<queue> <tenant>'), its jobs
        handed over or running (lua: K_TENANT_INFLIGHT)."""
        return f"{self.prefix}:inflight:tenants"

    def queue_tenant(self, queue: str, tenant: str) -> str:
        """A tenant's share of a queue: its counts per state, its paused and concurrency
        (lua: k_queue_tenant)."""
        return f"{self.prefix}:q:{queue}:t:{tenant}"

    def tenant_line(self, queue: str, tenant: str) -> str:
        """A tenant's waiting jobs in a queue, by place (lua: k_tenant_line)."""
        return f"{self.prefix}:q:{queue}:line:{tenant}"

    def owner_label(self, owner: str, key: str, value: str) -> str:
        """A tenant's jobs with one label, by creation time (lua: k_owner_label)."""
        return f"{self.prefix}:owner:{owner}:label:{len(key.encode())}:{key}={value}"

    def owner_jobs(self, owner: str) -> str:
        """A tenant's jobs, by creation time (lua: k_owner_jobs)."""
        return f"{self.prefix}:owner:{owner}:jobs"

    def api_key(self, key_id: str) -> str:
        """An API key's record (lua: k_api_key)."""
        return f"{self.prefix}:apikey:{key_id}"

    def api_key_hash(self, secret_hash: str) -> str:
        """A secret's hash -> its key id, while the key is not revoked (lua: k_api_key_hash)."""
        return f"{self.prefix}:apikey-hash:{secret_hash}"

    @property
    def api_keys(self) -> str:
        """Every key's id, by creation time (lua: K_API_KEYS)."""
        return f"{self.prefix}:apikeys"

    @property
    def cancel_channel(self) -> str:
        return f"{self.prefix}:cancel"
