"""A Redis primary, its replicas and the sentinels that watch them, as real processes
on loopback (Debian's redis-server and redis-sentinel), started by the test run and
stopped by pid. Sentinel's timings are cut down (down-after 1 s, failover timeout
3 s) so that a failover completes in a few seconds."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.processes import Process, free_port, spawn, wait_for

SERVICE = "conveyor"
#: A primary no sentinel has heard from this long is subjectively down.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _ping(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


@dataclass
class SentinelGroup:
    """`servers[port]` the Redis servers (the first one started as primary), and the
    sentinels that monitor them as `SERVICE` with a quorum of a majority."""

    dir: Path
    servers: dict[int, Process] = field(default_factory=dict)
    sentinels: dict[int, Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def primary_port(self) -> int:
        """The primary's port as the sentinels answer it (the first that answers)."""
        for port in self.sentinels:
            try:
                with redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1) as s:
                    _, primary_port = s.sentinel_get_master_addr_by_name(SERVICE)
                    return int(primary_port)
            except (redis.RedisError, TypeError):
                continue
        raise RuntimeError("no sentinel answers")

    def role(self, port: int) -> str:
        with redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True) as r:
            return str(r.role()[0])

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2)

    def stop(self) -> None:
        for p in [*self.sentinels.values(), *self.servers.values()]:
            p.stop(5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} {p.pid}\n{p.log()[-3000:]}"
                         for p in [*self.servers.values(), *self.sentinels.values()])


def start_server(group: SentinelGroup, replica_of: int | None, port: int | None = None) -> int:
    """A redis-server on a free port (or on `port` again, for a server that died: it
    comes back empty, as a primary, until the sentinels make it a replica)."""
    port = port or free_port()
    data = group.dir / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(data), "--maxclients", "2000", "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0"]
    if replica_of is not None:
        argv += ["--replicaof", "127.0.0.1", str(replica_of)]
    group.servers[port] = spawn(f"redis-{port}", argv, dict(os.environ), group.dir)
    wait_for(lambda: _ping(port), 10, f"redis-server on {port}")
    return port


def start_sentinel_group(tmp: Path, *, replicas: int = 2, sentinels: int = 3) -> SentinelGroup:
    """A primary with `replicas` replicas (in sync before this returns) and `sentinels`
    sentinels that all see the primary, its replicas and each other."""
    sentinel_bin = shutil.which("redis-sentinel")
    assert sentinel_bin, "redis-sentinel is not installed (.ci/setup.sh installs Debian's redis-sentinel)"
    group = SentinelGroup(tmp)
    try:
        primary = start_server(group, None)
        for _ in range(replicas):
            start_server(group, primary)

        def replicas_online() -> bool:
            with group.client(primary) as r:
                info = r.info("replication")
                return int(info.get("connected_slaves", 0)) == replicas and all(
                    info[f"slave{i}"]["state"] == "online" for i in range(replicas))

        wait_for(replicas_online, 20, f"{replicas} replicas in sync")
        quorum = sentinels // 2 + 1
        for _ in range(sentinels):
            port = free_port()
            conf = tmp / f"sentinel-{port}.conf"  # a sentinel rewrites its file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} {quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} {replicas}\n"
            )
            group.sentinels[port] = spawn(f"sentinel-{port}", [sentinel_bin, str(conf)], dict(os.environ), tmp)

        def all_seen() -> bool:
            for port in group.sentinels:
                try:
                    with redis.Redis(port=port, socket_timeout=1) as s:
                        state = s.sentinel_master(SERVICE)
                except redis.RedisError:
                    return False
                if int(state["num-slaves"]) < replicas or int(state["num-other-sentinels"]) < sentinels - 1:
                    return False
            return True

        wait_for(all_seen, 30, "sentinels to see the replicas and each other", interval=0.2)
    except BaseException:
        group.stop()
        raise
    return group


def wait_for_failover(group: SentinelGroup, old_primary: int, timeout: float = 30) -> int:
    """After the primary died: the port of the replica the sentinels promoted, once it
    takes writes and has a replica of its own in sync again."""
    started = time.monotonic()

    def promoted() -> bool:
        try:
            port = group.primary_port()
        except RuntimeError:
            return False
        return port != old_primary and group.role(port) == "master"

    wait_for(promoted, timeout, "a replica promoted by the sentinels", interval=0.1)
    new = group.primary_port()

    wait_for(lambda: replicas_in_sync(group, new) > 0, max(5.0, timeout - (time.monotonic() - started)),
             "the new primary's replica in sync")
    return new


def replicas_in_sync(group: SentinelGroup, primary: int) -> int:
    """How many replicas of `primary` are online."""
    with group.client(primary) as r:
        info = r.info("replication")
    return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
               and v.get("state") == "online")
