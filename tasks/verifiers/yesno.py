"""Yes/no answers: "Yes, there is a dog." -> yes; hedged or negated answers -> None.

Rules, in order:
1. A hedge has no answer: yes and no joined as alternatives ("yes or no", "Yes and no.",
   "yes/no", "no & yes"; "Yes, and no cat is there" is yes), or opposite one-word clauses
   ("Yes. No.", "Yes\\nNo"), or words of uncertainty ("not sure", "maybe", "perhaps", "possibly",
   "probably", "unsure", "uncertain", "I don't know", "hard to say", "can't tell").
2. A negated yes/no word has no answer: "not", "never" or an "n't" contraction at most three
   words before it in the same clause ("Not yes", "I would not say yes", "I don't think no").
   A negation elsewhere does not count ("No, there is not a dog." is no).
3. A leading yes/no word decides ("No, there is no cat" is no; "Yes, but no cat" is yes).
4. Otherwise the answer is whichever of yes/no occurs alone ("The answer is no.").
Synonyms count: true/correct/yeah/yep for yes, false/incorrect/nope for no. A response that
mentions neither, or both without a leading word, has no answer. No answer means no credit and
a format reward of 0, so a GRPO policy gains nothing by hedging.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mbpo_bench.tasks.verifiers.text import fold, words

_YES = frozenset({"yes", "yeah", "yep", "true", "correct"})
_NO = frozenset({"no", "nope", "false", "incorrect"})
_LABEL = r"(?:yes|no|yeah|yep|nope|true|false|correct|incorrect)"
# Two labels joined as alternatives: "yes or no", "no, or yes", "yes/no"; with "and" ("Yes and
# no.") only when the second label ends its clause, so "Yes, and no cat is there" stays yes.
_ALTERNATIVES = re.compile(
    rf"\b{_LABEL}\s*(?:,?\s*(?:or|vs\.?|versus)\b|/|\|)\s*(?:{_LABEL}|not)\b"
    rf"|\b{_LABEL}\s*,?\s*(?:and|nor|&)\s*(?:{_LABEL}|not)\s*(?:[.,;:!?)\n]|$)"
)
_UNCERTAIN = re.compile(
    r"\b(?:not\s+(?:sure|certain)|unsure|uncertain|maybe|perhaps|possibly|probably|"
    r"(?:do\s+not|don'?t)\s+know|not\s+clear|unclear|hard\s+to\s+(?:say|tell)|"
    r"difficult\s+to\s+(?:say|tell)|(?:can'?t|cannot|can\s+not)\s+(?:tell|say|be\s+sure))\b"
)
# One clause: text between punctuation marks; a negation only reaches labels in its own clause.
_CLAUSE = re.compile(r"[^.,;:!?()\[\]\n]+")
_NEGATORS = frozenset({"not", "never"})
_NEGATION_REACH = 3  # words between the negation and the label it negates, at most


def _label(word: str) -> str | None:
    if word in _YES:
        return "yes"
    if word in _NO:
        return "no"
    return None


def _negates(word: str) -> bool:
    return word in _NEGATORS or word.endswith("n't")


def _negated_label(text: str) -> bool:
    """Whether some yes/no word has a negation shortly before it in its clause."""
    for clause in _CLAUSE.findall(text):
        tokens = words(clause)
        for i, token in enumerate(tokens):
            if _label(token) is None:
                continue
            before = tokens[max(0, i - _NEGATION_REACH - 1) : i]
            if any(_negates(w) for w in before):
                return True
    return False


def _bare_labels(text: str) -> set[str]:
    """The labels of clauses that are a yes/no word alone ("Yes. No." gives both)."""
    out = set()
    for clause in _CLAUSE.findall(text):
        tokens = words(clause)
        if len(tokens) == 1 and (label := _label(tokens[0])) is not None:
            out.add(label)
    return out


def parse(response: str, options: Sequence[str] = ()) -> str | None:
    del options
    text = fold(response).replace("’", "'")
    if _ALTERNATIVES.search(text) or _UNCERTAIN.search(text) or _negated_label(text):
        return None
    if len(_bare_labels(text)) > 1:
        return None  # "Yes. No.", "Yes\nNo": two opposite answers
    tokens = words(text)
    if not tokens:
        return None
    first = _label(tokens[0])
    if first is not None:
        return first
    found = {label for token in tokens if (label := _label(token)) is not None}
    return found.pop() if len(found) == 1 else None


def canonical(target: str, options: Sequence[str] = ()) -> str | None:
    return parse(target, options)
