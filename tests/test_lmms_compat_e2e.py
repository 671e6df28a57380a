"""`mbpo-bench eval` then `mbpo-bench report` on the real-benchmark fixtures with a tiny model:
every `<metric>_lmms` the task declares lands in results.json, equals the lmms-eval rule re-applied
to the stored responses, and shows in the report's "(lmms-eval)" column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mbpo_bench.tasks.lmms_compat import rules

from mbpo_bench.cli.main import main
from mbpo_bench.data.registry import get_task
from mbpo_bench.evaluation.batches import resolve_function

pytestmark = pytest.mark.slow  # builds a tiny model and runs eval + report (~20 s on 2 cores)
FIXTURES = Path(__file__).parent / "fixtures"
TASKS = ["mbpo_pope_random", "mbpo_mme", "mbpo_mmstar", "mbpo_mmvp", "mbpo_ai2d",
         "mbpo_hallusionbench", "mbpo_realworldqa"]  # fmt: skip


def test_eval_writes_lmms_metrics_and_report_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mbpo_bench.models import build_tiny_model

    monkeypatch.setenv("MBPO_BENCH_DATA", str(FIXTURES))
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    model = build_tiny_model("llava", tmp_path / "tiny", seed=0)
    run = tmp_path / "run"
    args = ["eval", "--model", str(model), "--tasks", ",".join(TASKS), "--output", str(run)]
    assert main([*args, "--probes", "image"]) == 0
    results = json.loads((run / "results.json").read_text())
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    for task in TASKS:
        spec = get_task(task)
        metrics = results["tasks"][task]["probes"]["image"]["metrics"]
        declared = [m for m in spec.metrics if m.endswith("_lmms")]
        assert declared and all(m in metrics for m in declared), task
        task_rows = sorted((r for r in rows if r["task"] == task), key=lambda r: r["doc_id"])
        rule = getattr(rules, spec.raw["process_results"].rsplit(".", 1)[1])
        for r in task_rows:  # the stored verdict is the rule applied to the stored response
            assert r["lmms"] == rule(r["response"], {"answer": r["target_raw"]}), (
                task,
                r["doc_id"],
            )
        for name in declared:
            fn = resolve_function(spec.aggregations[name])
            assert metrics[name]["value"] == pytest.approx(fn(task_rows)), (task, name)
    report = tmp_path / "report.md"
    assert main(["report", str(run), "--out", str(report)]) == 0
    text = report.read_text()
    assert text.count("| probe / metric | run | run (lmms-eval) |") == len(TASKS)
    assert "Columns marked (lmms-eval)" in text
