"""The bootstrap of group metrics draws whole groups (MME images, HallusionBench question sets,
MMVP pairs): resampled item by item, acc+ / fAcc / qAcc / pair accuracy split and merge their
groups, so their intervals were not the metric's."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from mbpo_bench.tasks import metrics as m

from mbpo_bench.data.registry import get_task
from mbpo_bench.evaluation.config import EvalConfig
from mbpo_bench.evaluation.scoring import _Scorer


def _mme_rows(n_images: int = 12) -> list[dict[str, Any]]:
    """Two questions per image; the same image ids in two categories (MME reuses file names)."""
    rows = []
    for cat in ("existence", "count"):
        for i in range(n_images):
            for q, right in enumerate((True, i % 3 != 0)):
                meta = {"category": cat, "image_id": f"{i:04d}.png"}
                rows.append({"doc_id": f"{cat}/{i}#{q}", "correct": right,
                             "parsed": "yes", "target": "yes" if right else "no", "meta": meta})  # fmt: skip
    return rows


def _group_sizes(drawn: list[dict[str, Any]]) -> Counter[int]:
    by_image = Counter((r["meta"]["category"], r["meta"]["image_id"]) for r in drawn)
    return Counter(by_image.values())


def test_mme_resamples_keep_both_questions_of_every_image() -> None:
    rows = _mme_rows()
    scorer = _Scorer("mbpo_mme", EvalConfig(), cluster="category,image_id")
    values = set()
    for (drawn,) in scorer.resamples(rows):
        assert len(drawn) == len(rows)
        assert set(_group_sizes(drawn)) == {2}  # a repeated image is relabelled: still pairs
        values.add(round(m.mme_acc_plus(drawn), 6))
    assert len(values) > 1  # the resamples differ


def test_item_level_resamples_split_images_which_is_why_mme_clusters() -> None:
    rows = _mme_rows()
    scorer = _Scorer("mbpo_mme", EvalConfig())
    sizes: Counter[int] = Counter()
    for (drawn,) in scorer.resamples(rows):
        sizes.update(_group_sizes(drawn))
    assert set(sizes) - {2}  # images with 1, 3, 4 ... questions: acc+ is not over pairs


def test_a_row_without_the_label_is_its_own_cluster() -> None:
    rows = _mme_rows(4)
    loose = {r["doc_id"] for r in rows[:4]}
    for r in rows[:4]:
        r["meta"] = {"category": r["meta"]["category"]}  # no image_id
    scorer = _Scorer("mbpo_mme", EvalConfig(), cluster="category,image_id")
    uneven = 0
    for (drawn,) in scorer.resamples(rows):
        counts = Counter(r["doc_id"] for r in drawn if r["doc_id"] in loose)
        uneven += len({counts.get(d, 0) for d in loose}) > 1
    assert uneven  # drawn one by one; one "None" cluster would draw all four together


@pytest.mark.parametrize(
    ("task", "cluster"),
    [
        ("mbpo_mme", "category,image_id"),
        ("mbpo_hallusionbench", "category,subcategory,set_id"),
        ("mbpo_mmvp", "pair_id"),
        ("mbpo_mmbench_en", "question_index"),
    ],
)
def test_group_metric_tasks_declare_their_cluster(task: str, cluster: str) -> None:
    assert get_task(task).cluster == cluster
