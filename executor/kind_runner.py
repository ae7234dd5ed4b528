"""Runs one attempt of a job with its kind's handler: parses the input, calls the
handler (an async one on the loop; a blocking one on a thread of its own, interrupted
with JobCancelled when the attempt is cancelled or times out, as Dramatiq's Abortable
does, its slot freed at once), and turns what it returns or raises into the job's
result or error."""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import threading
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2
from pydantic import BaseModel, ValidationError

from conveyor.kinds import JobCancelled, JobError, Kind, PermanentError, RetryableError
from conveyor.v1 import job_pb2, job_service_pb2
from executor.kind_context import BlockingContext, ExecutorJobContext


def kind_input(kind: Kind, spec: job_service_pb2.SubmitJobRequest) -> Any:
    """The handler's input: the contract's message for a typed built-in, else the
    job's JSON input parsed by the kind's model."""
    if kind.typed:
        return getattr(spec, kind.name)
    data = json_format.MessageToDict(spec.kind.input) if spec.HasField("kind") else {}
    try:
        return kind.parse_input(data)
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        why = errors[0]["msg"] if errors else str(exc)
        raise PermanentError(f"input does not fit kind {kind.name!r}: {where}: {why}",
                             reason="INVALID_INPUT", code=code_pb2.INVALID_ARGUMENT,
                             metadata={"path": where}) from None


def output_value(output: Any) -> struct_pb2.Value:
    """What a handler returned, as JSON."""
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json", by_alias=True)
    value = struct_pb2.Value()
    try:
        json_format.ParseDict(output, value)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise PermanentError(f"the handler returned something that is not JSON: {exc}",
                             reason="OUTPUT_NOT_JSON") from None
    return value


def as_job_error(kind: Kind, exc: Exception) -> JobError:
    """Any exception a handler raised, as the attempt's error: a JobError as it is;
    another exception is retried (as in Dramatiq) unless the kind's Retry leaves its
    type out."""
    if isinstance(exc, JobError):
        return exc
    message = f"{type(exc).__name__}: {exc}"
    if kind.retry is not None and not kind.retry.retries(exc):
        return PermanentError(message, reason="HANDLER_ERROR", code=code_pb2.UNKNOWN)
    return RetryableError(message, reason="HANDLER_ERROR", code=code_pb2.UNKNOWN)


#: Whether a handler is a plain (blocking) function, by handler: inspect's check once
#: per kind, not once per job.
_blocking: dict[Any, bool] = {}


def is_blocking(kind: Kind) -> bool:
    try:
        return _blocking[kind.handler]
    except KeyError:
        blocking = _blocking[kind.handler] = kind.blocking
        return blocking
    except TypeError:  # an unhashable callable
        return kind.blocking


async def run_kind(kind: Kind, ctx: ExecutorJobContext, spec: job_service_pb2.SubmitJobRequest) -> job_pb2.JobResult:
    value = kind_input(kind, spec)
    try:
        if is_blocking(kind):
            output = await _run_blocking(kind, ctx, value)
        else:
            output = await kind.handler(ctx, value)
    except asyncio.CancelledError:
        ctx.cancel_requested = True
        raise
    except Exception as exc:
        raise as_job_error(kind, exc) from exc
    if kind.typed:
        if not isinstance(output, job_pb2.JobResult):
            raise PermanentError(f"built-in kind {kind.name!r} returned {type(output).__name__}",
                                 reason="OUTPUT_INVALID")
        return output
    result = job_pb2.JobResult(artifacts=ctx.artifacts)
    if output is not None:
        result.output.CopyFrom(output_value(output))
    return result


async def _run_blocking(kind: Kind, ctx: ExecutorJobContext, value: Any) -> Any:
    """The handler on a thread of its own. Cancelled (or timed out), the thread is
    interrupted with JobCancelled and left to unwind: the slot is free at once."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    blocking_ctx = BlockingContext(ctx, loop)

    def settle(outcome: Any, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(outcome)

    def body() -> None:
        try:
            outcome = kind.handler(blocking_ctx, value)
        except JobCancelled:
            return  # the attempt was given up already
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, outcome, None)

    # In a copy of the attempt's context: the handler's log lines carry the job's ids
    # (and its trace's, conveyor/tracing.py), and its own spans are the attempt's children.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(body,),
                              name=f"job-{ctx.job_id}-{ctx.attempt}", daemon=True)
    thread.start()
    try:
        return await done
    except asyncio.CancelledError:
        ctx.cancel_requested = True
        _interrupt(thread)
        raise


def _interrupt(thread: threading.Thread) -> None:
    """Raise JobCancelled in `thread` at its next Python bytecode (a thread blocked in
    C, e.g. in time.sleep, sees it when that returns)."""
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(JobCancelled))
