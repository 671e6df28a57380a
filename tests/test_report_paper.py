"""The paper-layout table: each benchmark's headline with its CI, MME out of 2000 and MMHal out
of 6 in the normalised average (never a sum of raw scores), CHAIR apart, judges named."""

from __future__ import annotations

from pathlib import Path

from mbpo_bench.evaluation.schema import (
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
from mbpo_bench.reporting.paper import paper_section, paper_table


def _task(name: str, headline: str, value: float, judge: dict[str, object] | None = None,
          **more: float) -> TaskResult:  # fmt: skip
    metrics = {headline: Metric(value, 10, value - 0.1, value + 0.1)}
    metrics.update({k: Metric(v, 10, v, v, False) for k, v in more.items()})
    return TaskResult(
        task=name, version="1", prompt_template="{question}", verifier="", n_items=10,
        generation=GenerationSettings(max_new_tokens=4), items_skipped=[],
        probes={"image": ProbeResult("image", 10, metrics)}, balance={}, headline=headline,
        judge=dict(judge or {}),
    )  # fmt: skip


def _run(name: str, tasks: list[TaskResult]) -> RunData:
    results = Results(
        schema_version=1, model=ModelInfo(id="m"), probes=["image"],
        bootstrap=BootstrapSettings(1000, 0.95, 0), tasks={t.task: t for t in tasks},
        packages={}, git_sha=None, python="", device=None, wall_time_s=0.0,
        compute_time_s=0.0, samples_per_s=None, n_samples=0, items_skipped=0, config={},
    )  # fmt: skip
    return RunData(Path("/nonexistent") / name, name, results)


JUDGE = {"judge": "openai:gpt-4o", "prompt_hash": "sha256:abc", "prompt_source": "official.txt",
         "judge_errors": 1, "answers_judged": 10}  # fmt: skip


def test_normalised_average_uses_each_benchmarks_scale_and_keeps_chair_apart() -> None:
    tasks = [
        _task("mbpo_ai2d", "accuracy", 0.6),
        _task("mbpo_mme", "mme_perception", 1500.0),
        _task("mbpo_mmstar", "accuracy", 0.4),
        _task("mbpo_mmvet", "mmvet_score", 0.3, JUDGE),
        _task("mbpo_mmbench_en", "mmbench_circular", 0.5),
        _task("mbpo_mmhal", "mmhal_score", 3.0, JUDGE),
        _task("mbpo_chair", "chair_s", 0.5, chair_i=0.2),
    ]
    df, notes = paper_table([_run("a", tasks)], ReportConfig())
    row = df.loc["a"]
    assert list(df.columns) == [
        "AI2D", "MME (perception)", "MMStar", "MM-Vet", "MMBench (circular)",
        "MMHal-Bench (0-6)", "CHAIR_S", "CHAIR_I", "average (0-100)",
    ]  # fmt: skip
    # (60 + 75 + 40 + 30 + 50 + 50) / 6: MME 1500/2000, MMHal 3/6; CHAIR not in it
    assert row["average (0-100)"] == f"{(60 + 75 + 40 + 30 + 50 + 50) / 6:.1f}"
    assert row["MME (perception)"] == "1500.0 [1499.9, 1500.1]"
    assert row["MMHal-Bench (0-6)"] == "3.00 [2.90, 3.10]"
    assert row["CHAIR_I"].startswith("0.200")
    assert any("openai:gpt-4o" in n and "sha256:abc" in n and "1 judge errors" in n for n in notes)
    assert any("only the official prompt" in n for n in notes)


def test_a_missing_benchmark_is_missing_and_left_out_of_the_average() -> None:
    full = [_task("mbpo_ai2d", "accuracy", 0.6), _task("mbpo_mmstar", "accuracy", 0.4)]
    runs = [_run("a", full), _run("b", full[:1])]
    df, notes = paper_table(runs, ReportConfig())
    assert df.loc["b", "MMStar"] == "missing"
    assert df.loc["a", "average (0-100)"] == "60.0" == df.loc["b", "average (0-100)"]
    assert any("MMStar" in n for n in notes)
    assert paper_section([_run("c", [_task("mbpo_pope_random", "accuracy", 0.5)])],
                         ReportConfig()) == []  # fmt: skip
