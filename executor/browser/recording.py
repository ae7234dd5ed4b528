"""Debugging artifacts of a browser job: a Playwright trace (trace.zip, opened by
`playwright show-trace`) kept as Playwright Test's `trace` option says, an optional
video and HAR, and the pages' console messages and uncaught errors in the result
(bounded: conveyor/browser_options.py).

The video is the page's screencast frames (JPEG) at VIDEO_FPS in a Motion-JPEG AVI
written here: Playwright's own video encoder needs an ffmpeg build that Playwright
downloads, and nothing here downloads anything.

Everything is started on the job's context as the pool hands it over (a spare
context opened ahead works as well as a new one) and stopped before it is closed.
Artifacts are named here, with the attempt number (trace-2.zip): a retry never
replaces the failed attempt's trace."""

from __future__ import annotations

import asyncio
import shutil
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from google.protobuf import any_pb2
from playwright.async_api import ConsoleMessage, WebError
from playwright.async_api import Error as PlaywrightError

from conveyor.browser_options import (
    MAX_CONSOLE_MESSAGES,
    MAX_CONSOLE_TEXT,
    MAX_PAGE_ERROR_TEXT,
    MAX_PAGE_ERRORS,
)
from conveyor.v1 import job_pb2, task_pb2
from executor.browser.session import BrowserSession
from executor.browser.step_context import JobOutputs
from executor.browser.step_errors import StepFailure

log = structlog.get_logger()

Report = Callable[[int, str, int, str], Awaitable[None]]
#: How long stopping one recorder (and writing its file) may take.
STOP_TIMEOUT_SECONDS = 20.0
#: What a failed job's error carries of its partial result (console messages).
FAILURE_CONSOLE_MESSAGES = 50
FAILURE_CONSOLE_TEXT = 500
VIDEO_FPS = 10
#: The most a video may hold (frames and their bytes), whatever the job's length.
MAX_VIDEO_FRAMES = 6000
MAX_VIDEO_BYTES = 64 << 20

TraceMode = task_pb2.TraceMode


def trace_recorded(mode: int, attempt_in_set: int) -> bool:
    """Whether this attempt records a trace."""
    if mode in (task_pb2.TRACE_MODE_ON, task_pb2.TRACE_MODE_RETAIN_ON_FAILURE):
        return True
    return mode == task_pb2.TRACE_MODE_ON_FIRST_RETRY and attempt_in_set == 2


def trace_kept(mode: int, failed: bool) -> bool:
    """Whether a recorded trace is kept as an artifact."""
    return mode != task_pb2.TRACE_MODE_RETAIN_ON_FAILURE or failed


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Recorder:
    """One attempt's recording: what to record, and what the pages logged."""

    options: task_pb2.RecordingOptions
    attempt: int
    attempt_in_set: int
    scratch_root: Path
    step_index: int = -1
    console: list[job_pb2.ConsoleMessage] = field(default_factory=list)
    page_errors: list[job_pb2.PageError] = field(default_factory=list)
    dropped: int = 0
    _dir: Path | None = None
    _tracing: bool = False
    _har: Path | None = None
    _video: VideoFrames | None = None
    _video_page: Any = None

    @property
    def records_trace(self) -> bool:
        return trace_recorded(self.options.trace, self.attempt_in_set)

    def wrap(self, report: Report) -> Report:
        """The job's progress report, also telling this recorder which step runs."""

        async def wrapped(progress: int, message: str, index: int, name: str) -> None:
            if index >= 0:
                self.step_index = index
            await report(progress, message, index, name)

        return wrapped

    # --- listeners ---------------------------------------------------------------------

    def _on_console(self, message: ConsoleMessage) -> None:
        if len(self.console) >= MAX_CONSOLE_MESSAGES:
            self.dropped += 1
            return
        location = ""
        try:
            where = message.location
            if where and where.get("url"):
                location = f"{where['url']}:{where.get('lineNumber', 0)}"
        except PlaywrightError:
            pass
        self.console.append(job_pb2.ConsoleMessage(
            type=message.type, text=_clip(message.text, MAX_CONSOLE_TEXT), location=_clip(location, 1000),
            step_index=self.step_index,
        ))

    def _on_web_error(self, error: WebError) -> None:
        if len(self.page_errors) >= MAX_PAGE_ERRORS:
            self.dropped += 1
            return
        exc = error.error
        text = exc.stack or exc.message if isinstance(exc, PlaywrightError) else str(exc)
        self.page_errors.append(job_pb2.PageError(message=_clip(text or "", MAX_PAGE_ERROR_TEXT),
                                                  step_index=self.step_index))

    # --- start / finish ------------------------------------------------------------------

    def _scratch(self) -> Path:
        if self._dir is None:
            self.scratch_root.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="rec-", dir=self.scratch_root))
        return self._dir

    async def start(self, session: BrowserSession) -> None:
        """Listen to the context's console and errors; start what the task asked to record."""
        context = session.context
        context.on("console", self._on_console)
        context.on("weberror", self._on_web_error)
        if self.records_trace:
            await context.tracing.start(screenshots=True, snapshots=True, sources=False,
                                        title=f"attempt {self.attempt}")
            self._tracing = True
        if self.options.har:
            self._har = self._scratch() / "network.har"
            await context.tracing.start_har(self._har)
        if self.options.video:
            self._video = VideoFrames()
            self._video_page = session.page
            await session.page.screencast.start(on_frame=self._video.add, quality=70)

    async def finish(self, session: BrowserSession, outputs: JobOutputs, *, failed: bool) -> None:
        """Stop the recorders, save what is kept as artifacts, and put the console
        messages and page errors in the result. Never fails the job: a recorder that
        cannot be stopped (the browser is gone) is logged and skipped."""
        result = outputs.result
        result.console.extend(self.console)
        result.page_errors.extend(self.page_errors)
        result.console_dropped = self.dropped
        try:
            alive = not session.lost.is_set()
            if self._tracing:
                keep = trace_kept(self.options.trace, failed)
                path = self._scratch() / "trace.zip" if keep else None
                if alive and await self._stop("trace", session.context.tracing.stop(path=path)) and path:
                    await self._save(outputs, path, f"trace-{self.attempt}.zip", "application/zip")
            if self._video is not None and alive and await self._stop("video", self._video_page.screencast.stop()):
                self._video.end_ms = time.time() * 1000
                path = self._scratch() / "video.avi"
                if await asyncio.to_thread(self._video.write_avi, path):
                    await self._save(outputs, path, f"video-{self.attempt}.avi", "video/x-msvideo")
            if self._har is not None and alive and await self._stop("har", session.context.tracing.stop_har()):
                await self._save(outputs, self._har, f"network-{self.attempt}.har", "application/json")
        finally:
            if self._dir is not None:
                await asyncio.to_thread(shutil.rmtree, self._dir, True)

    async def _stop(self, what: str, stopping: Awaitable[None]) -> bool:
        try:
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await stopping
        except (PlaywrightError, TimeoutError) as exc:
            log.warning("recording_stop_failed", what=what, error=str(exc)[:300])
            return False
        return True

    async def _save(self, outputs: JobOutputs, path: Path, name: str, content_type: str) -> None:
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            log.warning("recording_missing", artifact=name, error=str(exc)[:300])
            return
        try:
            await outputs.add_artifact(self.step_index, name, data, content_type)
        except StepFailure as failure:  # over the job's artifact budget: the job still stands
            log.warning("recording_not_kept", artifact=name, reason=failure.reason, size_bytes=len(data))


def failure_details(result: job_pb2.JobResult) -> any_pb2.Any:
    """What a failed job's error carries of its partial result (packed in the
    google.rpc.Status details beside the ErrorInfo): the steps run, the artifacts
    (a kept trace among them), page errors and the last console messages, bounded."""
    partial = job_pb2.JobResult(
        steps=result.steps, artifacts=result.artifacts, page_errors=result.page_errors[:MAX_PAGE_ERRORS],
        blocked_urls=result.blocked_urls[:50], console_dropped=result.console_dropped,
        saved_session=result.saved_session,
    )
    for message in result.console[-FAILURE_CONSOLE_MESSAGES:]:
        clipped = partial.console.add()
        clipped.CopyFrom(message)
        clipped.text = _clip(message.text, FAILURE_CONSOLE_TEXT)
    partial.console_dropped += max(0, len(result.console) - FAILURE_CONSOLE_MESSAGES)
    packed = any_pb2.Any()
    packed.Pack(partial)
    return packed


@dataclass
class VideoFrames:
    """The screencast's frames as they come (the browser sends one when the page repaints)."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)
    size: int = 0
    #: When recording began and ended (ms since the epoch, as the frames' timestamps):
    #: the video covers that span, the page shown as it last painted.
    begin_ms: float = field(default_factory=lambda: time.time() * 1000)
    end_ms: float = 0.0

    def add(self, frame: Any) -> None:
        data = bytes(frame["data"])
        if len(self.frames) < MAX_VIDEO_FRAMES and self.size + len(data) <= MAX_VIDEO_BYTES:
            self.frames.append((float(frame["timestamp"]), data))
            self.size += len(data)

    def write_avi(self, path: Path) -> bool:
        """A constant-rate Motion-JPEG AVI of the frames (each held until the next); False without frames."""
        if not self.frames:
            return False
        start = min(self.begin_ms, self.frames[0][0])
        # The frame shown at each tick is the last one painted before it (the first, before any).
        end = max(self.end_ms, self.frames[-1][0] + 1000 / VIDEO_FPS)
        ticks = min(MAX_VIDEO_FRAMES, max(1, int((end - start) * VIDEO_FPS / 1000)))
        sequence: list[bytes] = []
        j = total = 0
        for tick in range(ticks):
            at = start + tick * 1000 / VIDEO_FPS
            while j + 1 < len(self.frames) and self.frames[j + 1][0] <= at:
                j += 1
            total += len(self.frames[j][1])
            if total > MAX_VIDEO_BYTES:
                break  # the video ends early rather than grow past the bound
            sequence.append(self.frames[j][1])
        width, height = jpeg_size(self.frames[0][1])
        path.write_bytes(mjpeg_avi(sequence, width, height, VIDEO_FPS))
        return True


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker; (0, 0) if there is none."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return 0, 0


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _list(kind: bytes, payload: bytes) -> bytes:
    return _chunk(b"LIST", kind + payload)


def mjpeg_avi(frames: list[bytes], width: int, height: int, fps: int) -> bytes:
    """An AVI (RIFF) file of Motion-JPEG frames, with its index."""
    biggest = max(len(f) for f in frames)
    avih = struct.pack("<IIIIIIIIII16x", 1_000_000 // fps, biggest * fps, 0, 0x10, len(frames), 0, 1,
                       biggest, width, height)
    strh = struct.pack("<4s4sIHHIIIIIIiI4h", b"vids", b"MJPG", 0, 0, 0, 0, 1, fps, 0, len(frames), biggest,
                       -1, 0, 0, 0, width, height)
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
    header = _list(b"hdrl", _chunk(b"avih", avih) + _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf)))
    movi_parts: list[bytes] = []
    index: list[bytes] = []
    offset = 4  # from the start of the 'movi' fourcc
    for frame in frames:
        chunk = _chunk(b"00dc", frame)
        index.append(struct.pack("<4sIII", b"00dc", 0x10, offset, len(frame)))
        movi_parts.append(chunk)
        offset += len(chunk)
    body = b"AVI " + header + _list(b"movi", b"".join(movi_parts)) + _chunk(b"idx1", b"".join(index))
    return b"RIFF" + struct.pack("<I", len(body)) + body
