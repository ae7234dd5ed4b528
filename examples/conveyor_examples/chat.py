"""`chat` and `chat-batch`: the jobs of an AI-agent chat queue.

A `chat` job is a conversation (its messages, oldest first, and any metadata); its
output is the assistant's reply:

    {"queue": "default", "kind": {"name": "chat", "input": {
        "messages": [{"role": "user", "content": "what is 6 * 7?"}],
        "metadata": {"session": "s-1"}}}}
    -> {"reply": {"role": "assistant", "content": "6 * 7 = 42"}, "turns": 1,
        "metadata": {"session": "s-1"}}

Who writes the reply is a *responder*: anything with a `name` and an async
`reply(messages, ctx)` (the `Responder` protocol). Responders register by name with
`register_responder`; a job picks one with `"responder": "echo"`, else the executor's
CONVEYOR_CHAT_RESPONDER, else `local`. Two ship here and run without any model
service: `local` (deterministic rules: greetings, arithmetic, recaps, reflection) and
`echo`. A responder for a real model service is a class of a few lines that calls its
API (and raises RetryableError when the service is down), registered the same way.

`chat-batch` answers many conversations in one job, a reply each, with progress
"conversation i of n"; a conversation that cannot be answered gets an `error` instead
of a reply, and the others go on.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from conveyor.kinds import JobContext, PermanentError, Retry, job_kind

#: Picks the responder when a job names none.
RESPONDER_ENV = "CONVEYOR_CHAT_RESPONDER"
#: Seconds the local responder "thinks" (a stand-in for a model's latency).
THINK_ENV = "CONVEYOR_CHAT_THINK_SECONDS"
DEFAULT_RESPONDER = "local"
DEFAULT_THINK_SECONDS = 0.05


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=100_000)


class ChatInput(BaseModel):
    """One conversation, oldest message first; the reply answers its last user message."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1, max_length=1000)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Returned as it is with the reply.")
    responder: str | None = Field(default=None, description="A registered responder; default: local.")


class Conversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="Returned with its reply.")
    messages: list[Message] = Field(min_length=1, max_length=1000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ChatBatchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversations: list[Conversation] = Field(min_length=1, max_length=1000)
    responder: str | None = None


# --- responders ------------------------------------------------------------------------
class Responder(Protocol):
    """Writes the assistant's next message of a conversation."""

    name: str

    async def reply(self, messages: Sequence[Message], ctx: JobContext) -> str: ...


_RESPONDERS: dict[str, Responder] = {}


def register_responder(responder: Responder) -> Responder:
    """Make `responder` available by its name (a later one of the same name replaces it)."""
    _RESPONDERS[responder.name] = responder
    return responder


def responder_names() -> list[str]:
    return sorted(_RESPONDERS)


def get_responder(name: str | None = None) -> Responder:
    """The responder `name`, else the one CONVEYOR_CHAT_RESPONDER names, else `local`.
    An unknown name is a PermanentError: trying again would not help."""
    chosen = name or os.environ.get(RESPONDER_ENV) or DEFAULT_RESPONDER
    try:
        return _RESPONDERS[chosen]
    except KeyError:
        raise PermanentError(
            f"chat: no responder {chosen!r} (registered: {', '.join(responder_names())})",
            reason="UNKNOWN_RESPONDER",
        ) from None


def last_user_message(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            return message.content.strip()
    raise PermanentError("chat: the conversation has no user message to answer", reason="NO_USER_MESSAGE")


_REFLECTIONS = {
    "i": "you", "me": "you", "my": "your", "mine": "yours", "am": "are", "i'm": "you're",
    "myself": "yourself", "you": "I", "your": "my", "yours": "mine", "are": "am", "you're": "I'm",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z']+|[^A-Za-z']+")
_GREETING = re.compile(r"^\s*(hello|hi|hey|good (morning|afternoon|evening))\b", re.IGNORECASE)
_ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/x\u00d7\u00f7])\s*(-?\d+(?:\.\d+)?)")
_RECAP = re.compile(r"\b(what did i (say|ask)|recap|summari[sz]e)\b", re.IGNORECASE)


def reflect(text: str) -> str:
    """ "I am tired of my job" -> "you are tired of your job"."""
    return "".join(_REFLECTIONS.get(part.lower(), part) for part in _WORD.findall(text))


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


def _arithmetic(text: str) -> str | None:
    match = _ARITHMETIC.search(text)
    if not match:
        return None
    a, op, b = float(match.group(1)), match.group(2), float(match.group(3))
    if op in ("/", "\u00f7"):
        if b == 0:
            return f"{_number(a)} / 0 has no value: division by zero."
        value = a / b
    elif op in ("*", "x", "\u00d7"):
        value = a * b
    elif op == "+":
        value = a + b
    else:
        value = a - b
    shown = {"x": "*", "\u00d7": "*", "\u00f7": "/"}.get(op, op)
    return f"{_number(a)} {shown} {_number(b)} = {_number(value)}"


class LocalResponder:
    """Deterministic rules that answer from the conversation itself, with a short
    simulated think time: greetings, arithmetic ("what is 6 * 7?"), a recap of what
    the user said ("what did I say?"), and otherwise the last message reflected back.
    A system message that asks for upper case is honoured (personas, in miniature)."""

    name = "local"

    def __init__(self, think_seconds: float | None = None) -> None:
        self._think_seconds = think_seconds

    @property
    def think_seconds(self) -> float:
        if self._think_seconds is not None:
            return self._think_seconds
        return float(os.environ.get(THINK_ENV, DEFAULT_THINK_SECONDS))

    async def reply(self, messages: Sequence[Message], ctx: JobContext) -> str:
        text = last_user_message(messages)
        await asyncio.sleep(self.think_seconds)  # a model would take its time here
        answer = self.answer(messages, text)
        system = " ".join(m.content for m in messages if m.role == "system").lower()
        return answer.upper() if "upper case" in system or "uppercase" in system else answer

    @staticmethod
    def answer(messages: Sequence[Message], text: str) -> str:
        if _GREETING.match(text):
            return "Hello! How can I help you today?"
        if (computed := _arithmetic(text)) is not None:
            return computed
        if _RECAP.search(text):
            earlier = [m.content.strip() for m in messages if m.role == "user" and m.content.strip()][:-1]
            if not earlier:
                return "This is the first thing you said."
            return "So far you said: " + "; ".join(f"{i}) {t}" for i, t in enumerate(earlier, 1))
        if text.endswith("?"):
            return f"You ask: {reflect(text)} I am a local responder without a model, so I cannot know."
        return f"You said: {reflect(text)}"


class EchoResponder:
    """Answers with the last user message, as it is."""

    name = "echo"

    async def reply(self, messages: Sequence[Message], ctx: JobContext) -> str:
        return last_user_message(messages)


register_responder(LocalResponder())
register_responder(EchoResponder())


# --- the kinds -------------------------------------------------------------------------
def _turns(messages: Sequence[Message]) -> int:
    """User turns answered, counting this one."""
    return sum(1 for m in messages if m.role == "user")


async def _answer(messages: Sequence[Message], responder: Responder, ctx: JobContext) -> dict[str, Any]:
    content = await responder.reply(messages, ctx)
    return {"role": "assistant", "content": content}


@job_kind("chat", input=ChatInput, retry=Retry(attempts=3, backoff="exponential", base="1s", max="10s"), timeout="2m")
async def chat(ctx: JobContext, input: ChatInput) -> dict[str, Any]:
    """Answer a conversation: its messages in, the assistant's reply out."""
    responder = get_responder(input.responder)
    last_user_message(input.messages)  # no user message: fail before "thinking"
    await ctx.progress(10, "thinking...")
    ctx.log.info("chat.reply", responder=responder.name, messages=len(input.messages))
    reply = await _answer(input.messages, responder, ctx)
    await ctx.progress(90, "replying...")
    return {"reply": reply, "turns": _turns(input.messages), "metadata": input.metadata}


@job_kind("chat-batch", input=ChatBatchInput, retry=Retry(attempts=2, backoff="fixed", base="2s"), timeout="30m")
async def chat_batch(ctx: JobContext, input: ChatBatchInput) -> dict[str, Any]:
    """Answer many conversations, a reply each (or an error for one that has none)."""
    responder = get_responder(input.responder)
    total = len(input.conversations)
    replies: list[dict[str, Any]] = []
    failed = 0
    for i, conversation in enumerate(input.conversations, 1):
        await ctx.progress(100 * (i - 1) // total, f"conversation {i} of {total}")
        item: dict[str, Any] = {"id": conversation.id, "metadata": conversation.metadata}
        try:
            item["reply"] = await _answer(conversation.messages, responder, ctx)
            item["turns"] = _turns(conversation.messages)
        except PermanentError as err:  # this conversation cannot be answered; the rest can
            failed += 1
            item["error"] = err.message
        replies.append(item)
    await ctx.progress(100, f"answered {total - failed} of {total}")
    return {"replies": replies, "answered": total - failed, "failed": failed}
