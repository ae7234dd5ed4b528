"""Writes conveyor_client/sync.py, the blocking client, from conveyor_client/aio.py.

The two clients are one piece of code: request building, response mapping, paging,
watch resumption and error mapping are written once, in aio.py; the blocking client is
that file with `async`/`await` dropped and grpc.aio's calls turned into grpc's blocking
ones. Edit aio.py, then run

    python clients/python/unasync.py           # rewrites sync.py
    python clients/python/unasync.py --check   # exit 1 when sync.py is stale

tests/test_sdk_lean.py fails when sync.py is not what this writes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "conveyor_client"
SOURCE = PACKAGE / "aio.py"
TARGET = PACKAGE / "sync.py"

HEADER = '''"""The blocking client: the same methods as `AsyncConveyorClient`, returning values
and iterators where it returns awaitables and async iterators.

GENERATED from aio.py by clients/python/unasync.py; do not edit (edit aio.py, then run
`python clients/python/unasync.py`)."""

# ruff: noqa: UP028 (a stream's messages are yielded in a loop, as aio.py must)'''

# In order; each is a regular expression and what replaces it.
RULES: list[tuple[str, str]] = [
    (r"^import asyncio\n", ""),
    (r"await asyncio\.sleep\(", "time.sleep("),
    (r"\bgrpc\.aio\.AioRpcError\b", "grpc.RpcError"),
    (r"\bgrpc\.aio\.(secure_channel|insecure_channel)\b", r"grpc.\1"),
    # (keeping the import sorted)
    (r"^from collections\.abc import AsyncIterator, Iterable, Mapping$",
     "from collections.abc import Iterable, Iterator, Mapping"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncConveyorClient\b", "ConveyorClient"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\bfor asyncio code\b", "for blocking code"),
    (r"\basync (def|for|with) ", r"\1 "),
    (r"\bawait ", ""),
]
LEFTOVER = re.compile(r"\basync\b|\bawait\b|\basyncio\b|grpc\.aio\b|\bAsync[A-Z]\w*")


def transform(source: str) -> str:
    """sync.py's text from aio.py's."""
    if not source.startswith('"""'):
        raise ValueError("aio.py must start with its docstring")
    end = source.index('"""', 3) + 3
    text = source[end:]
    for pattern, replacement in RULES:
        text = re.sub(pattern, replacement, text, flags=re.M)
    leftover = sorted({m.group(0) for m in LEFTOVER.finditer(text)})
    if leftover:
        raise ValueError(f"aio.py has async constructs unasync.py does not turn into blocking ones: {leftover}")
    return HEADER + text


def main(argv: list[str]) -> int:
    expected = transform(SOURCE.read_text(encoding="utf-8"))
    if "--check" in argv:
        if TARGET.read_text(encoding="utf-8") != expected:
            print(f"{TARGET} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
