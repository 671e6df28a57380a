"""The ablation report from results files made here (no model): every arm and seed of the full
factorial on two tasks, with one arm failed, one arm never evaluated and an empty mining run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mbpo_bench.ablation import ARMS, AblationConfig, build_plan
from mbpo_bench.ablation.execute import write_outputs
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
from mbpo_bench.runs import RunDir, write_atomic

COLOR, POPE = "mbpo_embedded_color", "mbpo_pope_random"


def _task(task: str, acc: float, counter: float | None) -> TaskResult:
    image = {"accuracy": Metric(acc, 8)}
    if counter is not None:
        image |= {"acc_counter_prior": Metric(counter, 4), "acc_prior_consistent": Metric(1.0, 4)}
    balance = {"visual_reliance_blind": Metric(acc - 0.5, 8)}
    return TaskResult(
        task=task, version="1", prompt_template="{question}", verifier="yes_no",
        generation=GenerationSettings(max_new_tokens=4), n_items=8, items_skipped=[],
        probes={"image": ProbeResult("image", 8, image)}, balance=balance,
    )  # fmt: skip


def _write_results(folder: Path, acc: float) -> None:
    results = Results(
        schema_version=SCHEMA_VERSION, model=ModelInfo(id="m"), probes=["image"],
        bootstrap=BootstrapSettings(10, 0.95, 0),
        tasks={COLOR: _task(COLOR, acc, acc / 2), POPE: _task(POPE, acc + 0.1, None)},
        packages={}, git_sha=None, python="3.11", device="cpu", wall_time_s=1.0,
        compute_time_s=1.0, samples_per_s=None, n_samples=16, items_skipped=0, config={},
    )  # fmt: skip
    write_atomic(folder / "results.json", results.to_json())
    RunDir(folder).finish()


def test_report_of_a_full_factorial_with_problems(tmp_path: Path) -> None:
    plan = build_plan(AblationConfig(model="m", seeds=[0, 1]), tmp_path / "abl")
    _write_results(Path(plan.base_eval.output), 0.5)
    for i, run in enumerate(plan.runs):
        if run.arm.name == "grpo":
            continue  # never evaluated
        _write_results(run.eval_dir, 0.6 + 0.01 * (i % len(ARMS)) + 0.02 * run.seed)
    empty = next(d for d in plan.minings if d.name.startswith("blind-noiig-seed0"))
    stats = {"candidates": 8, "selected": 8, "kept": 0, "attacked": 8, "clean_right": 0,
             "clean_wrong": 8, "flipped": 0, "flip_rate": None}  # fmt: skip
    write_atomic(empty / "pairs.stats.json", json.dumps(stats))
    failures = {"grpo seed 0": "the loss is nan at step 3 — lower optim.lr"}
    result = write_outputs(plan, failures, ["mbpo-bench", "ablate", "--model", "m"])
    report = result.report.read_text()
    lines = report.splitlines()

    assert "## Average over tasks" in report and f"## {COLOR}" in report and f"## {POPE}" in report
    assert f"- accuracy: over {COLOR}, {POPE}" in report
    assert f"- counter-prior acc.: over {COLOR}" in report  # POPE has no prior split
    grpo = [x for x in lines if x.startswith("| grpo |")]
    assert len(grpo) == 3 and all("missing" in x and x.endswith("| 0/2 |") for x in grpo)
    # sft is arm 0: 0.60 at seed 0, 0.62 at seed 1 on colour; the average adds POPE (+0.1)
    avg = report.split("## Average over tasks")[1].split("## ")[0]
    sft = next(x for x in avg.splitlines() if x.startswith("| sft |"))
    assert "| 0.660 ± 0.014 [0.650, 0.670] |" in sft and sft.endswith("| 2/2 |")
    assert "| base (start) | — | — | — | 0.550 |" in avg
    assert "## Main effects of the factorial (MBPO arms)" in report
    assert "| negatives: pgd |" in report and "| online: off |" in report
    assert "- **grpo seed 0 did not finish**: the loss is nan at step 3" in report
    assert "**mbpo-blind-noiig-offline seed 0**: mining kept no pair" in report
    assert "mbpo-blind-noiig-online seed 0**" not in report  # online arms still had data
    mining = report.split("## Mined pairs")[1].split("## ")[0]
    assert mining.count("| missing |") >= 1 and "| 8 | 8 | 8 | 0 | 8 | 0 | 0 | n/a |" in mining
    assert report.count("mbpo-bench train ") == 44 and report.count("mbpo-bench mine ") == 14
    assert "mbpo-bench ablate --model m" in report
    assert (
        f"mbpo-bench ablate --config {tmp_path}/abl/ablation.yaml --output {tmp_path}/abl" in report
    )

    per_seed = pd.read_csv(result.per_seed)
    assert len(per_seed) == (1 + 42) * 2 * 6  # base + 42 evaluated runs, 2 tasks, 6 quantities
    assert "(average over tasks)" not in set(per_seed["task"])
    # deterministic: the same files give the same report
    assert (
        write_outputs(plan, failures, ["mbpo-bench", "ablate", "--model", "m"]).report.read_text()
        == report
    )


def test_matched_section_compares_mbpo_arms_with_their_controls_over_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mbpo_bench.ablation import report as ablation_report

    plan = build_plan(
        AblationConfig(model="m", seeds=[0, 1, 2],
                       arms=["mbpo-pgd-iig-online", "sft-mined", "mbpo-twins", "sft-twins"]),
        tmp_path / "abl",
    )  # fmt: skip
    # per eval folder: 10 pairs; the twin arm gets 4-6 more pairs right than its control
    right = {"base": 2, "mbpo": 3, "sft_mined": 3, "mbpo_twins": 8, "sft_twins": 3}

    def table(path: Path, name: str) -> dict[str, dict[str, Any]]:
        seed = 0 if name == "base" else int(path.parent.name.removeprefix("seed"))
        k = right[name] + (seed % 2 if name == "mbpo_twins" else 0)
        return {f"t/p{i}": {"cell": "color", "counter": float(i < k), "consistent": 1.0,
                            "pair_accuracy": float(i < k)} for i in range(10)}  # fmt: skip

    monkeypatch.setattr("mbpo_bench.reporting.loading.load_run", lambda p, n: (Path(p), n))
    monkeypatch.setattr("mbpo_bench.quickstart_report.all_pairs", lambda run: table(*run))
    text = "\n".join(ablation_report.matched_section(plan))
    assert "## Matched comparisons over seeds" in text and "0, 1, 2" in text
    twins = next(x for x in text.splitlines() if "mbpo_twins - sft_twins, pair accuracy" in x)
    assert "— **shown**" in twins  # +0.5, +0.6, +0.5 over three seeds
    plain = next(x for x in text.splitlines() if "mbpo - sft_mined, pair accuracy" in x)
    assert "**not shown**" in plain  # identical at every seed
    # the findings drawn beside the text (quickstart's findings figure: marks = Finding.shown)
    assert "](report_findings.png)" in text and (plan.output / "report_findings.png").is_file()


def _pair_results(folder: Path, pair: float, split_tasks: tuple[str, ...] = (COLOR,)) -> None:
    tasks = {}
    for task in split_tasks:
        result = _task(task, 0.7, 0.4)
        result.probes["image"].metrics["pair_accuracy"] = Metric(pair, 4)
        tasks[task] = result
    results = Results(
        schema_version=SCHEMA_VERSION, model=ModelInfo(id="m"), probes=["image"],
        bootstrap=BootstrapSettings(10, 0.95, 0), tasks=tasks, packages={}, git_sha=None,
        python="3.11", device="cpu", wall_time_s=1.0, compute_time_s=1.0, samples_per_s=None,
        n_samples=8, items_skipped=0, config={},
    )  # fmt: skip
    write_atomic(folder / "results.json", results.to_json())
    RunDir(folder).finish()


def test_a_dev_lr_grid_chooses_by_mean_pair_accuracy_and_a_partial_run_still_reports(
    tmp_path: Path,
) -> None:
    from mbpo_bench.ablation.driver import report_ablation
    from mbpo_bench.ablation.lr_choice import read_choice

    cfg = AblationConfig(model="m", seeds=[0, 1], arms=["sft-mined", "dpo-mdpo"],
                         lrs=[1e-5, 2e-4], eval_base=False,
                         overrides=["eval:split=dev"])  # fmt: skip
    plan = build_plan(cfg, tmp_path / "dev")
    score = {
        ("sft-mined@lr1e-05", 0): 0.30,
        ("sft-mined@lr1e-05", 1): 0.10,  # mean 0.20
        ("sft-mined@lr0.0002", 0): 0.22,
        ("sft-mined@lr0.0002", 1): 0.24,  # mean 0.23
        ("dpo-mdpo@lr1e-05", 0): 0.5,
        ("dpo-mdpo@lr0.0002", 0): 0.5,
    }  # a tie: the smaller
    for run in plan.runs:
        if (run.arm.name, run.seed) in score:  # dpo-mdpo seed 1: never finished (time limit)
            _pair_results(run.eval_dir, score[run.arm.name, run.seed])
    result = report_ablation(cfg, tmp_path / "dev", argv=["mbpo-bench", "ablate"])
    assert set(result.failures) == {"dpo-mdpo@lr1e-05 seed 1", "dpo-mdpo@lr0.0002 seed 1"}
    chosen = read_choice(tmp_path / "dev")
    assert (chosen["sft-mined"].lr, chosen["sft-mined"].seeds) == (2e-4, 2)
    assert chosen["sft-mined"].scores == pytest.approx({"1e-05": 0.20, "0.0002": 0.23})
    assert (chosen["dpo-mdpo"].lr, chosen["dpo-mdpo"].seeds) == (1e-5, 1)
    report = result.report.read_text()
    assert "evaluated on split **dev**" in report
    assert "- `sft-mined`: chosen lr 0.0002 (1e-05: 0.200, 0.0002: 0.230)" in report
    assert "**dpo-mdpo@lr1e-05 seed 1 did not finish**: not finished (report written" in report
    assert "| pair acc. (twins) |" in report
    # the test ablation trains each tuned arm at its dev lr and says where it came from
    test_cfg = AblationConfig(model="m", seeds=[0], arms=["mbpo-pgd-iig-online", "sft-mined"],
                              lr_from=str(tmp_path / "dev"), eval_base=False)  # fmt: skip
    test = report_ablation(test_cfg, tmp_path / "test", argv=["mbpo-bench", "ablate"])
    assert [r.train_config.optim.lr for r in test.plan.runs] == [5e-5, 2e-4]
    text = test.report.read_text()
    assert "## Learning rates chosen on dev" in text
    assert (
        "- `sft-mined`: lr 0.0002 (dev pair accuracy 1e-05: 0.200, 0.0002: 0.230; 2 seeds)" in text
    )
