"""MMBench-EN dev: the lmms-eval layout loads offline, CircularEval on hand-made passes, and an
end-to-end eval on the fixture with per-category scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mbpo_bench.tasks import metrics as m
from mbpo_bench.tasks.common import score_row

from mbpo_bench.data.registry import load_items
from mbpo_bench.evaluation.config import EvalConfig
from mbpo_bench.evaluation.scoring import score_task

FIXTURES = Path(__file__).parent / "fixtures"


def _items() -> list[Any]:
    return load_items("mbpo_mmbench_en", data_root=FIXTURES)


def test_fixture_in_lmms_eval_layout_gives_one_pass_per_circular_shift() -> None:
    items = _items()
    # 4 + 4 + 2 passes; the file's own copy row (index 1000000) is regenerated, not doubled
    assert [it.doc_id for it in items] == [
        "0", "1000000", "2000000", "3000000", "1", "1000001", "2000001", "3000001", "2", "1000002",
    ]  # fmt: skip
    first, shifted = items[0], items[1]
    assert first.options == ("red", "green", "blue", "yellow") and first.target == "A"
    assert shifted.options == ("green", "blue", "yellow", "red") and shifted.target == "D"
    # the answer follows its option through every shift
    for it in items:
        assert (
            it.options["ABCD".index(it.target)]
            == {0: "red", 1: "a car", 2: "no"}[it.meta["question_index"]]
        )
    # lmms-eval's mmbench_en prompt: hint, question, sys_prompt, options, blank line, post_prompt
    assert items[4].question == (
        "Two objects are shown. Which object is on the left? There are several options:\n"
        "A. a cup\nB. a dog\nC. a car\nD. a tree\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert items[8].question.startswith("Is the light on? There are")  # hint "nan" dropped


def test_limit_keeps_whole_questions() -> None:
    items = load_items("mbpo_mmbench_en", data_root=FIXTURES, limit=2)
    assert {it.meta["question_index"] for it in items} == {0, 1} and len(items) == 8


def _rows(answers: dict[str, str]) -> list[dict[str, Any]]:
    return [
        score_row("multiple_choice", answers.get(it.doc_id, it.target), it.target, it.options,
                  doc_id=it.doc_id, meta=it.meta)
        for it in _items()
    ]  # fmt: skip


def test_one_wrong_shift_makes_the_question_wrong() -> None:
    all_right = _rows({})
    assert m.mmbench_circular(all_right) == 1.0 and m.mmbench_single(all_right) == 1.0
    # question 0 right as published (shift 0) but wrong at shift 2: circular loses it
    one_wrong = _rows({"2000000": "A"})
    assert m.mmbench_single(one_wrong) == 1.0
    assert m.mmbench_circular(one_wrong) == pytest.approx(2 / 3)
    assert m.mmbench_circular_by_category(one_wrong) == {
        "attribute_recognition": 0.5, "spatial_relationship": 1.0,
    }  # fmt: skip
    assert m.mmbench_circular_by_l2_category(one_wrong) == {
        "Attribute Reasoning": 0.5, "Relation Reasoning": 1.0,
    }  # fmt: skip
    # an answer by option text counts like its letter ("a car" is C at shift 0, A at shift 2)
    by_text = _rows({"1": "a car", "2000001": "It is a car."})
    assert m.mmbench_circular(by_text) == 1.0


def test_scored_results_carry_circular_single_and_per_category_with_cis() -> None:
    items = _items()
    rows = [{**r, "probe": "image"} for r in _rows({"2000000": "A", "1000002": "B"})]
    meta = {
        "verifier": "multiple_choice", "version": "1", "prompt_template": "", "n_items": len(items),
        "skipped": [], "generation": {"max_new_tokens": 16}, "probes": {"image": [it.doc_id for it in items]},
        "metrics": {name: {"aggregation": f"mbpo_bench.tasks.metrics.{name}", "higher_is_better": True}
                    for name in ("mmbench_circular", "mmbench_single", "mmbench_circular_by_category")},
    }  # fmt: skip
    res = score_task("mbpo_mmbench_en", meta, rows, EvalConfig())
    got = res.probes["image"].metrics
    assert got["mmbench_circular"].value == pytest.approx(1 / 3)
    assert got["mmbench_single"].value == 1.0
    assert got["accuracy"].value == pytest.approx(8 / 10)  # over passes
    cat = got["mmbench_circular_by_category[attribute_recognition]"]
    assert cat.value == 0.0 and cat.ci_low is not None
    assert got["mmbench_circular_by_category[spatial_relationship]"].value == 1.0


def test_bootstrap_draws_whole_questions_not_passes() -> None:
    from mbpo_bench.evaluation.scoring import _Scorer

    rows = _rows({"2000000": "A", "1000002": "B"})  # questions 0 and 2 wrong, 1 right
    scorer = _Scorer("mbpo_mmbench_en", EvalConfig(), cluster="question_index")
    seen = set()
    for (drawn,) in scorer.resamples(rows):
        labels = {str(r["meta"]["question_index"]) for r in drawn}
        assert len(labels) == 3  # three question draws, a repeated one relabelled
        by_label: dict[str, int] = {}
        for r in drawn:
            by_label[str(r["meta"]["question_index"])] = (
                by_label.get(str(r["meta"]["question_index"]), 0) + 1
            )
        # every drawn question comes with all of its passes (4, 4 or 2)
        assert set(by_label.values()) <= {2, 4}
        value = m.mmbench_circular(drawn)
        assert abs(value * 3 - round(value * 3)) < 1e-9  # whole questions: k / 3
        seen.add(round(value, 6))
    assert len(seen) > 1  # the resamples differ
