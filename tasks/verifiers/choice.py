"""Multiple-choice answers: a letter ("B", "(b)", "The answer is (B).") or an option's text.

The canonical answer is the option letter. Letters are valid up to the number of options (A-E
when no options are given). A capital letter counts as a choice when it stands alone: the whole
response, in brackets, or followed by punctuation or by a word that is not a noun phrase. The
article "A"/"a" in "A red circle" is NOT read as option A (lmms-eval's MMVP parser does read it
that way; see tasks/mmvp/README.md). Several different letters are a hedge, whatever separates
them ("A or C", "B C", "B, C", "B/C", "B\\nC"): no answer, so no credit and format reward 0.
Without any letter, an option's text mentioned alone ("red", "It is red.") selects that option;
when several options are mentioned, the longest wins only if it contains the others ("dark red"
over "red"), otherwise the response hedges.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from mbpo_bench.tasks.verifiers.text import contains_phrase, nfkc, normalize_phrase, words

_DEFAULT_LETTERS = "ABCDE"
# A bracketed letter, any case: (b) [B] {c}
_BRACKETED = re.compile(r"[(\[{]\s*([A-Za-z])\s*[)\]}]")
# A capital letter standing alone as a token; the following text (read by a lookahead, so a
# second letter right after it, as in "B C", is matched on its own) decides whether it is a choice.
_CAPITAL = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])(?=(\s*)([A-Za-z]*))")
# Words after "A"/"I" that show the letter is still a choice ("A is correct", "A or C").
_AFTER_CHOICE = frozenset({"is", "or", "and", "seems", "would", "because", "since", "as"})


def letters_for(options: Sequence[str]) -> str:
    return string.ascii_uppercase[: len(options)] if options else _DEFAULT_LETTERS


def _letter_choices(response: str, valid: str) -> set[str]:
    stripped = response.strip().strip(".:;!,\"'*` \t\n")
    if len(stripped) == 1 and stripped.upper() in valid:
        return {stripped.upper()}
    found = {m.group(1).upper() for m in _BRACKETED.finditer(response)}
    for match in _CAPITAL.finditer(response):
        letter, space, following = match.groups()
        if letter not in valid:
            continue
        if (
            letter in "AI"
            and space
            and following
            and following.lower() not in _AFTER_CHOICE
            and not (len(following) == 1 and following in valid)  # "A C": two letters
        ):
            continue  # an article or a pronoun: "A red circle", "I think"
        found.add(letter)
    return {f for f in found if f in valid}


def _text_choice(response: str, options: Sequence[str], valid: str) -> str | None:
    tokens = words(response)
    hits = [
        (normalize_phrase(option), valid[i])
        for i, option in enumerate(options)
        if normalize_phrase(option) and contains_phrase(tokens, normalize_phrase(option))
    ]
    if not hits:
        return None
    letters = {letter for _, letter in hits}
    if len(letters) == 1:
        return letters.pop()
    longest, letter = max(hits, key=lambda hit: len(hit[0]))
    if all(contains_phrase(longest.split(), other) for other, _ in hits):
        return letter
    return None


def parse(response: str, options: Sequence[str] = ()) -> str | None:
    valid = letters_for(options)
    choices = _letter_choices(nfkc(response), valid)
    if len(choices) == 1:
        return choices.pop()
    if len(choices) > 1:
        return None
    return _text_choice(response, options, valid) if options else None


def canonical(target: str, options: Sequence[str] = ()) -> str | None:
    """The target's letter: given as a letter, or as the text of one of `options`."""
    valid = letters_for(options)
    stripped = target.strip().strip("().:[] ")
    if len(stripped) == 1 and stripped.upper() in valid:
        return stripped.upper()
    wanted = normalize_phrase(target)
    for i, option in enumerate(options):
        if normalize_phrase(option) == wanted and wanted:
            return valid[i]
    return parse(target, options)
