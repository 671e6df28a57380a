"""Short-word answers ("circle", "It is a circle.", "The colour is red").

With `options` (the answer vocabulary, e.g. all colour words) the answer is the one option the
response mentions as whole words; several different ones are a hedge. Without options the answer
is the response itself after dropping boilerplate ("The answer is"), articles and punctuation,
provided that leaves at most `MAX_FREE_WORDS` words: a longer sentence has no short answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from mbpo_bench.tasks.verifiers.text import contains_phrase, normalize_phrase, words

MAX_FREE_WORDS = 3


def parse(response: str, options: Sequence[str] = ()) -> str | None:
    if options:
        tokens = words(response)
        hits = {
            normalize_phrase(option)
            for option in options
            if normalize_phrase(option) and contains_phrase(tokens, normalize_phrase(option))
        }
        if len(hits) == 1:
            return hits.pop()
        longest = max(hits, key=len, default=None)
        if longest is not None and all(contains_phrase(longest.split(), h) for h in hits):
            return longest
        return None
    cleaned = normalize_phrase(response)
    return cleaned if cleaned and len(cleaned.split()) <= MAX_FREE_WORDS else None


def canonical(target: str, options: Sequence[str] = ()) -> str | None:
    del options
    return normalize_phrase(target) or None
