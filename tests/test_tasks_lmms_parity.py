"""Our scores equal lmms-eval 0.7.3's own built-in scoring on the same predictions, except where
theirs is wrong; each such fault has a test here that shows the difference (see the README.md
of the task folder).

lmms-eval's task utilities are loaded from their files, with their few lmms-eval imports served
by light stand-ins, so these tests do not pay for importing lmms-eval itself (~18 s).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq
import pytest
from mbpo_bench.tasks.chair import chair_row
from mbpo_bench.tasks.common import item_to_doc

from mbpo_bench.data.registry import aggregate, get_task, load_items
from mbpo_bench.evaluation.batches import resolve_function

pytestmark = pytest.mark.lmms
FIXTURES = Path(__file__).parent / "fixtures"


def _lmms_dir() -> Path:
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or spec.origin is None:
        pytest.skip("lmms-eval is not installed")
    return Path(spec.origin).parent / "tasks"


def _load(rel: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, _lmms_dir() / rel)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("MBPO_BENCH_DATA", str(FIXTURES))


def _raw(rel: str) -> list[dict[str, Any]]:
    return pq.read_table(FIXTURES / rel).to_pylist()


def _ours(task: str, predictions: list[str]) -> tuple[list[Any], dict[str, float]]:
    """Rows from the task's own process_results (as `mbpo-bench eval` scores), then its metrics."""
    spec = get_task(task)
    items = load_items(spec)
    process = resolve_function(spec.raw.get("process_results"))
    rows = [
        next(iter(process(item_to_doc(i, spec.metrics), [p]).values()))
        for i, p in zip(items, predictions, strict=True)
    ]
    return items, aggregate(spec, rows)


# --- POPE -----------------------------------------------------------------------------------------


def _pope_theirs(docs: list[dict[str, Any]], preds: list[str]) -> dict[str, float]:
    pope = _load("pope/utils.py", "_lmms_pope")
    rows = [
        pope.pope_process_results(d, [p])["pope_accuracy"] for d, p in zip(docs, preds, strict=True)
    ]
    return {
        "accuracy": pope.pope_aggregate_accuracy(rows),
        "precision": pope.pope_aggregate_precision(rows),
        "recall": pope.pope_aggregate_recall(rows),
        "f1": pope.pope_aggregate_f1_score(rows),
        "yes_ratio": pope.pope_aggregate_yes_ratio(rows),
    }


def test_pope_matches_builtin_except_yes_ratio() -> None:
    docs = [r for r in _raw("pope/data/test-00000-of-00001.parquet") if r["category"] == "random"]
    preds = ["yes", "yes", "no", "yes"]  # truths: yes, no, yes, no
    theirs = _pope_theirs(docs, preds)
    _, ours = _ours("mbpo_pope_random", preds)
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert ours[metric] == pytest.approx(theirs[metric]), metric
    # Their "yes ratio" counts ground-truth yes (always the split's balance); ours counts predictions.
    assert theirs["yes_ratio"] == pytest.approx(0.5)
    assert ours["yes_ratio"] == pytest.approx(0.75)


def test_pope_sentence_answers_score_right_here_and_zero_there() -> None:
    docs = [r for r in _raw("pope/data/test-00000-of-00001.parquet") if r["category"] == "random"]
    preds = ["Yes.", "No, there is not.", "Yes, there is one.", "No."]  # all right
    theirs = _pope_theirs(docs, preds)
    _, ours = _ours("mbpo_pope_random", preds)
    assert theirs["accuracy"] == 0.0  # exact string match
    assert ours["accuracy"] == 1.0


# --- MME ------------------------------------------------------------------------------------------


def test_mme_scores_match_builtin() -> None:
    mme = _load("mme/utils.py", "_lmms_mme")
    docs = _raw("mme/data/test-00000-of-00001.parquet")
    # truths alternate Yes, No per image; get image 0 of each category fully right
    preds = ["Yes", "No", "Yes", "Yes", "yes", "no", "No", "No", "Yes.", "No", "no", "no"]
    rows: dict[str, list[dict[str, Any]]] = {"mme_perception_score": [], "mme_cognition_score": []}
    for d, p in zip(docs, preds, strict=True):
        for key, value in mme.mme_process_results(d, [p]).items():
            rows[key].append(value)
    _, ours = _ours("mbpo_mme", preds)
    assert ours["mme_perception"] == pytest.approx(
        mme.mme_aggregate_results(rows["mme_perception_score"])
    )
    assert ours["mme_cognition"] == pytest.approx(
        mme.mme_aggregate_results(rows["mme_cognition_score"])
    )


# --- MMVP -----------------------------------------------------------------------------------------


def _mmvp_theirs(docs: list[dict[str, Any]], preds: list[str]) -> tuple[float, float]:
    mmvp = _load("mmvp/utils.py", "_lmms_mmvp")
    rows = [
        mmvp.mmvp_process_results(d, [p])["mmvp_accuracy"] for d, p in zip(docs, preds, strict=True)
    ]
    return mmvp.mmvp_aggregate_results(rows), mmvp.mmvp_aggregate_pair_results(rows)


def test_mmvp_matches_builtin_on_letters() -> None:
    docs = _raw("mmvp/data/train-00000-of-00001.parquet")
    preds = ["A", "(B)", "B", "B"]  # truths: A, B, A, B -> pair 0 right, pair 1 half
    accuracy, pairs = _mmvp_theirs(docs, preds)
    _, ours = _ours("mbpo_mmvp", preds)
    assert ours["accuracy"] == pytest.approx(accuracy) == pytest.approx(0.75)
    assert ours["mmvp_pair_accuracy"] == pytest.approx(pairs) == pytest.approx(0.5)


def test_mmvp_article_a_is_not_option_a() -> None:
    docs = _raw("mmvp/data/train-00000-of-00001.parquet")
    preds = ["a door that is open", "a closed door", "an open door", "a closed one"]  # all right
    accuracy, _ = _mmvp_theirs(docs, preds)
    _, ours = _ours("mbpo_mmvp", preds)
    assert accuracy == pytest.approx(0.5)  # "a closed door" read as option A
    assert ours["accuracy"] == 1.0


# --- HallusionBench (their rule-based "_intern" aggregation) --------------------------------------


def test_hallusionbench_matches_builtin_rule_based(monkeypatch: pytest.MonkeyPatch) -> None:
    utils = _load("hallusion_bench/utils.py", "lmms_eval.tasks.hallusion_bench.utils")
    monkeypatch.setitem(sys.modules, "lmms_eval.tasks.hallusion_bench.utils", utils)
    hb = _load("hallusion_bench/evaluate_hb.py", "_lmms_hb")
    docs = _raw("hallusionbench/data/image-00000-of-00001.parquet")
    preds = ["Yes", "Yes", "No", "Yes"]  # truths: yes, yes, no, no
    results = [hb.hb_process_results(d, [p])["aAcc"] for d, p in zip(docs, preds, strict=True)]
    _, ours = _ours("mbpo_hallusionbench", preds)
    assert ours["hallusion_aacc"] == pytest.approx(hb.hb_aggregation_result_aAcc_intern(results))
    assert ours["hallusion_facc"] == pytest.approx(hb.hb_aggregation_result_fAcc_intern(results))
    assert ours["hallusion_qacc"] == pytest.approx(hb.hb_aggregation_result_qAcc_intern(results))


# --- MMStar ---------------------------------------------------------------------------------------


def test_mmstar_matches_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    mcq = _load("_task_utils/mcq_extract.py", "lmms_eval.tasks._task_utils.mcq_extract")
    monkeypatch.setitem(sys.modules, "lmms_eval.tasks._task_utils.mcq_extract", mcq)
    mmstar = _load("mmstar/utils.py", "_lmms_mmstar")
    docs = _raw("mmstar/mmstar/val-00000-of-00001.parquet")
    preds = ["A", "B.", "(D)", "The answer is D."]  # truths: A, B, C, D
    rows = [
        mmstar.mmstar_process_results(d, [p])["average"] for d, p in zip(docs, preds, strict=True)
    ]
    _, ours = _ours("mbpo_mmstar", preds)
    assert ours["accuracy"] == pytest.approx(mmstar.mmstar_aggregate_results(rows)) == 0.75


# --- CHAIR (their NLTK word extraction needs downloads; the aggregation formulas match) -----------


@pytest.mark.slow  # importing their module pulls in NLTK (~6 s)
def test_chair_aggregation_matches_builtin_formulas() -> None:
    pytest.importorskip("nltk")
    chair = _load("coco_cap_chair/utils.py", "_lmms_chair")
    items = load_items("mbpo_chair")
    captions = [
        "A man throws a frisbee to his dog while a cat watches.",
        "Cars wait at a traffic light.",
        "A pizza and two cups on a dining table next to a laptop and a laptop bag.",
    ]
    rows = [chair_row(c, i.meta["truth"]) for i, c in zip(items, captions, strict=True)]
    theirs = [{"answer": r["truth"], "pred": r["mentioned"], "image_id": 0} for r in rows]
    spec = get_task("mbpo_chair")
    ours = aggregate(spec, rows)
    assert rows[0]["hallucinated"] == ["cat"] and rows[2]["hallucinated"] == ["laptop", "laptop"]
    assert 100 * ours["chair_s"] == pytest.approx(
        chair.coco_cap_chair_aggregate_results_chair_s(theirs)
    )
    assert 100 * ours["chair_i"] == pytest.approx(
        chair.coco_cap_chair_aggregate_results_chair_i(theirs)
    )
    assert 100 * ours["chair_recall"] == pytest.approx(
        chair.coco_cap_chair_aggregate_results_recall(theirs)
    )
