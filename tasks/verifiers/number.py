"""Number answers: digits ("3", "-2.5", "1,000") or number words up to twenty ("three").

A response that names several different numbers ("2 or 3") hedges and has no answer; the same
number written twice ("3 (three)") is fine. Comparison is on the canonical text of the value, so
"3", "3.0" and "three" agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mbpo_bench.tasks.verifiers.text import NUMBER_WORDS, fold, format_number

_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?|[a-z]+")


def _values(text: str) -> list[float]:
    values: list[float] = []
    for token in _NUMBER.findall(fold(text)):
        if token[0].isalpha():
            if token in NUMBER_WORDS:
                values.append(float(NUMBER_WORDS[token]))
            continue
        try:
            values.append(float(token.replace(",", "")))
        except ValueError:  # pragma: no cover - the pattern only matches numerals
            continue
    return values


def parse(response: str, options: Sequence[str] = ()) -> str | None:
    del options
    distinct = {format_number(v) for v in _values(response)}
    return distinct.pop() if len(distinct) == 1 else None


def canonical(target: str, options: Sequence[str] = ()) -> str | None:
    return parse(target, options)
