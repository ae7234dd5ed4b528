"""Settings from the environment, each with a default that works on one machine.

The seeds' names (REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, QUEUE_CONCURRENCY,
MAX_CONCURRENT_BROWSERS) stay valid as aliases of the CONVEYOR_ ones.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(f"CONVEYOR_{name}", *aliases)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    # --- Redis -------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="redis:// URL. Unset: `conveyor up` starts its own redis-server; "
        "the services use REDIS_HOST/REDIS_PORT (default 127.0.0.1:6379).",
    )
    redis_host: str = Field(default="127.0.0.1", validation_alias=_env("REDIS_HOST", "REDIS_HOST"))
    redis_port: int = Field(default=6379, validation_alias=_env("REDIS_PORT", "REDIS_PORT"))
    redis_password: str | None = Field(
        default=None, validation_alias=_env("REDIS_PASSWORD", "REDIS_PASSWORD")
    )
    key_prefix: str = Field(default="cv", description="Prefix of every Conveyor key in Redis.")

    # --- gateway -----------------------------------------------------------------
    grpc_addr: str = "127.0.0.1:50051"
    watch_heartbeat_seconds: float = 10.0
    max_request_bytes: int = 8 * 1024 * 1024
    shutdown_grace_seconds: float = 5.0

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
    executor_slots: int = Field(default=4, description="Jobs one worker process runs at once.")
    max_concurrent_browsers: int = Field(
        default=2, validation_alias=_env("MAX_CONCURRENT_BROWSERS", "MAX_CONCURRENT_BROWSERS")
    )
    chromium_path: str = "/usr/bin/chromium"
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

    # --- files and logs ------------------------------------------------------------
    data_dir: Path = Path(".conveyor")
    artifact_dir: Path | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @cached_property
    def effective_redis_url(self) -> str:
        """The URL the services connect to."""
        if self.redis_url:
            return self.redis_url
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/0"

    @property
    def artifact_root(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"


def load_settings() -> Settings:
    return Settings()
