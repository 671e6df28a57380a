"""Evaluation batches are bucketed by image tokens and bounded by tokens (`plan.batches`).

A Qwen image's token count follows its size (4 to thousands), so a batch of one 1280x720 photo
and fifteen thumbnails pads every row to the photo; bucketing puts like sizes together and
`max_batch_tokens` keeps a batch of large images small. With a constant count (LLaVA, the
embedded benchmark) the batches are exactly the question-length batches of before.
"""

from __future__ import annotations

from types import SimpleNamespace

from mbpo_bench.evaluation.plan import batches


def _plan(questions: dict[str, str]) -> SimpleNamespace:
    items = {d: SimpleNamespace(question=q) for d, q in questions.items()}
    return SimpleNamespace(info=SimpleNamespace(name="t"), items=items,
                           probes={"image": sorted(items), "blind": sorted(items)})  # fmt: skip


QUESTIONS = {f"d{i}": "q" * (10 - i % 5) for i in range(10)}
TOKENS = {f"d{i}": [4, 391, 1196, 98, 391][i % 5] for i in range(10)}


def _cost(probe: str, item: SimpleNamespace) -> tuple[int, int]:
    doc = next(d for d, q in QUESTIONS.items() if item is PLAN.items[d])
    return (0 if probe == "blind" else TOKENS[doc]), len(item.question)


PLAN = _plan(QUESTIONS)


def test_constant_image_tokens_keep_the_question_length_batches() -> None:
    plain = batches(PLAN, 3)  # type: ignore[arg-type]
    same = batches(PLAN, 3, cost=lambda p, it: (576, 7))  # type: ignore[arg-type]
    assert plain == same
    assert [b.index for b in plain if b.probe == "image"] == [0, 1, 2, 3]


def test_bucketed_by_image_tokens_and_bounded_by_tokens() -> None:
    out = batches(PLAN, 4, cost=_cost, max_tokens=1300)  # type: ignore[arg-type]
    image = [b for b in out if b.probe == "image"]
    seen = [TOKENS[d] for b in image for d in b.doc_ids]
    assert seen == sorted(seen)  # like sizes together
    for b in image:
        total = sum(TOKENS[d] + len(QUESTIONS[d]) for d in b.doc_ids)
        assert len(b.doc_ids) <= 4 and (total <= 1300 or len(b.doc_ids) == 1)
    assert [len(b.doc_ids) for b in image] == [4, 3, 1, 1, 1]  # 4,4,98,98 | 391 x3 | ...
    assert [b.index for b in image] == list(range(len(image)))
    assert sorted(d for b in image for d in b.doc_ids) == sorted(QUESTIONS)
    blind = [b for b in out if b.probe == "blind"]  # no image tokens: question length order
    assert [len(b.doc_ids) for b in blind] == [4, 4, 2]
