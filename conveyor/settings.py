"""Settings from the environment, each with a default that works on one machine.

The seeds' names (REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, QUEUE_CONCURRENCY,
MAX_CONCURRENT_BROWSERS) stay valid as aliases of the CONVEYOR_ ones.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.artifact_stores.base import S3Location
from conveyor.event_loop import EventLoop
from conveyor.redis_url import check_url as check_redis_url
from conveyor.redis_url import uses_tls as redis_uses_tls

#: The largest fair-share weight of a tenant (the store's FAIR_STEP, lua/includes/line.lua,
#: is divided exactly by every weight up to it).
MAX_TENANT_WEIGHT = 10


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(f"CONVEYOR_{name}", *aliases)


# --- defaults that fit the host ----------------------------------------------------------
# Measured with bench/browser.py on a 2-core host: browser jobs through the system ran
# at 1.54 jobs/s with 1 slot, 1.11 with 2 and 1.42 with 4 (Chromium is CPU-bound: a
# second job at once per core pair bought nothing); a job's context and page cost
# ~40 MiB PSS (trivial page) on top of ~770 MiB for the idle executor tree.
#: Cores one browser job at a time keeps busy (renderer + browser + driver).
CORES_PER_BROWSER_JOB = 2
#: Memory reserved per browser job: the measured ~40 MiB of a trivial page, with
#: room for real pages (scripts, images), which are several times heavier.
BROWSER_JOB_MIB = 150
#: The executor tree and one browser before any job (measured ~770 MiB with two).
BROWSER_BASE_MIB = 500
#: Light jobs (noop, plain Python handlers waiting on I/O) per core: the event loop
#: runs many at once for next to no CPU.
LIGHT_SLOTS_PER_CORE = 2
MIN_EXECUTOR_SLOTS = 4


def host_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory_mib() -> int | None:
    """MemAvailable from /proc/meminfo, in MiB (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_browser_slots(
    cores: int | None = None, memory_mib: int | None = None, processes: int = 1
) -> int:
    """Browser jobs one worker process runs at once by default: one per
    CORES_PER_BROWSER_JOB cores, no more than half the available memory holds
    (BROWSER_JOB_MIB each after BROWSER_BASE_MIB), shared among the executor's
    worker processes; at least 1."""
    cores = host_cores() if cores is None else cores
    memory_mib = available_memory_mib() if memory_mib is None else memory_mib
    by_cpu = max(1, cores // CORES_PER_BROWSER_JOB)
    slots = by_cpu
    if memory_mib is not None:
        by_memory = max(1, (memory_mib // 2 - BROWSER_BASE_MIB) // BROWSER_JOB_MIB)
        slots = min(slots, by_memory)
    return max(1, slots // max(1, processes))


def default_executor_slots(cores: int | None = None, browser_slots: int | None = None) -> int:
    """Jobs of any kind one worker process runs at once by default: enough that
    light jobs are not held up behind browser jobs (LIGHT_SLOTS_PER_CORE per core,
    at least MIN_EXECUTOR_SLOTS), and never fewer than its browser slots."""
    cores = host_cores() if cores is None else cores
    browser = default_browser_slots(cores) if browser_slots is None else browser_slots
    return max(MIN_EXECUTOR_SLOTS, LIGHT_SLOTS_PER_CORE * cores, browser)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    # --- Redis -------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="redis://, rediss:// or unix:// URL, or a primary found through Sentinel: "
        "redis+sentinel://host:26379,host:26380/<service>[/db] (rediss+sentinel:// for TLS; see "
        "conveyor/redis_connection.py). Unset: `conveyor up` starts its own redis-server; "
        "the services use REDIS_HOST/REDIS_PORT (default 127.0.0.1:6379).",
    )
    redis_wait_replicas: int = Field(
        default=0, ge=0,
        description="Replicas that must have a submitted job before SubmitJob/SubmitJobs answer (Redis WAIT); "
        "0: answered once the primary has it (asynchronous replication: a failover may lose it).",
    )
    redis_wait_timeout_seconds: float = Field(
        default=1.0, gt=0,
        description="How long a submit waits for CONVEYOR_REDIS_WAIT_REPLICAS replicas; past it the submit "
        "is answered UNAVAILABLE (reason NOT_REPLICATED): the job is on the primary, unconfirmed.",
    )
    redis_host: str = Field(default="127.0.0.1", validation_alias=_env("REDIS_HOST", "REDIS_HOST"))
    redis_port: int = Field(default=6379, validation_alias=_env("REDIS_PORT", "REDIS_PORT"))
    redis_password: str | None = Field(
        default=None, validation_alias=_env("REDIS_PASSWORD", "REDIS_PASSWORD")
    )
    key_prefix: str = Field(default="cv", description="Prefix of every Conveyor key in Redis.")

    # --- gateway -----------------------------------------------------------------
    grpc_addr: str = "127.0.0.1:50051"
    auth: Literal["on", "off"] = Field(
        default="on",
        description="on: every Conveyor RPC needs an API key (`authorization: Bearer <key>`); off: every caller "
        "is the default tenant's admin (refused beyond loopback unless `insecure`).",
    )
    admin_key: str = Field(
        default="", description="The bootstrap admin key (of the default tenant); `conveyor up` makes one."
    )
    insecure: bool = Field(
        default=False, description="Let a gateway bound beyond loopback serve without auth (say it on purpose)."
    )
    watch_heartbeat_seconds: float = 10.0
    grpc_keepalive_seconds: float = Field(
        default=60.0, ge=1.0, le=7200.0,
        description="The gateway pings each client connection after this much quiet and drops it when the "
        "ping goes unanswered (within the same time, at most 20 s): the streams of a client whose path went "
        "silent (a host gone, a NAT entry dropped) end instead of holding their subscriptions for good.",
    )
    max_request_bytes: int = 8 * 1024 * 1024
    shutdown_grace_seconds: float = 5.0
    gateway_processes: int = Field(
        default=1, ge=1, le=64,
        description="Serving processes of one gateway, all on CONVEYOR_GRPC_ADDR (SO_REUSEPORT; a fixed port), "
        "started, restarted and stopped by the first: more cores for many watchers and calls. Each has its "
        "own event reader; only process 0 serves the dashboard; metrics: process i on the metrics port + i.",
    )

    # --- web dashboard (gateway/dashboard) ---------------------------------------------
    dashboard_addr: str = Field(
        default="127.0.0.1:8090",
        description="host:port of the gateway's web dashboard (port 0: any free port; `off`: none). Beyond "
        "loopback only when set so, and never with CONVEYOR_AUTH=off. A port already taken is logged and skipped.",
    )

    # --- TLS -----------------------------------------------------------------------
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) the gateway serves TLS with, with CONVEYOR_TLS_KEY_FILE. "
        "Unset: plaintext gRPC.",
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of CONVEYOR_TLS_CERT_FILE.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle; set, the gateway requires a client certificate signed by it (mTLS).",
    )
    redis_username: str | None = Field(
        default=None,
        validation_alias=_env("REDIS_USERNAME", "REDIS_USERNAME"),
        description="Redis ACL user, with REDIS_PASSWORD, when the URL is built from REDIS_HOST/REDIS_PORT "
        "(a CONVEYOR_REDIS_URL names its own: rediss://user:password@host:port/0).",
    )
    redis_tls: bool = Field(
        default=False,
        description="TLS to Redis (rediss://) when the URL is built from REDIS_HOST/REDIS_PORT; "
        "implied by any CONVEYOR_REDIS_TLS_* file.",
    )
    redis_tls_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle that Redis's certificate must be signed by (default: the system's)."
    )
    redis_tls_cert_file: Path | None = Field(
        default=None, description="PEM client certificate for a Redis that wants one (tls-auth-clients)."
    )
    redis_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of CONVEYOR_REDIS_TLS_CERT_FILE."
    )

    # --- admission ---------------------------------------------------------------
    queue_concurrency: int = Field(
        default=16,
        validation_alias=_env("QUEUE_CONCURRENCY", "QUEUE_CONCURRENCY"),
        description="Default limit of jobs of one queue running at once.",
    )
    handover_timeout_seconds: float = Field(
        default=10.0, description="A job handed to the executors but not claimed by then is handed over again."
    )
    stall_timeout_seconds: float = Field(
        default=10.0, description="An active job whose executor stops heart-beating for this long is recovered."
    )
    executor_ttl_seconds: float = Field(
        default=6.0, description="An executor silent for this long no longer counts its slots."
    )

    # --- executor ----------------------------------------------------------------
    executor_processes: int = Field(default=1, description="Worker processes per executor.")
    browser_slots: int = Field(
        default_factory=lambda data: default_browser_slots(processes=data.get("executor_processes") or 1),
        description="Browser jobs one worker process runs at once (more wait for a page "
        "in the pool). Default: from the host's cores and memory (see default_browser_slots).",
    )
    executor_slots: int = Field(
        default_factory=lambda data: default_executor_slots(browser_slots=data.get("browser_slots")),
        description="Jobs (of any kind) one worker process runs at once; what it registers "
        "with admission. Default: from the host (see default_executor_slots).",
    )
    max_concurrent_browsers: int = Field(
        default=2, validation_alias=_env("MAX_CONCURRENT_BROWSERS", "MAX_CONCURRENT_BROWSERS")
    )
    kinds: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Modules of job kinds to load besides the built-ins and the `conveyor.kinds` entry points "
        "(comma-separated, e.g. mypkg.jobs).",
    )
    executor_kinds: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The kinds this executor serves (comma-separated names); empty: every kind it loaded.",
    )
    chromium_path: str = "/usr/bin/chromium"
    browser_scratch_dir: Path | None = Field(
        default=None,
        description="Where browsers' TMPDIRs (`cvb-*`) go; short paths (unix sockets). Default: /tmp.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts the URL policy lets through although they are loopback/private.",
    )
    browser_launch_timeout_seconds: float = 30.0
    contexts_per_browser: int = Field(default=4, description="Contexts open at once in one browser.")
    browser_recycle_after: int = Field(default=200, description="Contexts before a browser is relaunched.")
    prewarm_pages: bool = Field(
        default=True, description="Keep one fresh context and page open per browser, ready for the next job."
    )
    browser_new_page_timeout_seconds: float = Field(
        default=15.0, description="Opening a job's context and page may take this long."
    )
    browser_close_timeout_seconds: float = Field(
        default=10.0, description="A browser that does not close by then is killed by pid."
    )

    # --- jobs --------------------------------------------------------------------
    default_max_attempts: int = 3
    tenant_max_open_jobs: int = Field(
        default=0, ge=0, description="The most open (waiting, delayed, running) jobs one tenant may have; 0: no limit."
    )
    tenant_max_submits_per_second: int = Field(
        default=0, ge=0, description="The most jobs one tenant may submit in a second; 0: no limit."
    )
    tenant_max_running_jobs: int = Field(
        default=0, ge=0,
        description="The most jobs one tenant may have handed over or running at once, over every queue; "
        "0: no limit (its other jobs wait in line, in their places, and other tenants' go first).",
    )
    tenant_weights: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="Fair-share weights within a priority, `tenant=weight,...` (1 to "
        f"{MAX_TENANT_WEIGHT}; 1 for a tenant not named): a tenant of weight 2 gets two turns to another's one.",
    )
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    default_job_timeout_seconds: float = 300.0
    max_job_timeout_seconds: float = 3600.0
    default_step_timeout_seconds: float = 10.0
    max_steps: int = 200
    max_file_bytes: int = 5 * 1024 * 1024
    max_artifact_bytes: int = 50 * 1024 * 1024

    # --- history ---------------------------------------------------------------------
    keep_completed: int = Field(default=100, description="Completed jobs kept per queue.")
    keep_failed: int = Field(default=200, description="Failed (and cancelled) jobs kept per queue.")
    keep_max_age_seconds: float = Field(default=7 * 24 * 3600, description="Finished jobs kept at most this long.")

    # --- metrics, health endpoints and queue health (issue 14) -----------------------
    gateway_metrics_addr: str = Field(
        default="",
        description="host:port of the gateway's Prometheus /metrics (HTTP); empty: off. A bare port (`9464`, "
        "`:9464`) is loopback; bind beyond it only by naming the address (`0.0.0.0:9464`).",
    )
    executor_metrics_addr: str = Field(
        default="",
        description="host:port of the executor's /metrics, /healthz and /readyz (HTTP, served by its "
        "supervisor for all its worker processes); empty: off. Bare port: loopback, as for the gateway.",
    )
    metrics_cache_seconds: float = Field(
        default=2.0, ge=0, description="The store's queue figures on /metrics are read at most this often."
    )
    queue_health_failure_rate: float = Field(
        default=0.1, ge=0, le=1, description="A queue whose jobs failed this often over the last hour is DEGRADED."
    )
    queue_health_failure_rate_unhealthy: float = Field(
        default=0.5, ge=0, le=1, description="... and UNHEALTHY from this failure rate."
    )
    queue_health_min_jobs: int = Field(
        default=10, ge=1, description="Failure rates count once this many jobs ended in the last hour."
    )
    queue_health_stall_seconds: float = Field(
        default=300.0, gt=0, description="A job near the head of an unpaused line waiting longer is STALLED."
    )
    queue_health_backlog_jobs: int = Field(
        default=100, ge=0, description="A growing backlog is an issue from this many waiting jobs."
    )

    # --- traces (OpenTelemetry, issue 14; conveyor/tracing.py) ------------------------
    tracing: Literal["on", "off"] = Field(
        default="off",
        description="on: the gateway and the executor record spans (submit, queue wait, each attempt, each browser "
        "step) and export them by OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (the standard OTEL_* variables apply; "
        "default http://localhost:4318); off: no spans, a client's traceparent is only kept with its job.",
    )

    # --- files and logs ------------------------------------------------------------
    data_dir: Path = Path(".conveyor")
    artifact_dir: Path | None = None
    # --- artifacts in S3 (conveyor/artifact_stores/s3.py; credentials: the standard AWS chain) ---
    artifacts_url: str = Field(
        default="",
        description="s3://bucket/prefix: artifacts in that S3-compatible bucket (it must exist), written by "
        "executors on any host and streamed by any gateway; empty: files under CONVEYOR_ARTIFACT_DIR.",
    )
    artifacts_s3_endpoint_url: str = Field(
        default="", description="The S3 endpoint (MinIO, Ceph, ...); empty: AWS's, or AWS_ENDPOINT_URL_S3."
    )
    artifacts_s3_region: str = Field(default="", description="The bucket's region; empty: AWS_REGION or ~/.aws.")
    artifacts_s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", description="Bucket in the path (`path`, what most self-hosted stores want) or host name."
    )
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    event_loop: EventLoop = Field(
        default="uvloop",
        description="The services' event loop: uvloop (libuv; a gateway call and an executor job cost less "
        "CPU on it, see bench/peers.py) or asyncio's own.",
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("tenant_weights", mode="before")
    @classmethod
    def _parse_weights(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("CONVEYOR_TENANT_WEIGHTS is `tenant=weight,...`")
            value = {name.strip(): weight.strip() for name, weight in pairs}
        return value

    @field_validator("tenant_weights")
    @classmethod
    def _check_weights(cls, value: dict[str, int]) -> dict[str, int]:
        for tenant, weight in value.items():
            if not 1 <= weight <= MAX_TENANT_WEIGHT:
                raise ValueError(f"tenant {tenant!r}: a weight is 1 to {MAX_TENANT_WEIGHT}, not {weight}")
        return value

    @field_validator("kinds", "executor_kinds", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _check_artifacts_url(cls, value: str) -> str:
        value = value.strip()
        if value:
            S3Location.parse(value)  # CONVEYOR_ARTIFACTS_URL: s3://bucket[/prefix], or empty
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("CONVEYOR_TLS_CERT_FILE and CONVEYOR_TLS_KEY_FILE go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("CONVEYOR_TLS_CLIENT_CA_FILE (mTLS) needs CONVEYOR_TLS_CERT_FILE and _KEY_FILE")
        if (self.redis_tls_cert_file is None) != (self.redis_tls_key_file is None):
            raise ValueError("CONVEYOR_REDIS_TLS_CERT_FILE and CONVEYOR_REDIS_TLS_KEY_FILE go together")
        if self.redis_url:
            check_redis_url(self.redis_url)
        if self.redis_url and self._redis_tls_files() and not redis_uses_tls(self.redis_url):
            raise ValueError("CONVEYOR_REDIS_TLS_* files are set but CONVEYOR_REDIS_URL is not rediss:// "
                             "(or rediss+sentinel://)")
        return self

    def _redis_tls_files(self) -> dict[str, str]:
        """redis-py's TLS arguments (query arguments of a rediss:// URL) from the settings."""
        files = {
            "ssl_ca_certs": self.redis_tls_ca_file,
            "ssl_certfile": self.redis_tls_cert_file,
            "ssl_keyfile": self.redis_tls_key_file,
        }
        return {name: str(path) for name, path in files.items() if path is not None}

    @cached_property
    def effective_redis_url(self) -> str:
        """The URL the services connect to. It carries everything a client needs, so
        that every Redis client made from it (the store's, the wake list's, Dramatiq's
        broker) agrees: the ACL user and password, and for rediss:// the TLS files
        as query arguments (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, which
        redis-py's from_url hands to its TLS connections; ones in the URL win)."""
        tls = self._redis_tls_files()
        if self.redis_url:
            url = self.redis_url
        else:
            scheme = "rediss" if self.redis_tls or tls else "redis"
            auth = ""
            if self.redis_username or self.redis_password:
                user = quote(self.redis_username or "", safe="")
                auth = f"{user}:{quote(self.redis_password or '', safe='')}@"
            url = f"{scheme}://{auth}{self.redis_host}:{self.redis_port}/0"
        parts = urlsplit(url)
        given = parse_qs(parts.query)
        extra = {name: value for name, value in tls.items() if name not in given}
        if not extra:
            return url
        query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
        return parts._replace(query=query).geturl()

    @property
    def artifact_root(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"


def load_settings() -> Settings:
    return Settings()
