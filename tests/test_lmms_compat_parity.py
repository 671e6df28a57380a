"""`<metric>_lmms` equals lmms-eval 0.7.3's own scoring on a committed corpus of >= 200 messy
answers per task (`tests/fixtures/lmms_corpus/`, built by its `build.py`): the same verdict on
every item and the same aggregate numbers.

Their side: the functions of lmms-eval's built-in tasks, loaded from lmms-eval's files (their
lmms-eval imports served by the real modules where light, `_task_utils.mcq_extract` and
`hallusion_bench.utils` loaded the same way). AI2D has no `process_results` of its own: its
YAML's `MultiChoiceRegexFilter`, lmms-eval's `.strip()` of generated text
(`ConfigurableTask.process_results`) and the registered `exact_match` (ignore case and
punctuation) are its scoring; importing `lmms_eval.api.metrics` costs ~15 s, hence `slow`.
Our side: `support_lmms_corpus.our_rows`, i.e. adapter + the task's `process_results`.
Run: `tox -e lmms`, or `pytest -m lmms tests/test_lmms_compat_parity.py` where lmms-eval is installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_lmms_corpus import FAMILIES, corpus, our_metrics, our_rows

pytestmark = pytest.mark.lmms


def _lmms_tasks() -> Path:
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or spec.origin is None:
        pytest.skip("lmms-eval is not installed")
    return Path(spec.origin).parent / "tasks"


def _load(rel: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, _lmms_tasks() / rel)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mcq() -> ModuleType:
    return _load("_task_utils/mcq_extract.py", "lmms_eval.tasks._task_utils.mcq_extract")


def test_corpus_is_large_and_messy() -> None:
    for family in FAMILIES:
        samples = corpus(family)
        forms = {s["form"] for s in samples}
        assert len(samples) >= 200, family
        assert len(forms) >= 12, family
        assert "" in {s["response"] for s in samples}, family  # empty answers
        assert max(len(s["response"]) for s in samples) > 500, family  # very long answers


def _same(family: str, theirs: list[tuple[Any, float]], pred_key: str = "pred") -> list[dict]:
    """Compare their per-item (prediction, score) with our rows; returns our rows."""
    rows = our_rows(family)
    assert len(rows) == len(theirs)
    mismatches = [
        (s["response"], (r["lmms"][pred_key], r["lmms"]["correct"]), t)
        for s, r, t in zip(corpus(family), rows, theirs, strict=True)
        if r["lmms"][pred_key] != t[0] or float(r["lmms"]["correct"]) != float(t[1])
    ]
    assert not mismatches, mismatches[:5]
    return rows


def _agg(family: str, rows: list[dict], expected: dict[str, float]) -> None:
    ours = our_metrics(family, rows)
    for metric, value in expected.items():
        assert ours[metric] == pytest.approx(value, rel=1e-12, abs=1e-12), metric


def test_pope() -> None:
    pope = _load("pope/utils.py", "_lmms_pope")
    results = [
        pope.pope_process_results(s["doc"], [s["response"]])["pope_accuracy"]
        for s in corpus("pope")
    ]
    rows = _same("pope", [(r["prediction"], r["score"]) for r in results])
    _agg("pope", rows, {
        "accuracy_lmms": pope.pope_aggregate_accuracy(results),
        "precision_lmms": pope.pope_aggregate_precision(results),
        "recall_lmms": pope.pope_aggregate_recall(results),
        "f1_lmms": pope.pope_aggregate_f1_score(results),
        "yes_ratio_lmms": pope.pope_aggregate_yes_ratio(results),
    })  # fmt: skip


def test_mme() -> None:
    mme = _load("mme/utils.py", "_lmms_mme")
    theirs, halves = [], {"mme_perception_score": [], "mme_cognition_score": []}
    for s in corpus("mme"):
        ((key, result),) = mme.mme_process_results(s["doc"], [s["response"]]).items()
        halves[key].append(result)
        theirs.append((mme.parse_pred_ans(s["response"]), result["score"]))
    rows = _same("mme", theirs)
    _agg("mme", rows, {
        "mme_perception_lmms": mme.mme_aggregate_results(halves["mme_perception_score"]),
        "mme_cognition_lmms": mme.mme_aggregate_results(halves["mme_cognition_score"]),
        "accuracy_lmms": sum(t[1] for t in theirs) / len(theirs),
    })  # fmt: skip


def test_mmstar(mcq: ModuleType) -> None:
    mmstar = _load("mmstar/utils.py", "_lmms_mmstar")
    results = [
        mmstar.mmstar_process_results(s["doc"], [s["response"]])["average"]
        for s in corpus("mmstar")
    ]
    preds = [
        mcq.extract_mcq_answer(s["response"], choices=["A", "B", "C", "D"])
        for s in corpus("mmstar")
    ]
    rows = _same("mmstar", [(p, r["score"]) for p, r in zip(preds, results, strict=True)])
    average = mmstar.mmstar_aggregate_results(results)
    micro = sum(r["score"] for r in results) / len(results)
    assert abs(average - micro) > 1e-3  # the corpus's uneven categories make macro != micro
    _agg("mmstar", rows, {"mmstar_average_lmms": average, "accuracy_lmms": micro})


def test_mmvp() -> None:
    mmvp = _load("mmvp/utils.py", "_lmms_mmvp")
    results = [
        mmvp.mmvp_process_results(s["doc"], [s["response"]])["mmvp_accuracy"]
        for s in corpus("mmvp")
    ]
    rows = _same("mmvp", [(r["pred_letter"], r["is_correct"]) for r in results])
    _agg("mmvp", rows, {
        "accuracy_lmms": mmvp.mmvp_aggregate_results(results),
        "mmvp_pair_accuracy_lmms": mmvp.mmvp_aggregate_pair_results(results),
    })  # fmt: skip


def test_hallusionbench() -> None:
    _load("hallusion_bench/utils.py", "lmms_eval.tasks.hallusion_bench.utils")
    hb = _load("hallusion_bench/evaluate_hb.py", "_lmms_hb")
    samples = corpus("hallusionbench")

    def fresh() -> list[dict[str, Any]]:  # their aggregation writes into the samples
        return [hb.hb_process_results(s["doc"], [s["response"]])["aAcc"] for s in samples]

    scored = fresh()
    hb.hb_aggregation_result_aAcc_intern(scored)  # sets each sample's "answer" ("1" = yes)
    theirs = [(r["answer"], float(r["answer"] == r["gt_answer"])) for r in scored]
    rows = _same("hallusionbench", theirs)
    _agg("hallusionbench", rows, {
        "hallusion_aacc_lmms": hb.hb_aggregation_result_aAcc_intern(fresh()),
        "hallusion_facc_lmms": hb.hb_aggregation_result_fAcc_intern(fresh()),
        "hallusion_qacc_lmms": hb.hb_aggregation_result_qAcc_intern(fresh()),
    })  # fmt: skip


def test_realworldqa(mcq: ModuleType) -> None:
    rwqa = _load("realworldqa/utils.py", "_lmms_rwqa")
    scores = [
        rwqa.realworldqa_process_results(s["doc"], [s["response"]])["exact_match"]
        for s in corpus("realworldqa")
    ]
    rows = our_rows("realworldqa")
    mismatches = [
        (s["response"], s["doc"]["answer"], r["lmms"]["correct"], t)
        for s, r, t in zip(corpus("realworldqa"), rows, scores, strict=True)
        if float(r["lmms"]["correct"]) != t
    ]
    assert not mismatches, mismatches[:5]
    _agg("realworldqa", rows, {"accuracy_lmms": sum(scores) / len(scores)})


@pytest.mark.slow  # lmms_eval.api.metrics imports `evaluate` (~15 s)
def test_ai2d() -> None:
    from lmms_eval.api.metrics import exact_match_hf_evaluate

    ai2d = _load("ai2d/utils.py", "_lmms_ai2d")
    flt = ai2d.MultiChoiceRegexFilter(
        regex_pattern=r"([A-Z])\.", group_select=0, ignore_case=True, ignore_punctuation=True
    )
    samples = corpus("ai2d")
    filtered = flt.apply([[s["response"]] for s in samples], [s["doc"] for s in samples])
    theirs = []
    for s, resp in zip(samples, filtered, strict=True):
        gold = ai2d.ai2d_doc_to_target(s["doc"], "mcq")
        pred = resp.strip()  # ConfigurableTask.process_results strips generated text
        score = exact_match_hf_evaluate([pred], [gold], ignore_case=True, ignore_punctuation=True)
        theirs.append((pred, float(score["exact_match"])))
    rows = our_rows("ai2d")
    mismatches = [
        (s["response"], r["lmms"]["correct"], t)
        for s, r, t in zip(samples, rows, theirs, strict=True)
        if float(r["lmms"]["correct"]) != t[1]
    ]
    assert not mismatches, mismatches[:5]
    _agg("ai2d", rows, {"accuracy_lmms": sum(t[1] for t in theirs) / len(theirs)})


def test_every_family_is_checked() -> None:
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(FAMILIES) <= tested


# --- beyond the corpus: random answers built from the pieces the parsers look at ---------------

PIECES = st.sampled_from(
    ["A", "B", "C", "D", "E", "a", "b", "c", "(", ")", "[", "]", ".", ",", ":", ";", "!", "?", "'",
     '"', "*", " ", "  ", "\n", "\t", "yes", "Yes", "YES", "no", "No", "y", "n", "not", "None",
     "the answer is", "Answer is", "ANSWER IS", "I choose", "option", "答案是", "选", "Option",
     "İ", "ß", "\x00", "Ｂ", "eyes", "know", "dog", "2", "two", "downhill", "Downhill."]
)  # fmt: skip
RESPONSES = st.one_of(st.lists(PIECES, max_size=10).map("".join), st.text(max_size=20))


def _ours_on(family: str, index: int, response: str) -> dict[str, Any]:
    """Our verdict for `response` on corpus doc `index` (the same path as our_rows)."""
    from mbpo_bench.tasks.common import item_to_doc
    from support_lmms_corpus import FAMILIES as TASKS

    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.data.registry import get_task
    from mbpo_bench.evaluation.batches import resolve_function

    spec = get_task(TASKS[family])
    raw = resolve_function(spec.data["adapter"])(
        {**corpus(family)[index]["doc"], "image": None}, index
    )
    item = TaskItem(spec.name, str(raw["doc_id"]), str(raw["question"]), str(raw["answer"]),
                    str(raw.get("verifier") or spec.verifier),
                    options=tuple(str(o) for o in raw.get("options") or ()),
                    meta=dict(raw.get("meta") or {}))  # fmt: skip
    process = resolve_function(spec.raw["process_results"])
    return next(iter(process(item_to_doc(item, spec.metrics), [response]).values()))["lmms"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=RESPONSES, index=st.integers(0, 199))
def test_random_answers_match_lmms_eval(response: str, index: int) -> None:
    _lmms_tasks()  # skips where lmms-eval is not installed
    pope, mme = _MODULES["pope"], _MODULES["mme"]
    mmstar, mmvp, rwqa = _MODULES["mmstar"], _MODULES["mmvp"], _MODULES["realworldqa"]
    doc = corpus("pope")[index]["doc"]
    assert _ours_on("pope", index, response)["correct"] == bool(
        pope.pope_process_results(doc, [response])["pope_accuracy"]["score"]
    )
    doc = corpus("mme")[index]["doc"]
    ((_, result),) = mme.mme_process_results(doc, [response]).items()
    ours = _ours_on("mme", index, response)
    assert (ours["pred"], ours["correct"]) == (mme.parse_pred_ans(response), bool(result["score"]))
    doc = corpus("mmstar")[index]["doc"]
    assert _ours_on("mmstar", index, response)["correct"] == bool(
        mmstar.mmstar_process_results(doc, [response])["average"]["score"]
    )
    doc = corpus("mmvp")[index]["doc"]
    theirs = mmvp.mmvp_process_results(doc, [response])["mmvp_accuracy"]
    ours = _ours_on("mmvp", index, response)
    assert (ours["pred"], ours["correct"]) == (theirs["pred_letter"], theirs["is_correct"])
    doc = corpus("realworldqa")[index]["doc"]
    assert _ours_on("realworldqa", index, response)["correct"] == bool(
        rwqa.realworldqa_process_results(doc, [response])["exact_match"]
    )
    doc = corpus("hallusionbench")[index]["doc"]
    hb_row = _MODULES["hallusionbench"].hb_process_results(doc, [response])["aAcc"]
    score = _MODULES["hallusionbench"].hb_aggregation_result_aAcc_intern([hb_row])
    assert _ours_on("hallusionbench", index, response)["correct"] == bool(score)


class _Lazy(dict):  # lmms-eval's task modules, loaded on first use
    def __missing__(self, key: str) -> ModuleType:
        if key == "hallusionbench":
            _load("hallusion_bench/utils.py", "lmms_eval.tasks.hallusion_bench.utils")
            module = _load("hallusion_bench/evaluate_hb.py", "_lmms_hb")
        else:
            _load("_task_utils/mcq_extract.py", "lmms_eval.tasks._task_utils.mcq_extract")
            module = _load(f"{key}/utils.py", f"_lmms_{key}")
        self[key] = module
        return module


_MODULES: dict[str, ModuleType] = _Lazy()


@pytest.mark.slow  # lmms_eval.api.metrics imports `evaluate` (~15 s)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=RESPONSES, index=st.integers(0, 199))
def test_random_answers_match_lmms_eval_ai2d(response: str, index: int) -> None:
    from lmms_eval.api.metrics import exact_match_hf_evaluate

    ai2d = _MODULES["ai2d"]
    flt = ai2d.MultiChoiceRegexFilter(regex_pattern=r"([A-Z])\.", group_select=0)
    # numpy's fixed-width strings in their exact_match: NUL tails, lower-casing that grows
    edges = [(response, index)] + [
        (e, i) for e in ("B\x00", "C\x00.", "İB", "Bİ", "İ") for i in range(8)
    ]
    for text, i in edges:
        doc = corpus("ai2d")[i]["doc"]
        pred = flt.apply([[text]], [doc])[0].strip()
        gold = ai2d.ai2d_doc_to_target(doc, "mcq")
        score = exact_match_hf_evaluate([pred], [gold], ignore_case=True, ignore_punctuation=True)
        assert _ours_on("ai2d", i, text)["correct"] == bool(score["exact_match"]), (text, i)
