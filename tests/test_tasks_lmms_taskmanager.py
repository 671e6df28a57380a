"""Our task YAML load through lmms-eval's own TaskManager, offline, from the fixture data, and
lmms-eval's process_results + aggregation on those docs give our registry's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lmms, pytest.mark.slow]  # importing lmms-eval alone takes ~18 s

FIXTURES = Path(__file__).parent / "fixtures"
PREDICTED = {
    "mbpo_pope_random": "Yes.", "mbpo_pope_popular": "no", "mbpo_pope_adversarial": "yes",
    "mbpo_mme": "no", "mbpo_mmvp": "B", "mbpo_mmstar": "(A)", "mbpo_ai2d": "root",
    "mbpo_hallusionbench": "Yes", "mbpo_amber_discriminative": "No.", "mbpo_realworldqa": "B",
    "mbpo_embedded_count": "2", "mbpo_embedded_existence": "no", "mbpo_embedded_color": "red",
    "mbpo_chair": "A dog catches a frisbee next to a cat.",
    "mbpo_mmbench_en": "B", "mbpo_mmvet": "A red bus.", "mbpo_mmhal": "There are two cats.",
}  # fmt: skip
TASKS, PREDICTIONS = list(PREDICTED), list(PREDICTED.values())

SCRIPT = """
import json, sys
from lmms_eval.tasks import TaskManager, get_task_dict
from mbpo_bench.data.registry import builtin_tasks_dir, get_task, load_items, aggregate
from mbpo_bench.evaluation.batches import resolve_function
from mbpo_bench.tasks.common import item_to_doc
tasks, preds = json.loads(sys.argv[1]), json.loads(sys.argv[2])
manager = TaskManager(include_path=str(builtin_tasks_dir()), include_defaults=False)
out = {}
for name, pred in zip(tasks, preds):
    task = get_task_dict([name], manager)[name]
    docs = list(task.test_docs())
    results = [task.process_results(d, [pred]) for d in docs]
    agg = task.aggregation()
    theirs = {}
    for m in results[0]:
        value = agg[m]([r[m] for r in results])  # dict-valued ones flatten as ours do: m[key]
        theirs.update({f"{m}[{k}]": v for k, v in value.items()} if isinstance(value, dict) else {m: value})
    spec = get_task(name)
    items = load_items(spec)
    process = resolve_function(spec.raw.get("process_results"))  # as `mbpo-bench eval` scores
    rows = [next(iter(process(item_to_doc(i, spec.metrics), [pred]).values())) for i in items]
    out[name] = {"theirs": theirs, "ours": aggregate(spec, rows), "n_docs": len(docs),
                 "n_items": len(items), "prompt_equal": task.doc_to_text(docs[0]) == items[0].question,
                 "n_images": len(task.doc_to_visual(docs[0]))}
print("RESULT" + json.dumps(out))
"""


def test_taskmanager_loads_our_tasks_offline(tmp_path: Path) -> None:
    pytest.importorskip("lmms_eval")
    small = tmp_path / "embedded.yaml"
    small.write_text("seed: 2\nn_train: 40\nn_eval_per_cell: 4\n")
    env = {
        **os.environ,
        "MBPO_BENCH_DATA": str(FIXTURES),
        "MBPO_BENCH_CACHE": str(tmp_path / "cache"),
        "MBPO_BENCH_EMBEDDED_CONFIG": str(small),
        "HF_DATASETS_CACHE": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(TASKS), json.dumps(PREDICTIONS)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    from mbpo_bench.data.registry import list_tasks

    assert set(TASKS) == {spec.name for spec in list_tasks()}  # every task is exercised
    for name in TASKS:
        got = result[name]
        assert got["n_docs"] == got["n_items"] > 0, name
        assert got["prompt_equal"] and got["n_images"] == 1, name
        assert got["theirs"] == pytest.approx(got["ours"], nan_ok=True), name
    assert result["mbpo_embedded_count"]["n_docs"] == 8
