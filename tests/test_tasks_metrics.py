"""Every aggregation on a hand-made confusion matrix or hand-made groups."""

from __future__ import annotations

from typing import Any

import pytest
from mbpo_bench.tasks import metrics as m


def _row(parsed: str | None, target: str, **meta: Any) -> dict[str, Any]:
    return {"parsed": parsed, "target": target, "correct": parsed == target, "meta": meta}


def _confusion(tp: int, fp: int, tn: int, fn: int, unparsed_yes: int = 0) -> list[dict[str, Any]]:
    return (
        [_row("yes", "yes")] * tp + [_row("yes", "no")] * fp + [_row("no", "no")] * tn
        + [_row("no", "yes")] * fn + [_row(None, "yes")] * unparsed_yes
    )  # fmt: skip


def test_yes_no_metrics_on_a_confusion_matrix() -> None:
    rows = _confusion(tp=40, fp=10, tn=30, fn=15, unparsed_yes=5)  # 100 rows, 60 true yes
    assert m.accuracy(rows) == pytest.approx(0.70)
    assert m.precision(rows) == pytest.approx(40 / 50)
    assert m.recall(rows) == pytest.approx(40 / 60)  # unparsed counts as a miss
    p, r = 0.8, 40 / 60
    assert m.f1(rows) == pytest.approx(2 * p * r / (p + r))
    assert m.yes_ratio(rows) == pytest.approx(0.50)  # predicted yes, not ground truth (0.60)


def test_yes_no_metrics_degenerate_cases() -> None:
    always_no = _confusion(tp=0, fp=0, tn=5, fn=5)
    assert (m.precision(always_no), m.recall(always_no), m.f1(always_no)) == (0.0, 0.0, 0.0)
    assert m.yes_ratio(_confusion(tp=5, fp=5, tn=0, fn=0)) == 1.0
    assert m.accuracy([]) == 0.0 and m.chair_i([]) == 0.0


def test_prior_gap() -> None:
    rows = (
        [_row("a", "a", prior="consistent")] * 9 + [_row("b", "a", prior="consistent")]
        + [_row("a", "a", prior="counter")] * 3 + [_row("b", "a", prior="counter")] * 7
    )  # fmt: skip
    assert m.acc_prior_consistent(rows) == pytest.approx(0.9)
    assert m.acc_counter_prior(rows) == pytest.approx(0.3)
    assert m.counter_prior_gap(rows) == pytest.approx(0.6)


def test_negative_split_accuracies() -> None:
    rows = (
        [_row("no", "no", negative_split="adversarial")] + [_row("yes", "no", negative_split="adversarial")] * 3
        + [_row("no", "no", negative_split="random")] * 2 + [_row("yes", "yes", negative_split=None)]
    )  # fmt: skip
    assert m.acc_negatives_adversarial(rows) == pytest.approx(0.25)
    assert m.acc_negatives_random(rows) == pytest.approx(1.0)
    assert m.acc_negatives_popular(rows) == 0.0  # no such items


def test_mme_acc_plus_and_scores() -> None:
    rows = [
        _row("yes", "yes", category="existence", image_id="e1"),
        _row("no", "no", category="existence", image_id="e1"),  # e1: both right
        _row("yes", "yes", category="existence", image_id="e2"),
        _row("yes", "no", category="existence", image_id="e2"),  # e2: one wrong
        _row("yes", "yes", category="code_reasoning", image_id="c1"),
        _row("no", "no", category="code_reasoning", image_id="c1"),
    ]
    scores = m.mme_category_scores(rows)
    assert scores["existence"] == {"acc": 0.75, "acc_plus": 0.5, "score": pytest.approx(125.0)}
    assert m.mme_perception(rows) == pytest.approx(125.0)
    assert m.mme_cognition(rows) == pytest.approx(200.0)
    assert m.mme_acc_plus(rows) == pytest.approx(2 / 3)


def test_hallusion_aacc_facc_qacc() -> None:
    def r(ok: bool, fig: str, q: str) -> dict[str, Any]:
        meta = {"category": "VD", "subcategory": "chart", "set_id": "0", "figure_id": fig,
                "question_id": q}  # fmt: skip
        return _row("yes" if ok else "no", "yes", **meta)

    rows = [r(True, "0", "0"), r(True, "0", "1"), r(True, "1", "0"), r(False, "1", "1")]
    assert m.hallusion_aacc(rows) == pytest.approx(0.75)
    assert m.hallusion_facc(rows) == pytest.approx(0.5)  # figure 0 all right, figure 1 not
    assert m.hallusion_qacc(rows) == pytest.approx(0.5)  # question 0 right on both figures


def test_mmvp_pairs() -> None:
    rows = [_row("A", "A", pair_id=0), _row("B", "B", pair_id=0),
            _row("A", "A", pair_id=1), _row("A", "B", pair_id=1)]  # fmt: skip
    assert m.mmvp_pair_accuracy(rows) == pytest.approx(0.5)
    assert m.accuracy(rows) == pytest.approx(0.75)


def test_chair() -> None:
    rows = [
        {"mentioned": ["dog", "cat"], "hallucinated": ["cat"], "truth": ["dog", "car"]},
        {"mentioned": ["car"], "hallucinated": [], "truth": ["car"]},
        {"mentioned": ["person", "bike", "tree"], "hallucinated": ["bike"], "truth": ["person"]},
    ]
    assert m.chair_s(rows) == pytest.approx(2 / 3)
    assert m.chair_i(rows) == pytest.approx(2 / 6)
    assert m.chair_recall(rows) == pytest.approx(3 / 4)
