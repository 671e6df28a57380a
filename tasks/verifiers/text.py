"""Text helpers shared by the verifiers: word splitting, normalisation, number reading.

Standard library only (the verifiers are imported by the CLI at start-up and by lmms-eval's
`process_results` in a thread pool). Every helper is total: any string in, a value out, no raise.
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_ARTICLES = frozenset({"a", "an", "the"})
# Leading boilerplate that models put in front of a short answer.
_LEADS = re.compile(
    r"^\s*(?:(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|:)?|it\s+is|it's|this\s+is|"
    r"that\s+is|i\s+think(?:\s+it\s+is)?|i\s+see)\s*[:\-]?\s*",
    re.IGNORECASE,
)

NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}  # fmt: skip


def nfkc(text: str) -> str:
    """NFKC-normalised text, case kept (full-width letters and digits become ASCII)."""
    return unicodedata.normalize("NFKC", text)


def fold(text: str) -> str:
    """Lower-case, NFKC-normalised text (full-width letters and digits become ASCII)."""
    return unicodedata.normalize("NFKC", text).casefold()


def words(text: str) -> list[str]:
    """Lower-case word tokens; punctuation is dropped."""
    return _WORD.findall(fold(text))


def word_count(text: str) -> int:
    return len(text.split())


def strip_leads(text: str) -> str:
    """Drop 'The answer is', 'Answer:', 'It is' ... in front of a short answer (repeatedly)."""
    previous = None
    while previous != text:
        previous = text
        text = _LEADS.sub("", text, count=1)
    return text


def normalize_phrase(text: str) -> str:
    """Words joined by single spaces, articles and leading boilerplate removed (an article
    alone, like the answer "A", is kept)."""
    tokens = words(strip_leads(text)) or words(text)
    kept = [w for w in tokens if w not in _ARTICLES]
    return " ".join(kept or tokens)


def contains_phrase(haystack_words: list[str], phrase: str) -> bool:
    """Whether the normalised `phrase` occurs as a run of whole words in `haystack_words`."""
    needle = phrase.split()
    if not needle:
        return False
    n = len(needle)
    return any(haystack_words[i : i + n] == needle for i in range(len(haystack_words) - n + 1))


def format_number(value: float) -> str:
    """Canonical text of a number: integers without a decimal point, others via repr."""
    if value != value or value in (float("inf"), float("-inf")):
        return repr(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
