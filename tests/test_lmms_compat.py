"""lmms-eval-compatible metrics without lmms-eval: the rules on the issue's examples, the
aggregations (MMStar's macro average from real category sizes), the wiring of every real task
(each verifier metric has its `_lmms` twin), and the report's lmms-eval column. Equality with
lmms-eval's own functions is `tests/test_lmms_compat_parity.py` (marker `lmms`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mbpo_bench.tasks.lmms_compat import metrics as lm
from mbpo_bench.tasks.lmms_compat import rules
from mbpo_bench.tasks.lmms_compat.mcq import extract_letter
from mbpo_bench.tasks.lmms_compat.process_results import pope as pope_process_results

from mbpo_bench.data.registry import get_task, list_tasks
from mbpo_bench.evaluation.schema import (
    SCHEMA_VERSION,
    BootstrapSettings,
    GenerationSettings,
    Metric,
    ModelInfo,
    ProbeResult,
    Results,
    TaskResult,
)
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.loading import RunData
from mbpo_bench.reporting.tables import task_table

# Real benchmarks with an lmms-eval 0.7.3 built-in to compare with (AMBER's discriminative half
# and CHAIR's rule-based extraction have none: their READMEs say so).
LMMS_TASKS = {
    "mbpo_pope_random", "mbpo_pope_popular", "mbpo_pope_adversarial", "mbpo_mme", "mbpo_ai2d",
    "mbpo_mmstar", "mbpo_mmvp", "mbpo_hallusionbench", "mbpo_realworldqa",
}  # fmt: skip
# (MM-Vet's and MMHal-Bench's scores are a judge's: no rule-based lmms-eval number to match)
NO_LMMS_BUILTIN = {"mbpo_amber_discriminative", "mbpo_chair", "mbpo_mmvet", "mbpo_mmhal"}
# Real tasks whose `_lmms` metrics are not wired yet, with the reason (keep this short: a task
# listed here has no number to set beside lmms-eval's tables).
PENDING = {
    "mbpo_mmbench_en": "added by the paper-suite work; lmms-eval's mmbench matches answers with a "
    "GPT judge, its rule-based first pass is what an `_lmms` metric would reproduce",
}


def _doc(answer: str, **extra: Any) -> dict[str, Any]:
    return {"answer": answer, **extra}


@pytest.mark.parametrize(
    ("response", "answer", "correct"),
    [
        ("yes", "yes", True),
        ("Yes.", "yes", False),
        (" NO ", "no", True),
        ("Yes, there is.", "yes", False),
    ],
)
def test_pope_rule_is_exact_match(response: str, answer: str, correct: bool) -> None:
    assert rules.pope(response, _doc(answer))["correct"] is correct


@pytest.mark.parametrize(
    ("response", "label"),
    [("Y", "yes"), ("n", "no"), ("Not at all", "no"), ("None", "no"), ("yes or no", "yes"),
     ("Yes.", "yes"), ("I think yes", "other"), ("", "other"), ("Nope", "no"), ("x", "other")],
)  # fmt: skip
def test_mme_rule_reads_the_first_four_characters(response: str, label: str) -> None:
    assert rules.mme(response, _doc("Yes"))["pred"] == label


@pytest.mark.parametrize(
    ("response", "correct"),
    [("B", True), ("(b)", True), ("**B**", True), ("B. dog", True), ("b", True),
     ("The answer is B", False), ("Option B", False), ("dog", False), ("B C", False)],
)  # fmt: skip
def test_ai2d_rule_is_filter_then_exact_match(response: str, correct: bool) -> None:
    assert rules.ai2d(response, _doc("B"))["correct"] is correct


@pytest.mark.parametrize(
    ("response", "letter"),
    [("A", "A"), ("(B)", "B"), ("The answer is C.", "C"), ("b", ""), ("A dog", "A"),
     ("B C", "B"), ("Cat", "C"), ("", ""), ("...", ""), ("I choose D because", "D"),
     ("答案是B", "B")],
)  # fmt: skip
def test_mcq_extraction(response: str, letter: str) -> None:
    assert extract_letter(response, "ABCD") == letter


@pytest.mark.parametrize(
    ("response", "letter"),
    [("A", "A"), ("(b)", "B"), ("a closed door", "A"), ("The answer is B", "B"), ("bat", "B"),
     ("closed", ""), ("[B]", "")],
)  # fmt: skip
def test_mmvp_rule(response: str, letter: str) -> None:
    assert rules.mmvp(response, _doc("(a)"))["pred"] == letter


def test_hallusionbench_rule_is_substring_yes() -> None:
    assert rules.hallusionbench("The eyes are blue", _doc("yes"))["correct"]
    assert rules.hallusionbench("Maybe", _doc("no"))["correct"]


def test_realworldqa_rule_open_answers_are_exact() -> None:
    assert rules.realworldqa("Downhill.", _doc("downhill"))["correct"]
    assert not rules.realworldqa("two", _doc("2"))["correct"]
    assert rules.realworldqa("The answer is (C).", _doc("C"))["correct"]


def _row(correct: bool, **meta: Any) -> dict[str, Any]:
    return {"lmms": {"pred": "", "gt": "", "correct": correct}, "meta": meta, "correct": correct}


def test_mmstar_average_is_macro_over_real_category_sizes() -> None:
    rows = [_row(True, l2_category="a")] * 3 + [_row(False, l2_category="b")]
    assert lm.accuracy_lmms(rows) == 0.75
    assert lm.mmstar_average_lmms(rows) == 0.5  # (1.0 + 0.0) / 2, not 3/4
    from mbpo_bench.tasks.metrics import mmstar_average

    assert mmstar_average(rows) == 0.5


def test_pope_yes_ratio_lmms_reproduces_the_ground_truth_bug() -> None:
    rows = [{"lmms": rules.pope("yes", _doc(gt))} for gt in ("yes", "no", "no", "no")]
    assert lm.pope_yes_ratio_lmms(rows) == 0.25  # ground truth, although every answer is yes
    assert lm.pope_precision_lmms(rows) == 0.25


def test_mmvp_pairs_with_one_question_are_left_out() -> None:
    rows = [
        _row(True, pair_id=0, index=1),
        _row(True, pair_id=0, index=2),
        _row(True, pair_id=1, index=3),
    ]
    assert lm.mmvp_pair_accuracy_lmms(rows) == 1.0
    assert lm.mmvp_pair_accuracy_lmms([*rows, _row(False, pair_id=1, index=4)]) == 0.5


def test_rows_without_a_verdict_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"lmms_compat\.process_results"):
        lm.accuracy_lmms([{"correct": True}])


def test_process_results_adds_the_verdict_to_the_shared_row() -> None:
    doc = {"task": "t", "doc_id": "1", "answer": "yes", "options": [], "verifier": "yesno",
           "metrics": ["accuracy", "accuracy_lmms"], "meta": "{}"}  # fmt: skip
    out = pope_process_results(doc, ["Yes."])
    assert out["accuracy"] is out["accuracy_lmms"]
    assert out["accuracy"]["correct"] is True and out["accuracy"]["lmms"]["correct"] is False


def test_every_real_task_has_an_lmms_twin_for_each_verifier_metric() -> None:
    names = {spec.name for spec in list_tasks()}
    real = {n for n in names if not n.startswith("mbpo_embedded")}
    assert real == LMMS_TASKS | NO_LMMS_BUILTIN | set(PENDING), "a new real task: add its _lmms"
    for name in sorted(LMMS_TASKS):
        spec = get_task(name)
        assert str(spec.raw["process_results"]).startswith(
            "mbpo_bench.tasks.lmms_compat.process_results."
        ), name
        base = [m for m in spec.metrics if not m.endswith("_lmms")]
        for metric in base:
            assert f"{metric}_lmms" in spec.metrics, (name, metric)
            assert spec.aggregations[f"{metric}_lmms"].startswith(
                "mbpo_bench.tasks.lmms_compat.metrics."
            )


def _run(name: str, metrics: dict[str, float]) -> RunData:
    probe = ProbeResult(
        "image", 10, {k: Metric(v, 10, None, None, True) for k, v in metrics.items()}
    )
    task = TaskResult("mbpo_ai2d", "1", "{question}", "multiple_choice", GenerationSettings(4), 10, [],
                      {"image": probe}, {})  # fmt: skip
    results = Results(SCHEMA_VERSION, ModelInfo(name, "llava", "0" * 16), ["image"],
                      BootstrapSettings(200, 0.95, 0), {"mbpo_ai2d": task}, {}, None, "3.11", None,
                      1.0, 1.0, 1.0, 10, 0, {})  # fmt: skip
    return RunData(Path(name), name, results)


def test_report_task_table_has_an_lmms_eval_column() -> None:
    runs = [_run("a", {"accuracy": 0.6, "accuracy_lmms": 0.4, "format_rate": 0.9}),
            _run("b", {"accuracy": 0.7, "accuracy_lmms": 0.5, "format_rate": 1.0})]  # fmt: skip
    df = task_table(runs, "mbpo_ai2d", ReportConfig(digits=2))
    assert list(df.columns) == ["a", "a (lmms-eval)", "b", "b (lmms-eval)"]
    assert list(df.index) == ["image / n", "image / accuracy", "image / format_rate"]
    assert list(df.loc["image / accuracy"]) == ["0.60", "0.40", "0.70", "0.50"]
    assert df.loc["image / format_rate", "a (lmms-eval)"] == "—"


def test_tasks_verify_shows_the_lmms_eval_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from mbpo_bench.cli.main import main

    assert main(["tasks", "verify", "mbpo_ai2d", "The answer is B", "-t", "B"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["correct"] is True and out["lmms"] == {
        "pred": "the answer is b", "gt": "b", "correct": False,
    }  # fmt: skip
    assert main(["tasks", "verify", "mbpo_embedded_existence", "yes", "-t", "yes"]) == 0
    assert "lmms" not in json.loads(capsys.readouterr().out)  # no lmms-eval built-in there
