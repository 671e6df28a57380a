"""Yes/no answers: "Yes, there is a dog." -> yes; "yes or no" -> None (a hedge).

Rules, in order: an explicit alternative ("yes or no", "yes/no") is a hedge; otherwise a leading
yes/no word decides ("No, there is no cat" is no; "Yes, but no cat" is yes); otherwise the answer
is whichever of yes/no occurs alone ("The answer is no."). Synonyms count: true/correct/yeah for
yes, false/incorrect/nope for no. A response that mentions neither, or both without a leading
word, has no answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mbpo_bench.tasks.verifiers.text import fold, words

_YES = frozenset({"yes", "yeah", "yep", "true", "correct"})
_NO = frozenset({"no", "nope", "false", "incorrect"})
_HEDGE = re.compile(r"\b(yes|no)\s*(?:,?\s*or|/|\|)\s*(yes|no|not)\b")


def _label(word: str) -> str | None:
    if word in _YES:
        return "yes"
    if word in _NO:
        return "no"
    return None


def parse(response: str, options: Sequence[str] = ()) -> str | None:
    del options
    if _HEDGE.search(fold(response)):
        return None
    tokens = words(response)
    if not tokens:
        return None
    first = _label(tokens[0])
    if first is not None:
        return first
    found = {label for token in tokens if (label := _label(token)) is not None}
    return found.pop() if len(found) == 1 else None


def canonical(target: str, options: Sequence[str] = ()) -> str | None:
    return parse(target, options)
