"""Job kinds, Conveyor's extension point (as actors are Dramatiq's): see api.py for
how to write one, registry.py for how executors find and serve them."""

from conveyor.kinds.api import BlockingJobContext, FetchResponse, JobContext, Kind, Retry, job_kind, seconds_of
from conveyor.kinds.errors import JobCancelled, JobError, PermanentError, RetryableError
from conveyor.kinds.registry import KindRegistry, KindSpec, default_registry, load_kinds

__all__ = [
    "BlockingJobContext",
    "FetchResponse",
    "JobCancelled",
    "JobContext",
    "JobError",
    "Kind",
    "KindRegistry",
    "KindSpec",
    "PermanentError",
    "Retry",
    "RetryableError",
    "default_registry",
    "job_kind",
    "load_kinds",
    "seconds_of",
]
