"""CHAIR (Rohrbach et al. 2018), rule-based and standard library only: which COCO objects a
caption mentions, and which of those are not in the image.

lmms-eval's built-in CHAIR lemmatises with NLTK + WordNet, which needs data downloads and fails
offline; here a caption is lower-cased, split into words, two-word names are joined ("hot dog",
"stop sign"), plurals are reduced by a small irregular table and suffix rules, and each word is
mapped to its COCO category through a synonym table. Mentions are counted with repetition for
CHAIR-i (as lmms-eval and the original code do); CHAIR-s asks whether any mention is wrong.
Scores are fractions in [0, 1] (lmms-eval reports percentages).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_SYNONYMS: dict[str, str] = {
    "person": "person man woman boy girl child kid people adult baby guy lady player rider "
              "skier surfer skateboarder biker worker chef officer policeman cop passenger "
              "mother father teenager",
    "bicycle": "bicycle bike cycle", "car": "car automobile sedan taxi cab suv",
    "motorcycle": "motorcycle motorbike scooter", "airplane": "airplane plane jet aircraft airliner",
    "bus": "bus", "train": "train locomotive", "truck": "truck pickup lorry",
    "boat": "boat ship canoe kayak sailboat yacht", "traffic light": "stoplight",
    "fire hydrant": "hydrant", "stop sign": "",
    "parking meter": "meter", "bench": "bench", "bird": "bird pigeon seagull duck",
    "cat": "cat kitten kitty", "dog": "dog puppy pup", "horse": "horse pony",
    "sheep": "sheep lamb", "cow": "cow cattle bull calf", "elephant": "elephant",
    "bear": "bear", "zebra": "zebra", "giraffe": "giraffe", "backpack": "backpack",
    "umbrella": "umbrella parasol", "handbag": "handbag purse", "tie": "tie necktie",
    "suitcase": "suitcase luggage", "frisbee": "frisbee", "skis": "ski skis",
    "snowboard": "snowboard", "sports ball": "ball football soccer basketball",
    "kite": "kite", "baseball bat": "bat", "baseball glove": "glove mitt",
    "skateboard": "skateboard", "surfboard": "surfboard", "tennis racket": "racket racquet",
    "bottle": "bottle", "wine glass": "", "cup": "cup mug", "fork": "fork",
    "knife": "knife", "spoon": "spoon", "bowl": "bowl", "banana": "banana", "apple": "apple",
    "sandwich": "sandwich burger hamburger", "orange": "orange", "broccoli": "broccoli",
    "carrot": "carrot", "hot dog": "hotdog", "pizza": "pizza", "donut": "donut doughnut",
    "cake": "cake cupcake", "chair": "seat stool", "couch": "couch sofa",
    "potted plant": "houseplant plant", "bed": "bed", "dining table": "table desk",
    "toilet": "toilet", "tv": "tv television monitor", "laptop": "laptop computer notebook",
    "mouse": "mouse", "remote": "remote controller", "keyboard": "keyboard",
    "cell phone": "phone cellphone smartphone", "microwave": "microwave",
    "oven": "oven stove", "toaster": "toaster", "sink": "sink", "refrigerator": "refrigerator fridge",
    "book": "book novel", "clock": "clock", "vase": "vase", "scissors": "scissors",
    "teddy bear": "teddy", "hair drier": "hairdryer dryer",
    "toothbrush": "toothbrush",
}  # fmt: skip
# Two-word names (matched before single words) -> category.
_TWO_WORD = {name: name for name in (
    "traffic light", "fire hydrant", "stop sign", "parking meter", "baseball bat",
    "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant", "cell phone",
    "teddy bear", "hair drier", "dining table")}  # fmt: skip
_TWO_WORD.update({"hair dryer": "hair drier", "motor bike": "motorcycle", "tv set": "tv"})
_IRREGULAR = {"people": "people", "men": "man", "women": "woman", "children": "child",
              "mice": "mouse", "knives": "knife", "skis": "skis", "scissors": "scissors",
              "sheep": "sheep", "glasses": "glass", "buses": "bus", "benches": "bench",
              "sandwiches": "sandwich", "boxes": "box", "couches": "couch",
              "dishes": "dish", "ponies": "pony", "puppies": "puppy", "teddies": "teddy",
              "calves": "calf", "bus": "bus", "grass": "grass", "glass": "glass"}  # fmt: skip

WORD_TO_OBJECT: dict[str, str] = {
    word: category
    for category, names in _SYNONYMS.items()
    for word in ([category] if " " not in category else []) + names.split()
}
# "orange" and "mouse" are ambiguous in captions; CHAIR keeps them as objects, so do we.


def _singular(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def caption_objects(caption: str) -> list[str]:
    """COCO categories mentioned in `caption`, in order, with repetition."""
    tokens = [_singular(w) for w in re.findall(r"[a-z]+", caption.lower())]
    if "toilet" in tokens:  # "toilet seat" is not a chair
        tokens = [t for t in tokens if t != "seat"]
    found, i = [], 0
    while i < len(tokens):
        pair = " ".join(tokens[i : i + 2])
        if pair in _TWO_WORD:
            found.append(_TWO_WORD[pair])
            i += 2
            continue
        category = WORD_TO_OBJECT.get(tokens[i])
        if category:
            found.append(category)
        i += 1
    return found


def chair_row(caption: str, truth: Sequence[str], *, doc_id: str = "") -> dict[str, Any]:
    mentioned = caption_objects(caption)
    truth_set = set(truth)
    return {
        "doc_id": doc_id,
        "response": caption,
        "mentioned": mentioned,
        "hallucinated": [o for o in mentioned if o not in truth_set],
        "truth": sorted(truth_set),
    }


def process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, dict[str, Any]]:
    """lmms-eval `process_results` for CHAIR: one row for every metric of the task."""
    from mbpo_bench.tasks.common import doc_meta

    row = chair_row(results[0] if results else "", doc_meta(doc)["truth"], doc_id=doc["doc_id"])
    return {metric: row for metric in doc["metrics"]}
