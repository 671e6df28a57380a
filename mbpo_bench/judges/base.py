"""What every judge backend offers: `id`, and `judge(prompts)` yielding replies as they come.

A `Reply` is what came back for one prompt: the text, or `error` with the raw body when the
reply could not be read (malformed body, no message); such replies are recorded as judge errors.
A backend that cannot reach its judge at all (connection refused, timeouts or 429/5xx after its
retries, a refused key) raises `JudgeUnavailable`: the run stops unfinished and resumable, and
every reply already received stays cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from mbpo_bench.errors import UserError


class JudgeUnavailable(UserError):
    """The judge cannot be reached or refuses every request (one line, naming the fix)."""


@dataclass(frozen=True)
class Reply:
    text: str | None
    error: str | None = None
    raw: str | None = None  # the body as received, kept for errors
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class Judge(Protocol):
    id: str  # "openai:MODEL" or "hf:PATH": part of the cache key and of results.json

    def judge(self, prompts: Sequence[str]) -> Iterator[tuple[int, Reply]]:
        """(index into `prompts`, reply) pairs, in any order, one per prompt."""
        ...
