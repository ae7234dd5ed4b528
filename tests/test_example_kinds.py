"""The example kinds of examples/ (the `conveyor-examples` package): what they
register, their input schemas, and their handlers run as an executor runs them (input
through the JSON of the wire into the kind's model, output back into JSON) with a
recording context. Cancellation is real: an asyncio task cancelled mid-"think", a
blocking handler's thread stopped by check_cancelled. The package's entry points are
checked on a wheel built from it, in a fresh interpreter.

The examples end to end (an executor serving them, jobs through the gateway) are the
executor's and the CLI's tests."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import structlog
from google.protobuf import json_format, struct_pb2
from pydantic import ValidationError

from conveyor.kinds import (
    BlockingJobContext,
    FetchResponse,
    JobCancelled,
    JobContext,
    Kind,
    KindRegistry,
    KindSpec,
    PermanentError,
    RetryableError,
    default_registry,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
if importlib.util.find_spec("conveyor_examples") is None:  # not pip-installed: from the source tree
    sys.path.insert(0, str(EXAMPLES))

examples = importlib.import_module("conveyor_examples")
chat = importlib.import_module("conveyor_examples.chat")
wordcount = importlib.import_module("conveyor_examples.wordcount")
flaky = importlib.import_module("conveyor_examples.flaky")

KIND_NAMES = ["chat", "chat-batch", "flaky", "wordcount"]


@pytest.fixture(scope="module")
def registry() -> KindRegistry:
    """A registry of the examples' kinds only (they registered into the default one
    as they were imported, as @job_kind does)."""
    fresh = KindRegistry()
    for kind in default_registry:
        if kind.module.startswith("conveyor_examples."):
            fresh.add(kind)
    return fresh


class RecordingContext:
    """A stand-in for the executor's JobContext (what an async handler gets): it
    records progress and artifacts, and can be marked cancelled. The examples do not
    fetch or use the browser; those say so."""

    def __init__(self, *, attempt: int = 1, job_id: str = "job-test", queue: str = "default") -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.queue = queue
        self.labels: Mapping[str, str] = {"team": "tests"}
        self.log: Any = structlog.get_logger().bind(job_id=job_id, attempt=attempt)
        self.reports: list[tuple[int, str]] = []
        self.artifacts: dict[str, bytes] = {}
        self.reported = asyncio.Event()
        self._cancelled = False

    async def progress(self, percent: int, message: str = "") -> None:
        assert 0 <= percent <= 100, percent
        self.reports.append((percent, message))
        self.reported.set()

    async def save_artifact(self, data: bytes, *, content_type: str, label: str = "file") -> str:
        name = f"{label}-{len(self.artifacts) + 1}"
        self.artifacts[name] = data
        return name

    async def fetch(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int = 10 << 20,
                    follow_redirects: bool = True) -> FetchResponse:
        raise NotImplementedError("the example kinds do not fetch")

    def browser_page(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError("the example kinds do not use the browser")

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def messages(self) -> list[str]:
        return [message for _, message in self.reports]


class BlockingRecordingContext:
    """A stand-in for the executor's BlockingJobContext (what a plain `def` handler
    gets, on a thread of its own): it records progress, and once `cancel()` is called
    check_cancelled raises JobCancelled, as the executor's does on a cancel or a time
    out. `first_report` is set at the first progress report."""

    def __init__(self, *, attempt: int = 1) -> None:
        self.job_id = "job-blocking"
        self.attempt = attempt
        self.queue = "default"
        self.labels: Mapping[str, str] = {}
        self.log: Any = structlog.get_logger().bind(job_id=self.job_id)
        self.reports: list[tuple[int, str]] = []
        self.checks = 0
        self.first_report = threading.Event()
        self._cancelled = threading.Event()

    def progress(self, percent: int, message: str = "") -> None:
        assert 0 <= percent <= 100, percent
        self.reports.append((percent, message))
        self.first_report.set()

    def save_artifact(self, data: bytes, *, content_type: str, label: str = "file") -> str:
        return label

    def fetch(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int = 10 << 20,
              follow_redirects: bool = True) -> FetchResponse:
        raise NotImplementedError("the example kinds do not fetch")

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check_cancelled(self) -> None:
        self.checks += 1
        if self._cancelled.is_set():
            raise JobCancelled()


def _typecheck_contexts(a: RecordingContext, b: BlockingRecordingContext) -> tuple[JobContext, BlockingJobContext]:
    return a, b  # mypy: the stand-ins meet the protocols the handlers are written against


def wire(data: Mapping[str, Any]) -> dict[str, Any]:
    """The input as the executor gets it: through a google.protobuf.Struct (numbers
    become floats)."""
    struct = struct_pb2.Struct()
    json_format.ParseDict(dict(data), struct)
    return json_format.MessageToDict(struct)


def as_output(value: Any) -> Any:
    """The output as it is stored: JSON in a google.protobuf.Value."""
    message = struct_pb2.Value()
    json_format.ParseDict(json.loads(json.dumps(value)), message)
    return json_format.MessageToDict(message)


async def run(kind: Kind, data: Mapping[str, Any], ctx: RecordingContext | None = None) -> Any:
    assert not kind.blocking
    output = await kind.handler(ctx or RecordingContext(), kind.parse_input(wire(data)))
    return as_output(output)


def run_blocking(kind: Kind, data: Mapping[str, Any], ctx: BlockingRecordingContext | None = None) -> Any:
    assert kind.blocking
    return as_output(kind.handler(ctx or BlockingRecordingContext(), kind.parse_input(wire(data))))


def kind_of(registry: KindRegistry, name: str) -> Kind:
    kind = registry.get(name)
    assert kind is not None, registry.names()
    return kind


@pytest.fixture(autouse=True)
def quick_thinking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(chat.THINK_ENV, "0.01")
    monkeypatch.delenv(chat.RESPONDER_ENV, raising=False)


# --- what the package registers ----------------------------------------------------------
def test_the_package_registers_its_kinds_with_their_defaults(registry: KindRegistry) -> None:
    assert registry.names() == KIND_NAMES
    assert [k.name for k in registry if k.blocking] == ["wordcount"]
    assert not any(k.browser or k.typed for k in registry)
    count = kind_of(registry, "wordcount")
    assert count.retry is not None
    assert (count.retry.attempts, count.retry.backoff, count.retry.base_seconds) == (2, "fixed", 1.0)
    assert count.timeout_seconds == 600
    flake = kind_of(registry, "flaky")
    assert flake.retry is not None and (flake.retry.attempts, flake.retry.backoff) == (4, "exponential")
    # What an executor publishes for the gateway, and reads back.
    spec = KindSpec.of(count)
    assert (spec.max_attempts, spec.timeout_ms) == (2, 600_000)
    assert spec.description == "Count the words of texts (or of a generated corpus): totals and the top k."
    assert KindSpec.from_json(spec.to_json()) == spec


def test_the_entry_points_name_the_kind_modules() -> None:
    project = tomllib.loads((EXAMPLES / "pyproject.toml").read_text())
    assert project["project"]["name"] == "conveyor-examples"
    assert "conveyor" in project["project"]["dependencies"]
    declared = project["project"]["entry-points"]["conveyor.kinds"]
    assert sorted(declared.values()) == sorted(examples.KIND_MODULES)
    for module in declared.values():
        assert any(k.module == module for k in default_registry), module


def test_a_wheel_of_the_package_serves_its_kinds_through_entry_points(tmp_path: Path) -> None:
    """Built as pip builds it for a user, then found the way load_kinds finds kinds:
    through the `conveyor.kinds` entry point group of what is on the path."""
    source = tmp_path / "src"
    shutil.copytree(EXAMPLES, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"),
         str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "w").glob("conveyor_examples-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = (
        "import json\n"
        "from importlib.metadata import entry_points\n"
        "from conveyor.kinds import default_registry\n"
        "eps = [ep for ep in entry_points(group='conveyor.kinds') if ep.dist and ep.dist.name == 'conveyor-examples']\n"
        "for ep in eps: ep.load()\n"
        "print(json.dumps({'eps': sorted(ep.name for ep in eps), 'kinds': default_registry.names(),\n"
        "                  'file': __import__('conveyor_examples').__file__}))\n"
    )
    # The wheel's directory first, so it is the copy imported even if the package is installed.
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env,
                           cwd=ROOT, check=False)
    assert found.returncode == 0, found.stderr
    seen = json.loads(found.stdout)
    assert seen["eps"] == ["chat", "flaky", "wordcount"]
    assert set(KIND_NAMES) <= set(seen["kinds"])
    assert seen["file"].startswith(str(site))


def test_input_schemas_are_json_schema_of_the_models(registry: KindRegistry) -> None:
    schema = kind_of(registry, "chat").input_schema()
    assert schema["type"] == "object"
    assert schema["required"] == ["messages"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"messages", "metadata", "responder"}
    message = schema["$defs"]["Message"]
    assert message["properties"]["role"]["enum"] == ["user", "assistant", "system"]
    assert message["required"] == ["role", "content"]
    assert schema["properties"]["messages"]["minItems"] == 1

    batch = kind_of(registry, "chat-batch").input_schema()
    assert batch["required"] == ["conversations"]

    count = kind_of(registry, "wordcount").input_schema()
    assert count["properties"]["top"] == {
        "default": 10, "description": "How many of the most frequent words to return.",
        "maximum": 1000, "minimum": 1, "title": "Top", "type": "integer",
    }  # fmt: skip
    assert count["$defs"]["Generate"]["properties"]["words"]["maximum"] == 50_000_000
    assert "required" not in count  # texts or generate: the handler decides (a PermanentError)

    flake = kind_of(registry, "flaky").input_schema()
    assert flake["properties"]["error"]["enum"] == ["retryable", "crash"]
    json.dumps([schema, batch, count, flake])  # what executors publish is JSON


# --- chat ----------------------------------------------------------------------------------
async def test_chat_replies_from_the_conversation_with_progress(registry: KindRegistry) -> None:
    ctx = RecordingContext()
    output = await run(kind_of(registry, "chat"), {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "what is 6 * 7?"},
        ],
        "metadata": {"session": "s-1", "user": {"id": 7}},
    }, ctx)  # fmt: skip
    assert output == {
        "reply": {"role": "assistant", "content": "6 * 7 = 42"},
        "turns": 2,
        "metadata": {"session": "s-1", "user": {"id": 7}},
    }
    assert ctx.messages == ["thinking...", "replying..."]
    assert [p for p, _ in ctx.reports] == sorted(p for p, _ in ctx.reports)


@pytest.mark.parametrize(
    ("said", "reply"),
    [
        ("Hi!", "Hello! How can I help you today?"),
        ("what is 1.5 + 2", "1.5 + 2 = 3.5"),
        ("12 / 4", "12 / 4 = 3"),
        ("and 7 / 0?", "7 / 0 has no value: division by zero."),
        ("I am tired of my job", "You said: you are tired of your job"),
        ("can you help me?", "You ask: can I help you? I am a local responder without a model, so I cannot know."),
    ],
)
async def test_the_local_responder_answers_by_rules(registry: KindRegistry, said: str, reply: str) -> None:
    output = await run(kind_of(registry, "chat"), {"messages": [{"role": "user", "content": said}]})
    assert output["reply"]["content"] == reply
    assert output["turns"] == 1 and output["metadata"] == {}


async def test_the_local_responder_recaps_and_follows_the_system_message(registry: KindRegistry) -> None:
    kind = kind_of(registry, "chat")
    history = [
        {"role": "user", "content": "I like tea"},
        {"role": "assistant", "content": "You said: you like tea"},
        {"role": "user", "content": "and cake"},
        {"role": "user", "content": "What did I say?"},
    ]
    recap = await run(kind, {"messages": history})
    assert recap["reply"]["content"] == "So far you said: 1) I like tea; 2) and cake"
    assert recap["turns"] == 3
    shouting = await run(kind, {"messages": [{"role": "system", "content": "Answer in upper case."}, *history[:1]]})
    assert shouting["reply"]["content"] == "YOU SAID: YOU LIKE TEA"


async def test_the_responder_is_chosen_by_the_job_the_environment_or_the_default(
    registry: KindRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind = kind_of(registry, "chat")
    said = {"messages": [{"role": "user", "content": "I am here"}]}
    assert (await run(kind, said))["reply"]["content"] == "You said: you are here"  # local
    assert (await run(kind, {**said, "responder": "echo"}))["reply"]["content"] == "I am here"
    monkeypatch.setenv(chat.RESPONDER_ENV, "echo")
    assert (await run(kind, said))["reply"]["content"] == "I am here"

    class Shouter:
        """A responder of a user's own: anything with a name and an async reply()."""

        name = "shout"

        async def reply(self, messages: Any, ctx: JobContext) -> str:
            await ctx.progress(50, "shouting...")
            return str(messages[-1].content).upper() + "!"

    monkeypatch.setitem(chat._RESPONDERS, "shout", Shouter())
    ctx = RecordingContext()
    assert (await run(kind, {**said, "responder": "shout"}, ctx))["reply"]["content"] == "I AM HERE!"
    assert ctx.messages == ["thinking...", "shouting...", "replying..."]
    assert "shout" in chat.responder_names()

    with pytest.raises(PermanentError) as caught:
        await run(kind, {**said, "responder": "gpt-17"})
    assert caught.value.reason == "UNKNOWN_RESPONDER"
    assert "'gpt-17'" in caught.value.message and "echo, local, shout" in caught.value.message


async def test_a_conversation_without_a_user_message_fails_for_good(registry: KindRegistry) -> None:
    ctx = RecordingContext()
    with pytest.raises(PermanentError) as caught:
        await run(kind_of(registry, "chat"), {"messages": [{"role": "system", "content": "Be nice."}]}, ctx)
    assert caught.value.reason == "NO_USER_MESSAGE" and not caught.value.retryable
    assert ctx.reports == []  # refused before any work


def test_chat_input_outside_the_schema_is_refused_by_the_model(registry: KindRegistry) -> None:
    kind = kind_of(registry, "chat")
    cases: list[dict[str, Any]] = [
        {"messages": []},
        {"messages": [{"role": "robot", "content": "beep"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 2},
    ]
    for bad in cases:
        with pytest.raises(ValidationError):
            kind.parse_input(bad)


async def test_chat_batch_answers_each_conversation(registry: KindRegistry) -> None:
    ctx = RecordingContext()
    output = await run(kind_of(registry, "chat-batch"), {
        "conversations": [
            {"id": "a", "messages": [{"role": "user", "content": "hello"}], "metadata": {"n": 1}},
            {"id": "b", "messages": [{"role": "system", "content": "nothing to answer"}]},
            {"messages": [{"role": "user", "content": "2 x 21"}]},
        ],
    }, ctx)  # fmt: skip
    assert output == {
        "replies": [
            {"id": "a", "metadata": {"n": 1}, "turns": 1,
             "reply": {"role": "assistant", "content": "Hello! How can I help you today?"}},
            {"id": "b", "metadata": {}, "error": "chat: the conversation has no user message to answer"},
            {"id": None, "metadata": {}, "reply": {"role": "assistant", "content": "2 * 21 = 42"}, "turns": 1},
        ],
        "answered": 2,
        "failed": 1,
    }  # fmt: skip
    assert ctx.messages == ["conversation 1 of 3", "conversation 2 of 3", "conversation 3 of 3", "answered 2 of 3"]
    assert [p for p, _ in ctx.reports] == [0, 33, 66, 100]


async def test_a_cancelled_chat_stops_while_thinking(registry: KindRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor cancels an async handler's task; the responder's wait ends at once."""
    monkeypatch.setenv(chat.THINK_ENV, "600")
    ctx = RecordingContext()
    task = asyncio.create_task(run(kind_of(registry, "chat"), {"messages": [{"role": "user", "content": "hi"}]}, ctx))
    await asyncio.wait_for(ctx.reported.wait(), 10)
    assert ctx.messages == ["thinking..."]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert ctx.messages == ["thinking..."]  # never replied


# --- wordcount (blocking) --------------------------------------------------------------------
def test_wordcount_counts_the_words_of_texts(registry: KindRegistry) -> None:
    kind = kind_of(registry, "wordcount")
    texts = ["The cat sat on the mat.", "The cat's hat, the CAT's mat!", "42 is not a word; don\u2019t count digits"]
    ctx = BlockingRecordingContext()
    output = run_blocking(kind, {"texts": texts, "top": 3}, ctx)
    assert output["words"] == 19 and output["distinct"] == 14  # "cat's" and "don't" are words; "42" is not
    assert output["top"] == [{"word": "the", "count": 4}, {"word": "mat", "count": 2}, {"word": "cat's", "count": 2}]
    assert output["source"] == "3 text(s)"
    assert ctx.reports == [(0, "counting the words of 3 text(s)"), (99, "19 words counted")]
    assert ctx.checks == 2

    everything = run_blocking(kind, {"texts": texts, "top": 1000})  # k above the distinct words: all of them
    assert len(everything["top"]) == everything["distinct"] == 14
    sensitive = run_blocking(kind, {"texts": texts, "top": 2, "case_sensitive": True})
    assert sensitive["top"] == [{"word": "The", "count": 2}, {"word": "the", "count": 2}]
    long_words = run_blocking(kind, {"texts": texts, "top": 2, "min_length": 4})
    assert long_words["top"] == [{"word": "cat's", "count": 2}, {"word": "word", "count": 1}]


def test_wordcount_of_a_generated_corpus_is_the_same_for_the_same_seed(registry: KindRegistry) -> None:
    kind = kind_of(registry, "wordcount")
    ctx = BlockingRecordingContext()
    spec = {"generate": {"words": 230_000, "seed": 7, "vocabulary": 800}, "top": 5}
    first = run_blocking(kind, spec, ctx)
    assert first == run_blocking(kind, spec)
    assert first["words"] == 230_000 and 700 <= first["distinct"] <= 800
    assert first["source"] == "a generated corpus of 230,000 words"
    counts = [t["count"] for t in first["top"]]
    assert counts == sorted(counts, reverse=True) and counts[0] > 10 * (230_000 / 800)  # Zipf: a head of common words
    # A report and a cancellation check per chunk of 50,000 words (5 chunks).
    assert [m for _, m in ctx.reports[1:]] == [f"{n:,} words counted" for n in (50_000, 100_000, 150_000, 200_000,
                                                                                230_000)]
    assert [p for p, _ in ctx.reports] == [0, 21, 43, 65, 86, 99]
    assert ctx.checks == 6
    other = run_blocking(kind, {**spec, "generate": {**spec["generate"], "seed": 8}})  # type: ignore[dict-item]
    assert other["top"] != first["top"] or other["distinct"] != first["distinct"]


def test_a_cancelled_wordcount_stops_within_a_chunk(registry: KindRegistry) -> None:
    """The handler runs on a thread of its own, as the executor runs it; cancelled
    after its first report, it raises JobCancelled at its next check."""
    kind = kind_of(registry, "wordcount")
    ctx = BlockingRecordingContext()
    raised: list[BaseException] = []

    def work() -> None:
        try:
            kind.handler(ctx, kind.parse_input({"generate": {"words": 50_000_000, "seed": 1}}))
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    assert ctx.first_report.wait(30)
    ctx.cancel()
    thread.join(30)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], JobCancelled)
    assert not isinstance(raised[0], Exception)  # a handler's `except Exception` cannot swallow it
    assert len(ctx.reports) < 50  # of 1,000 chunks: it stopped at once, not at the end


@pytest.mark.parametrize(
    ("data", "reason", "text"),
    [
        ({}, "BAD_INPUT", "`texts` is empty"),
        ({"texts": ["", "   \n"]}, "BAD_INPUT", "`texts` is empty"),
        ({"texts": ["123 456", "-- !!"]}, "NO_WORDS", "no words of at least 1 letters in 2 text(s)"),
        ({"texts": ["a an I"], "min_length": 3}, "NO_WORDS", "no words of at least 3 letters"),
        ({"texts": ["x"], "generate": {"words": 5}}, "BAD_INPUT", "not both"),
    ],
)
def test_wordcount_input_that_cannot_be_counted_fails_for_good(
    registry: KindRegistry, data: dict[str, Any], reason: str, text: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        run_blocking(kind_of(registry, "wordcount"), data)
    assert caught.value.reason == reason and not caught.value.retryable
    assert text in caught.value.message


def test_wordcount_input_outside_the_schema_is_refused_by_the_model(registry: KindRegistry) -> None:
    kind = kind_of(registry, "wordcount")
    for bad in ({"texts": ["a"], "top": 0}, {"generate": {"words": 0}}, {"texts": "not a list"}, {"texts": [], "k": 3}):
        with pytest.raises(ValidationError):
            kind.parse_input(bad)


# --- flaky ---------------------------------------------------------------------------------
async def test_flaky_fails_its_first_attempts_then_succeeds(registry: KindRegistry) -> None:
    kind = kind_of(registry, "flaky")
    assert kind.retry is not None
    for attempt in (1, 2):
        with pytest.raises(RetryableError) as caught:
            await run(kind, {"fail_first": 2}, RecordingContext(attempt=attempt))
        assert caught.value.message == f"flaky: failing attempt {attempt} of the first 2, as asked"
        assert caught.value.retryable and kind.retry.retries(caught.value)
    ctx = RecordingContext(attempt=3)
    assert await run(kind, {"fail_first": 2}, ctx) == {"attempt": 3, "failed_before": 2}
    assert ctx.messages == ["attempt 3", "succeeded on attempt 3"]
    assert await run(kind, {"fail_first": 0}) == {"attempt": 1, "failed_before": 0}


async def test_flaky_crashes_and_permanent_failures(registry: KindRegistry) -> None:
    kind = kind_of(registry, "flaky")
    assert kind.retry is not None
    with pytest.raises(flaky.FlakyCrash) as crashed:
        await run(kind, {"fail_first": 1, "error": "crash"})
    assert kind.retry.retries(crashed.value)  # any exception is retried, as in Dramatiq
    with pytest.raises(PermanentError) as caught:
        await run(kind, {"permanent": True, "fail_first": 0}, RecordingContext(attempt=1))
    assert caught.value.reason == "FLAKY_PERMANENT" and not caught.value.retryable
    with pytest.raises(ValidationError):
        kind.parse_input({"fail_first": -1})
