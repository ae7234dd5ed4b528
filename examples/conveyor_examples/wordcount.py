"""`wordcount`: a blocking kind (a plain `def`, run on a thread of its own) doing real
CPU work: the word frequencies of the texts given, or of a corpus it generates.

    {"kind": {"name": "wordcount", "input": {"texts": ["the cat", "the hat"], "top": 2}}}
    -> {"words": 4, "distinct": 3, "top": [{"word": "the", "count": 2}, ...], ...}

    {"kind": {"name": "wordcount", "input": {"generate": {"words": 2000000, "seed": 7}}}}

It reports progress as it goes and calls `ctx.check_cancelled()` between chunks, so a
cancel (or the time limit) stops it within one chunk. Input the schema cannot rule
out (no texts and nothing to generate, texts without a single word) is a
PermanentError: no retry would help. Its retry policy: 2 attempts, 1 s apart.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.kinds import BlockingJobContext, PermanentError, Retry, job_kind

#: Words counted between two progress reports / cancellation checks.
CHUNK_WORDS = 50_000
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fi", "gu", "he", "jo", "be")


class Generate(BaseModel):
    """A corpus of `words` words drawn (Zipf-like: a few words are very common) from
    a vocabulary of `vocabulary` made-up words, the same for the same `seed`."""

    model_config = ConfigDict(extra="forbid")

    words: int = Field(ge=1, le=50_000_000)
    seed: int = 0
    vocabulary: int = Field(default=5_000, ge=1, le=1_000_000)


class WordcountInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(default_factory=list, max_length=10_000, description="Texts to count the words of.")
    generate: Generate | None = Field(default=None, description="Or: count the words of a generated corpus.")
    top: int = Field(default=10, ge=1, le=1000, description="How many of the most frequent words to return.")
    min_length: int = Field(default=1, ge=1, le=100, description="Shorter words are not counted.")
    case_sensitive: bool = False


def _made_up_word(i: int) -> str:
    syllables = []
    while True:
        syllables.append(_SYLLABLES[i % len(_SYLLABLES)])
        i //= len(_SYLLABLES)
        if i == 0:
            return "".join(syllables)


def generated_corpus(spec: Generate) -> Iterator[tuple[list[str], int]]:
    """The corpus in chunks of at most CHUNK_WORDS words, each with the number of
    words generated so far."""
    rng = random.Random(spec.seed)
    vocabulary = [_made_up_word(i) for i in range(spec.vocabulary)]
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(spec.vocabulary)))
    done = 0
    while done < spec.words:
        n = min(spec.words - done, CHUNK_WORDS)
        done += n
        yield rng.choices(vocabulary, cum_weights=cumulative, k=n), done


def _text_chunks(texts: list[str]) -> Iterator[tuple[list[str], int]]:
    """The words of the texts in chunks of about CHUNK_WORDS, each with the number of
    characters read so far."""
    chunk: list[str] = []
    read = 0
    for text in texts:
        for match in _WORD.finditer(text):
            chunk.append(match.group())
            if len(chunk) >= CHUNK_WORDS:
                yield chunk, read + match.end()
                chunk = []
        read += len(text)
    if chunk:
        yield chunk, read


@job_kind("wordcount", input=WordcountInput, retry=Retry(attempts=2, backoff="fixed", base="1s"), timeout="10m")
def wordcount(ctx: BlockingJobContext, input: WordcountInput) -> dict[str, Any]:
    """Count the words of texts (or of a generated corpus): totals and the top k."""
    if input.texts and input.generate is not None:
        raise PermanentError("wordcount: give `texts` or `generate`, not both", reason="BAD_INPUT")
    if input.generate is not None:
        total = input.generate.words
        chunks = generated_corpus(input.generate)
        source = f"a generated corpus of {total:,} words"
    else:
        if not any(text.strip() for text in input.texts):
            raise PermanentError("wordcount: `texts` is empty (or only blank); nothing to count", reason="BAD_INPUT")
        total = sum(len(text) for text in input.texts)  # progress in characters read
        chunks = _text_chunks(input.texts)
        source = f"{len(input.texts)} text(s)"
    ctx.progress(0, f"counting the words of {source}")
    counts: Counter[str] = Counter()
    seen_words = 0
    for chunk, done in chunks:
        ctx.check_cancelled()
        words = chunk if input.case_sensitive else [w.lower() for w in chunk]
        if input.min_length > 1:
            words = [w for w in words if len(w) >= input.min_length]
        counts.update(words)
        seen_words += len(chunk)
        ctx.progress(min(99, 100 * done // max(1, total)), f"{seen_words:,} words counted")
    ctx.check_cancelled()
    if not counts:
        raise PermanentError(
            f"wordcount: no words of at least {input.min_length} letters in {source}", reason="NO_WORDS"
        )
    top = counts.most_common(input.top)  # k above the number of distinct words: all of them
    ctx.log.info("wordcount.done", words=sum(counts.values()), distinct=len(counts))
    return {
        "words": sum(counts.values()),
        "distinct": len(counts),
        "top": [{"word": word, "count": count} for word, count in top],
        "source": source,
    }
