"""Per-sample verdicts under lmms-eval 0.7.3's own answer parsing, one function per task.

Each rule is `rule(response, doc) -> {"pred": str, "gt": str, "correct": bool}`: `doc` is our
lmms-eval doc (`mbpo_bench.tasks.common.item_to_doc`: `answer` is the item's reference as the
dataset gives it, after the adapter), `pred` is what lmms-eval reads from the response and `gt`
what it compares it with. Each docstring names the lmms-eval function whose rule it re-implements
(files under `lmms_eval/tasks/` of lmms-eval 0.7.3); the parity tests hold them equal item by item.
Standard library only.
"""

from __future__ import annotations

import re
import string
from typing import Any

from mbpo_bench.tasks.lmms_compat.mcq import extract_letter

Verdict = dict[str, Any]
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _verdict(pred: str, gt: str) -> Verdict:
    return {"pred": pred, "gt": gt, "correct": pred == gt}


def pope(response: str, doc: dict[str, Any]) -> Verdict:
    """`pope/utils.py:pope_process_results`: the lower-cased, stripped response must equal
    "yes" or "no" exactly ("Yes." is wrong)."""
    return _verdict(response.lower().strip(), str(doc["answer"]).lower().strip())


def _mme_label(response: str) -> str:
    text = response.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]  # "yes" or else "no" anywhere in the first four characters
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def mme(response: str, doc: dict[str, Any]) -> Verdict:
    """`mme/utils.py:parse_pred_ans`: dots removed; "yes"/"no", "y"/"n", else "yes" (then "no")
    within the first four characters ("Not at all" and "None" are no, "yes or no" is yes)."""
    return _verdict(_mme_label(response), str(doc["answer"]).lower().strip().replace(".", ""))


_LEADING_LETTER = re.compile(r"^\s*([A-Z])\.")


def _exact_match_form(text: str) -> str:
    """lmms-eval's `exact_match` with ignore_case and ignore_punctuation, numpy's fixed-width
    strings included: lower-casing cannot make a string longer than it was ("İ" lower-cases to
    two characters and pushes the last one out), and trailing NUL characters never count."""
    width = len(text)
    lowered = text.rstrip("\x00").lower()[:width]
    return lowered.translate(_PUNCTUATION).rstrip("\x00")


def ai2d(response: str, doc: dict[str, Any]) -> Verdict:
    """`ai2d/ai2d.yaml`: its `MultiChoiceRegexFilter` keeps the letter of a leading "X." and
    otherwise the whole response; the task strips it; `exact_match` (ignore case, ignore
    punctuation) against the letter. So "(b)" and "**B**" are right, "The answer is B" is not."""
    match = _LEADING_LETTER.match(response)
    filtered = (match.group(1) if match else response).strip()
    return _verdict(_exact_match_form(filtered), _exact_match_form(str(doc["answer"])))


def mmstar(response: str, doc: dict[str, Any]) -> Verdict:
    """`mmstar/utils.py:exact_match`: `extract_mcq_answer` over the letters A-D."""
    return _verdict(extract_letter(response, "ABCD"), str(doc["answer"]).strip().upper())


# `mmvp/utils.py:_extract_answer_letter`: the first of these that matches (case-insensitive)
# gives the letter; else the first character if it is a/b; else no letter.
_MMVP_FORMS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^\s*\(?([AB])\)?\.?\s*$",  # the letter alone, maybe bracketed or with a dot
        r"^\s*\(?([AB])\)?[\.\s]",  # a letter opening the response
        r"answer\s+is\s+\(?([AB])\)?",
        r"option\s+\(?([AB])\)?",
        r"\(?([AB])\)?(?:\s|$)",  # any a/b before a space or the end: the article "a" too
    )
)


def _mmvp_letter(response: str) -> str:
    text = response.strip()
    for form in _MMVP_FORMS:
        match = form.search(text)
        if match:
            return match.group(1).upper()
    return text[0].upper() if text and text[0].upper() in ("A", "B") else ""


def _mmvp_target(answer: str) -> str:
    """`mmvp/utils.py:_normalize_answer`: "(a)"/"a" -> A, "(b)"/"b" -> B."""
    text = answer.strip().lower()
    if "(a)" in text or text == "a":
        return "A"
    if "(b)" in text or text == "b":
        return "B"
    return text.upper()


def mmvp(response: str, doc: dict[str, Any]) -> Verdict:
    """`mmvp/utils.py:mmvp_process_results`: `_extract_answer_letter` against the letter."""
    return _verdict(_mmvp_letter(response), _mmvp_target(str(doc["answer"])))


def hallusionbench(response: str, doc: dict[str, Any]) -> Verdict:
    """`hallusion_bench/evaluate_hb.py:hb_aggregation_result_intern` (the rule-based variant;
    the task's default asks a GPT judge): "1" (yes) if "yes" occurs anywhere in the lower-cased
    response ("eyes" too), else "0"."""
    pred = "1" if "yes" in response.lower() else "0"
    return _verdict(pred, "1" if str(doc["answer"]).strip().lower() == "yes" else "0")


def realworldqa(response: str, doc: dict[str, Any]) -> Verdict:
    """`realworldqa/utils.py:realworldqa_process_results`: letter answers through
    `extract_mcq_answer` over A-D; other answers: the lower-cased response, stripped and without
    trailing dots, must equal the lower-cased answer exactly ("two" is not "2")."""
    gt = str(doc["answer"]).strip()
    if gt.upper() in ("A", "B", "C", "D"):
        return _verdict(extract_letter(response, "ABCD"), gt.upper())
    return _verdict(response.lower().strip().rstrip("."), gt.lower())
