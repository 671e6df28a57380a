"""Verifiers: one function decides both "was this answer right?" (evaluation) and "what reward?"
(GRPO), so the metric and the training signal cannot drift apart.

Standard library only: the CLI imports this at start-up, lmms-eval calls it from
`process_results`, trainers call it per sampled response. Kinds (`VERIFIERS`):

- ``yesno``            yes / no
- ``multiple_choice``  option letters A.. or an option's text; the target may be either
- ``number``           digits or number words
- ``short_word``       a word or short phrase, optionally from a fixed vocabulary (`options`)

A hedge ("yes or no", "A or C", "2 or 3") parses as None and scores 0. `reward` is GRPO's reward
of method.md: correctness (0/1) + format (0/1: an answer in the expected form within
`max_words` words), at most 2.
"""

from __future__ import annotations

from collections.abc import Sequence

from mbpo_bench.tasks.verifiers import choice, number, short_word, yesno
from mbpo_bench.tasks.verifiers.base import Verdict, VerifierKind
from mbpo_bench.tasks.verifiers.text import word_count

from mbpo_bench.errors import UserError, did_you_mean

__all__ = [
    "DEFAULT_MAX_WORDS",
    "VERIFIERS",
    "Verdict",
    "VerifierKind",
    "format_reward",
    "get_verifier",
    "parse",
    "reward",
    "verify",
]

# Default length limit of the format reward (a config field of the trainers overrides it).
DEFAULT_MAX_WORDS = 10

VERIFIERS: dict[str, VerifierKind] = {
    kind.name: kind
    for kind in (
        VerifierKind("yesno", "yes or no", yesno.parse, yesno.canonical),
        VerifierKind(
            "multiple_choice", "an option letter or option text", choice.parse, choice.canonical
        ),
        VerifierKind("number", "a number (digits or words)", number.parse, number.canonical),
        VerifierKind(
            "short_word", "a short word or phrase", short_word.parse, short_word.canonical
        ),
    )
}


def get_verifier(name: str) -> VerifierKind:
    try:
        return VERIFIERS[name]
    except KeyError:
        raise UserError(
            f"unknown verifier '{name}'{did_you_mean(name, VERIFIERS)} — "
            f"choose one of: {', '.join(VERIFIERS)}"
        ) from None


def parse(verifier: str, response: str, options: Sequence[str] = ()) -> str | None:
    """The canonical answer in `response`, or None (no answer or a hedge)."""
    return get_verifier(verifier).parse(response, tuple(options))


def format_reward(
    verifier: str,
    response: str,
    options: Sequence[str] = (),
    *,
    max_words: int = DEFAULT_MAX_WORDS,
) -> float:
    """1.0 if `response` holds one answer of the expected form within `max_words` words."""
    if word_count(response) > max_words:
        return 0.0
    return 0.0 if parse(verifier, response, options) is None else 1.0


def verify(
    verifier: str,
    response: str,
    target: str,
    options: Sequence[str] = (),
    *,
    max_words: int = DEFAULT_MAX_WORDS,
) -> Verdict:
    """Check `response` against `target`; raises UserError when the target itself is no answer."""
    kind = get_verifier(verifier)
    options = tuple(options)
    wanted = kind.canonical(target, options)
    if wanted is None:
        raise UserError(
            f"target {target!r} is not a valid {kind.name} answer ({kind.description})"
            f"{' for options ' + repr(list(options)) if options else ''} — fix the reference answer"
        )
    parsed = kind.parse(response, options)
    correct = parsed is not None and parsed == wanted
    score = 1.0 if correct else 0.0
    fmt = format_reward(verifier, response, options, max_words=max_words)
    return Verdict(score, correct, parsed, {"correctness": score, "format": fmt})


def reward(
    verifier: str,
    response: str,
    target: str,
    options: Sequence[str] = (),
    *,
    max_words: int = DEFAULT_MAX_WORDS,
) -> float:
    """GRPO's reward: correctness + format, in {0, 1, 2}."""
    verdict = verify(verifier, response, target, options, max_words=max_words)
    return verdict.components["correctness"] + verdict.components["format"]
