"""lmms-eval 0.7.3's shared multiple-choice letter extraction (`_task_utils/mcq_extract.py`,
used by MMStar and RealWorldQA), re-implemented: same rules, same outcome on every string.

The rules: strip the response, then strip each of , . ! ? ; : ' " in turn (one character kind
at a time), pad with one space each side, and collect candidates (letter, position, form):
"(X)", "X.", "X:", "X)", "X " (each at the LAST occurrence), a letter after an answer phrase
("the answer is", ... first occurrence of the phrase, then the first uppercase letter after
it), the response starting with a standalone letter (position 0) or ending with one (the last
position). Only when none of those exist, any occurrence of a letter at all (its last one).
The winner has the highest form priority, then the latest position. No candidate gives "".

Consequences worth knowing (they are why `_lmms` differs from our verifier): only uppercase
letters are searched, so "b" alone is no answer; the article "A" in "A dog" is the letter A
(a leading letter beats every other form, so "B C" is B); the first capital of a word ("Cat")
counts when nothing else matched.
"""

from __future__ import annotations

from collections.abc import Sequence

_EDGE_CHARS = (",", ".", "!", "?", ";", ":", "'", '"')
# Surrounding text of each letter form, and how much a form is trusted (higher wins).
_FORMS = (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2))
_PHRASE, _START, _END = 7, 10, 9
ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is",
    "the best answer is", "best answer is", "the correct option is", "correct option is",
    "the best option is", "best option is", "the choice is", "choice is",
    "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is",
    "옵션", "정답은", "답은", "답:",  # Korean
    "答案是", "答案为", "选",  # Chinese
    "答えは",  # Japanese
)  # fmt: skip


def extract_letter(response: str, letters: Sequence[str] = "ABCDEFGH") -> str:
    """The letter lmms-eval's `extract_mcq_answer` reads from `response`, or ""."""
    if not response.strip():
        return ""
    core = response.strip()
    for char in _EDGE_CHARS:
        core = core.strip(char)
    text = f" {core} "
    best: tuple[int, int] | None = None  # (priority, position) of the winner so far
    winner = ""

    def offer(letter: str, position: int, priority: int) -> None:
        nonlocal best, winner
        if best is None or (priority, position) > best:  # ties keep the earlier candidate
            best, winner = (priority, position), letter

    for pattern, priority in _FORMS:
        for letter in letters:
            form = pattern.format(letter)
            if form in text:
                offer(letter, text.rfind(form), priority)
    lowered = text.lower()  # positions found in the lowered text index the original, as there
    for phrase in ANSWER_PHRASES:
        at = lowered.find(phrase)
        if at < 0:
            continue
        for letter in letters:
            position = text.find(letter, at + len(phrase))
            if position >= 0:
                offer(letter, position, _PHRASE)
    bare = text.strip()
    for letter in letters:
        if bare.startswith(letter) and (len(bare) == 1 or not bare[1].isalpha()):
            offer(letter, 0, _START)
    for letter in letters:
        if bare.endswith(letter) and (len(bare) == 1 or not bare[-2].isalpha()):
            offer(letter, len(text) - 1, _END)
    if best is None:
        for letter in letters:
            if letter in text:
                offer(letter, text.rfind(letter), 0)
    return winner
