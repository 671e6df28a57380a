"""The verdict type and the contract every verifier kind meets.

A verifier kind is two pure functions: `parse(response, options)` extracts the answer in a
canonical form (or None when there is none, or when the response hedges between several), and
`canonical(target, options)` brings the reference answer into the same form. Correctness is then
string equality of the two canonical forms, so evaluation metrics and GRPO rewards cannot drift
apart (one verifier serves both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Parser = Callable[[str, Sequence[str]], str | None]


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one response: `score` in [0, 1] is correctness."""

    score: float
    correct: bool
    parsed: str | None
    components: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifierKind:
    name: str
    description: str
    parse: Parser
    canonical: Parser
