"""Judge rubrics: the prompt that asks for a grade, and the parser that reads the grade back.

The prompt texts here are OUR OWN wording of each benchmark's rubric (MM-Vet: a 0.0-1.0
correctness score against the reference, where `<AND>` needs every element and `<OR>` any one;
MMHal-Bench: a 0-6 rating of informativeness and hallucination against the image's objects and
a human answer). They are not the official prompts, so their numbers are not comparable with
published scores; `--judge-prompt TASK=FILE` takes the official text. A template names its
fields in braces: `{question}`, `{answer}` (the reference), `{response}` (the model's),
`{image_content}`, `{question_type}`; other braces are left as they are (official prompts hold
JSON-like text), so a template is filled by plain replacement, never `str.format`.

A parser returns the grade, or raises `Unparseable` with the reason; the stage then records a
judge error with the raw text, counted apart from the scores and never as 0.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FIELDS = ("question", "answer", "response", "image_content", "question_type")


class Unparseable(ValueError):
    """The judge's reply holds no grade in the rubric's range."""


MMVET_PROMPT = """\
You grade answers to questions about images. Compare the model's answer with the reference \
answer and give a correctness score between 0.0 and 1.0 in steps of 0.1: 1.0 when the answer \
says what the reference says, 0.0 when it is wrong or says nothing relevant, values in between \
for answers that are partly right. In the reference, "<AND>" joins parts that must all appear \
for full credit (each part earns its share), and "<OR>" joins alternatives of which any one is \
enough. Judge content, not style or length.

Question: {question}
Reference answer: {answer}
Model answer: {response}

Reply with the score alone, for example 0.6."""

MMHAL_PROMPT = """\
You rate answers of an image assistant for hallucination. You cannot see the image; you get a \
list of objects it contains, a question, a correct human-written answer and the assistant's \
answer. A hallucination is any claim about the image that the object list and the human answer \
do not support or that contradicts them. Rate the assistant's answer on this scale:
6 - informative and detailed, no hallucination
5 - informative, no hallucination
4 - somewhat informative, no hallucination
3 - not informative, no hallucination
2 - informative, with hallucination
1 - somewhat informative, with hallucination
0 - not informative, with hallucination
An answer that refuses, or says it cannot tell, is not informative.

Question type: {question_type}
Objects in the image: {image_content}
Question: {question}
Human answer: {answer}
Assistant answer: {response}

Explain briefly, then end with a line "Rating: N" where N is 0 to 6."""


def render(template: str, fields: dict[str, str]) -> str:
    """Fill `{field}` placeholders by plain replacement (other braces stay)."""
    out = template
    for name in FIELDS:
        out = out.replace("{" + name + "}", fields.get(name, ""))
    return out


def prompt_hash(template: str) -> str:
    """The short content hash that keys the cache and is recorded in results.json."""
    return "sha256:" + hashlib.sha256(template.encode()).hexdigest()[:16]


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)")


def parse_mmvet(text: str) -> float:
    """A 0.0-1.0 score: the reply's first word (as lmms-eval reads it), else a `score: x`."""
    stripped = text.strip()
    first = stripped.split()[0].rstrip(".,;") if stripped else ""
    candidates = [first] if _NUMBER.fullmatch(first) else []
    match = re.search(r"score\s*(?:is|[:=])\s*([-+]?(?:\d+\.\d*|\.\d+|\d+))", stripped, re.I)
    if match:
        candidates.append(match.group(1))
    for candidate in candidates:
        value = float(candidate)
        if 0.0 <= value <= 1.0:
            return value
    raise Unparseable("no score between 0.0 and 1.0 at the start or after 'score:'")


_RATING = re.compile(r"rating\s*[:：=]?\s*\**\s*(\d+)", re.I)


def parse_mmhal(text: str) -> float:
    """A 0-6 rating: the last `Rating: N`, else a reply that is a lone digit."""
    found = _RATING.findall(text)
    if not found and re.fullmatch(r"\s*\d\s*\.?\s*", text):
        found = [text.strip().rstrip(".")]
    if not found:
        raise Unparseable("no 'Rating: N' line")
    value = int(found[-1])
    if not 0 <= value <= 6:
        raise Unparseable(f"rating {value} is outside 0-6")
    return float(value)


def _mmvet_fields(row: dict[str, Any]) -> dict[str, str]:
    reference = str(row.get("target_raw", ""))
    return {
        "question": str((row.get("meta") or {}).get("question_raw", "")),
        "answer": reference.replace("<AND>", " <AND> ").replace("<OR>", " <OR> "),
        "response": str(row.get("response", "")),
    }


def _mmhal_fields(row: dict[str, Any]) -> dict[str, str]:
    meta = row.get("meta") or {}
    return {
        "question": str(meta.get("question_raw", "")),
        "answer": str(row.get("target_raw", "")),
        "response": str(row.get("response", "")),
        "image_content": ", ".join(str(o) for o in meta.get("image_content") or ()),
        "question_type": str(meta.get("question_type", "")),
    }


@dataclass(frozen=True)
class Rubric:
    name: str
    prompt: str  # our own wording (the default)
    parse: Callable[[str], float]
    fields: Callable[[dict[str, Any]], dict[str, str]]  # a sample row -> template fields
    low: float
    high: float


RUBRICS: dict[str, Rubric] = {
    "mmvet": Rubric("mmvet", MMVET_PROMPT, parse_mmvet, _mmvet_fields, 0.0, 1.0),
    "mmhal": Rubric("mmhal", MMHAL_PROMPT, parse_mmhal, _mmhal_fields, 0.0, 6.0),
}
