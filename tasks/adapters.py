"""Row adapters: each benchmark's own schema -> our canonical row (standard library only).

A canonical row is {doc_id, question, answer, options, image, meta} (+ optional `verifier` when a
benchmark mixes answer kinds, like RealWorldQA). `image` may be bytes, an HF image struct
{'bytes', 'path'} or a path; `sources.read_rows` turns it into a file. The schemas are those of
the Hugging Face copies lmms-eval reads (lmms-lab / lmms-lab-encoder / lmms-lab-eval), so a
snapshot of the hub dataset placed under the data root works as is. A missing column raises
KeyError, which the registry reports as "malformed row <n> in <file>".
"""

from __future__ import annotations

import re
import string
from typing import Any

Row = dict[str, Any]

_LETTERS = string.ascii_uppercase


def _s(value: Any) -> str:
    return "" if value is None else str(value).strip()


def pope(raw: Row, index: int) -> Row:
    """lmms-lab POPE: question_id, question, answer (yes/no), image, category, image_source."""
    return {
        "doc_id": _s(raw["question_id"]),
        "question": _s(raw["question"]),
        "answer": _s(raw["answer"]).lower(),
        "options": [],
        "image": raw["image"],
        "meta": {"category": _s(raw.get("category")), "image_source": _s(raw.get("image_source"))},
    }


def mme(raw: Row, index: int) -> Row:
    """lmms-lab MME: question_id (the image name, shared by its two questions), question (ends
    with 'Please answer yes or no.'), answer (Yes/No), category, image."""
    image_id = _s(raw["question_id"])
    return {
        "doc_id": f"{image_id}#{index}",
        "question": _s(raw["question"]),
        "answer": _s(raw["answer"]).lower().rstrip("."),
        "options": [],
        "image": raw["image"],
        "meta": {"category": _s(raw["category"]), "image_id": image_id},
    }


_MMVP_OPTION = re.compile(r"\(([a-z])\)\s*([^(]+?)(?=\s*\([a-z]\)|$)", re.IGNORECASE)


def mmvp(raw: Row, index: int) -> Row:
    """lmms-lab-eval MMVP: Index (1-based; pairs are 1-2, 3-4, ...), Question, Options
    '(a) X (b) Y', 'Correct Answer' '(a)', image."""
    number = int(raw["Index"])
    options = [m.group(2).strip() for m in _MMVP_OPTION.finditer(_s(raw["Options"]))]
    letter = _s(raw["Correct Answer"]).strip("() ").upper()
    if not options or letter not in _LETTERS[: len(options)]:
        raise ValueError(f"options {raw['Options']!r} / answer {raw['Correct Answer']!r}")
    return {
        "doc_id": str(number),
        "question": _s(raw["Question"]),
        "answer": letter,
        "options": options,
        "image": raw["image"],
        "meta": {"index": number, "pair_id": (number - 1) // 2},
    }


def mmstar(raw: Row, index: int) -> Row:
    """Lin-Chen/MMStar: index, question (options written inside), answer (letter), category,
    l2_category, image."""
    return {
        "doc_id": _s(raw["index"]),
        "question": _s(raw["question"]),
        "answer": _s(raw["answer"]).upper(),
        "options": [],
        "image": raw["image"],
        "meta": {"category": _s(raw.get("category")), "l2_category": _s(raw.get("l2_category"))},
    }


def ai2d(raw: Row, index: int) -> Row:
    """lmms-lab ai2d: question, options (list), answer (index of the right option), image."""
    options = [_s(o) for o in raw["options"]]
    answer = int(raw["answer"])
    return {
        "doc_id": _s(raw.get("question_id", index)),
        "question": _s(raw["question"]),
        "answer": _LETTERS[answer],
        "options": options,
        "image": raw["image"],
        "meta": {},
    }


def hallusionbench(raw: Row, index: int) -> Row:
    """lmms-lab HallusionBench: category (VD/VS), subcategory, visual_input, set_id, figure_id,
    question_id, question, gt_answer ('1' yes / '0' no), image (None without visual input)."""
    keys = ("category", "subcategory", "set_id", "figure_id", "question_id", "visual_input")
    meta = {k: _s(raw[k]) for k in keys}
    return {
        "doc_id": "_".join(meta[k] for k in keys[:5]),
        "question": _s(raw["question"]),
        "answer": "yes" if _s(raw["gt_answer"]) == "1" else "no",
        "options": [],
        "image": raw.get("image"),
        "meta": meta,
    }


def amber_discriminative(raw: Row, index: int) -> Row:
    """AMBER discriminative queries joined with their annotations: id, image, query, truth
    (yes/no), type (discriminative-hallucination / -attribute-state / ...)."""
    return {
        "doc_id": _s(raw["id"]),
        "question": _s(raw["query"]),
        "answer": _s(raw["truth"]).lower(),
        "options": [],
        "image": raw["image"],
        "meta": {"type": _s(raw.get("type"))},
    }


def realworldqa(raw: Row, index: int) -> Row:
    """lmms-lab RealWorldQA: question (options and instruction inside), answer (a letter, a
    number or a word), image. The verifier follows the answer's kind."""
    answer = _s(raw["answer"])
    if len(answer) == 1 and answer.upper() in "ABCD":
        verifier = "multiple_choice"
    elif re.fullmatch(r"-?\d+(\.\d+)?", answer):
        verifier = "number"
    else:
        verifier = "short_word"
    return {
        "doc_id": _s(raw.get("question_id", index)),
        "question": _s(raw["question"]),
        "answer": answer,
        "options": [],
        "image": raw["image"],
        "verifier": verifier,
        "meta": {},
    }


def chair(raw: Row, index: int) -> Row:
    """tsunghanwu/mscoco_chair: question_id (COCO image id), image, gt_object (COCO category
    names present in the image)."""
    truth = sorted({_s(o) for o in raw["gt_object"]})
    return {
        "doc_id": _s(raw["question_id"]),
        "question": "Please describe this image in detail.",
        "answer": ", ".join(truth),
        "options": [],
        "image": raw["image"],
        "meta": {"truth": truth},
    }


# MMBench's own convention (lmms-eval's MMBench_Evaluator, VLMEvalKit): the circular copies of
# question `i` carry index `i + k * 1_000_000`; the pass with the options as published is k = 0.
MMBENCH_SHIFT = 1_000_000


def mmbench(raw: Row, index: int) -> list[Row]:
    """lmms-lab MMBench (config en, split dev): index, question, hint, A-D, answer (letter),
    category, L2-category (lmms-eval's spelling; l2-category accepted), source, split, image.

    CircularEval: one row per circular shift of the options (shift k puts option k first), each
    answer letter moved along, doc ids following MMBench's `index + k * 1e6`. Copies that the file
    already holds (index >= 1e6) are dropped and regenerated here, so a file with or without them
    gives the same passes. `group` keeps a question's passes together under `--limit`.
    """
    number = int(raw["index"])
    if number >= MMBENCH_SHIFT:
        return []
    options = [_s(raw[c]) for c in "ABCDE" if c in raw and _s(raw[c]) not in ("", "nan")]
    answer = _s(raw["answer"]).upper()
    if len(options) < 2 or answer not in _LETTERS[: len(options)]:
        raise ValueError(f"options {options!r} / answer {raw['answer']!r}")
    hint = _s(raw.get("hint"))
    question = f"{hint} {_s(raw['question'])}" if hint and hint != "nan" else _s(raw["question"])
    l2 = raw.get("L2-category", raw.get("l2-category"))
    rows = []
    for shift in range(len(options)):
        rotated = options[shift:] + options[:shift]
        correct = (_LETTERS.index(answer) - shift) % len(options)
        rows.append(
            {
                "doc_id": str(number + shift * MMBENCH_SHIFT),
                "group": str(number),
                "question": question,
                "answer": _LETTERS[correct],
                "options": rotated,
                "image": raw["image"],
                "meta": {
                    "question_index": number,
                    "shift": shift,
                    "mmbench_category": _s(raw.get("category")),
                    "l2_category": _s(l2),
                },
            }
        )
    return rows


def mmvet(raw: Row, index: int) -> Row:
    """lmms-lab/MMVet: question_id, image, question, answer (parts joined by <AND> / <OR>),
    image_source, capability (comma-separated: rec, ocr, know, gen, spat, math)."""
    caps = raw["capability"]
    caps = caps if isinstance(caps, list) else _s(caps).split(",")
    return {
        "doc_id": _s(raw["question_id"]),
        "question": _s(raw["question"]),
        "answer": _s(raw["answer"]),
        "options": [],
        "image": raw["image"],
        "meta": {"capabilities": sorted(_s(c) for c in caps if _s(c))},
    }


def mmhal(raw: Row, index: int) -> Row:
    """MMHal-Bench (Shengcao1006/MMHal-Bench, response_template.json's fields): question_type,
    question_topic, image_id, image_src, image_content (object names), question, gt_answer,
    plus the image (bytes, or a path relative to the parquet file)."""
    return {
        "doc_id": f"{index}_{_s(raw['image_id'])}",
        "question": _s(raw["question"]),
        "answer": _s(raw["gt_answer"]),
        "options": [],
        "image": raw["image"],
        "meta": {
            "question_type": _s(raw["question_type"]),
            "question_topic": _s(raw.get("question_topic")),
            "image_content": [_s(o) for o in raw.get("image_content") or ()],
        },
    }
