"""Aggregations of lmms-eval's per-sample verdicts (`row["lmms"]`), as lmms-eval 0.7.3 computes
them; task YAMLs list them as `<metric>_lmms` next to the verifier's `<metric>`.

Each function reproduces the lmms-eval aggregation named in its docstring on the same samples,
bugs included (POPE's yes-ratio). Two deliberate departures, both where lmms-eval cannot produce
a number at all: MME with an image whose pair is incomplete (lmms-eval's assertion fails; we
score the image as it is) and empty inputs (0.0 instead of a ZeroDivisionError). The bootstrap
calls these on resampled rows (items repeated): an MMVP pair counts as complete when both of its
distinct questions are present, however often each was drawn. Standard library only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

Row = dict[str, Any]


def _verdicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    try:
        return [r["lmms"] for r in rows]
    except KeyError:
        raise ValueError(
            "a scored row has no lmms-eval verdict ('lmms') — the task's process_results must "
            "be one of mbpo_bench.tasks.lmms_compat.process_results"
        ) from None


def _meta(row: Row, key: str) -> Any:
    return (row.get("meta") or {}).get(key)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def accuracy_lmms(rows: Sequence[Row]) -> float:
    """Mean of lmms-eval's per-sample scores (POPE, AI2D, RealWorldQA, MMVP, MMStar micro)."""
    return _mean([1.0 if v["correct"] else 0.0 for v in _verdicts(rows)])


# --- POPE (`pope/utils.py` aggregations) -------------------------------------------------------


def _pope_counts(rows: Sequence[Row]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives); an answer that is neither "yes" nor
    "no" is in none of them (lmms-eval skips it in precision and recall)."""
    tp = fp = fn = 0
    for v in _verdicts(rows):
        tp += v["gt"] == "yes" and v["pred"] == "yes"
        fp += v["gt"] == "no" and v["pred"] == "yes"
        fn += v["gt"] == "yes" and v["pred"] == "no"
    return tp, fp, fn


def pope_precision_lmms(rows: Sequence[Row]) -> float:
    """`pope_aggregate_precision`."""
    tp, fp, _ = _pope_counts(rows)
    return tp / (tp + fp) if tp + fp else 0.0


def pope_recall_lmms(rows: Sequence[Row]) -> float:
    """`pope_aggregate_recall`."""
    tp, _, fn = _pope_counts(rows)
    return tp / (tp + fn) if tp + fn else 0.0


def pope_f1_lmms(rows: Sequence[Row]) -> float:
    """`pope_aggregate_f1_score`."""
    p, r = pope_precision_lmms(rows), pope_recall_lmms(rows)
    return 2 * p * r / (p + r) if p + r else 0.0


def pope_yes_ratio_lmms(rows: Sequence[Row]) -> float:
    """`pope_aggregate_yes_ratio`, bug reproduced ON PURPOSE: it counts GROUND-TRUTH yes, so it
    is the split's balance (~0.5) whatever the model answers. Our `yes_ratio` counts predictions."""
    gts = [v["gt"] for v in _verdicts(rows) if v["gt"] in ("yes", "no")]
    return sum(g == "yes" for g in gts) / len(gts) if gts else 0.0


# --- grouped scores ---------------------------------------------------------------------------


def _groups(rows: Sequence[Row], key: Callable[[Row], Hashable]) -> dict[Hashable, list[Row]]:
    out: dict[Hashable, list[Row]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def _all_right(group: Sequence[Row]) -> bool:
    return all(v["correct"] for v in _verdicts(group))


# --- MME (`mme/utils.py:mme_aggregate_results`) -------------------------------------------------

_MME_PERCEPTION = frozenset(
    {"existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
     "artwork", "OCR"}
)  # fmt: skip


def _mme_score(rows: Sequence[Row]) -> float:
    """Sum over categories of the mean over images of 100 x (acc + acc+)."""
    total = 0.0
    for group in _groups(rows, lambda r: _meta(r, "category")).values():
        images = _groups(group, lambda r: _meta(r, "image_id")).values()
        per_image = [
            100.0 * (accuracy_lmms(img) + (1.0 if _all_right(img) else 0.0)) for img in images
        ]
        total += _mean(per_image)
    return total


def mme_perception_lmms(rows: Sequence[Row]) -> float:
    """`mme_perception_score`: the ten perception categories."""
    return _mme_score([r for r in rows if _meta(r, "category") in _MME_PERCEPTION])


def mme_cognition_lmms(rows: Sequence[Row]) -> float:
    """`mme_cognition_score`: every other category (lmms-eval routes all non-perception ones here)."""
    return _mme_score([r for r in rows if _meta(r, "category") not in _MME_PERCEPTION])


def mme_acc_plus_lmms(rows: Sequence[Row]) -> float:
    """acc+ (both questions of an image right) under lmms-eval's parsing; lmms-eval reports it
    only inside its category scores."""
    groups = _groups(rows, lambda r: (_meta(r, "category"), _meta(r, "image_id")))
    return _mean([1.0 if _all_right(g) else 0.0 for g in groups.values()])


# --- MMStar (`mmstar/utils.py:mmstar_aggregate_results`) ---------------------------------------


def mmstar_average_lmms(rows: Sequence[Row]) -> float:
    """lmms-eval's `average`: the mean over l2 categories of each category's accuracy, from the
    categories' real sizes in the rows (a macro average, equal to accuracy only when every
    category has the same number of items)."""
    groups = _groups(rows, lambda r: _meta(r, "l2_category"))
    return _mean([accuracy_lmms(g) for g in groups.values()])


# --- MMVP (`mmvp/utils.py:mmvp_aggregate_pair_results`) -----------------------------------------


def mmvp_pair_accuracy_lmms(rows: Sequence[Row]) -> float:
    """Both questions of a pair right, over the pairs with both questions scored (a pair with one
    question is left out, as lmms-eval does)."""
    pairs = _groups(rows, lambda r: _meta(r, "pair_id"))
    complete = [g for g in pairs.values() if len({_meta(r, "index") for r in g}) == 2]
    return _mean([1.0 if _all_right(g) else 0.0 for g in complete])


# --- HallusionBench (`evaluate_hb.py:hb_aggregation_result_intern`, the rule-based variant) -----


def _hb_key(*fields: str) -> Callable[[Row], Hashable]:
    return lambda r: "_".join(str(_meta(r, f)) for f in fields)


def hallusion_aacc_lmms(rows: Sequence[Row]) -> float:
    """aAcc: all questions."""
    return accuracy_lmms(rows)


def hallusion_facc_lmms(rows: Sequence[Row]) -> float:
    """fAcc: every question about a figure right (key category_subcategory_set_figure)."""
    groups = _groups(rows, _hb_key("category", "subcategory", "set_id", "figure_id"))
    return _mean([1.0 if _all_right(g) else 0.0 for g in groups.values()])


def hallusion_qacc_lmms(rows: Sequence[Row]) -> float:
    """qAcc: a question right on every figure it is asked about (key category_subcategory_set_question)."""
    groups = _groups(rows, _hb_key("category", "subcategory", "set_id", "question_id"))
    return _mean([1.0 if _all_right(g) else 0.0 for g in groups.values()])
