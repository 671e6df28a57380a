"""`mbpo-bench ablate --jobs N`: runs that share a mining folder stay in one worker, bad --jobs
fails as one line, a crashed or buggy worker becomes a failure naming its runs (and only its
runs), and N workers give the same per_seed.csv as one run at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from mbpo_bench.ablation import AblationConfig, Arm, Plan, Run, build_plan, run_ablation
from mbpo_bench.ablation import jobs as jobs_mod
from mbpo_bench.ablation.jobs import (
    BASE,
    Group,
    GroupResult,
    died,
    format_groups,
    group_runs,
    merge,
    run_group,
    run_groups,
)
from mbpo_bench.cli.main import main
from mbpo_bench.errors import UserError

TINY_BENCH = "n_train: 32\nn_eval_per_cell: 4\n"
ARMS = "sft,dpo-pgd,mbpo-pgd-iig-offline"  # the last two share the PGD pairs


# ---- grouping and dry run (no training) ------------------------------------------------------


def test_groups_keep_runs_of_one_mining_folder_together_in_plan_order(tmp_path: Path) -> None:
    plan = build_plan(AblationConfig(model=str(tmp_path / "m"), seeds=[0, 1]), tmp_path / "o")
    groups = group_runs(plan)
    assert groups[0].base and groups[0].label == BASE and not groups[0].runs
    runs = [r for g in groups for r in g.runs]
    assert sorted(r.label for r in runs) == sorted(r.label for r in plan.runs)  # each run once
    order = {id(r): i for i, r in enumerate(plan.runs)}
    for group in groups[1:]:
        assert group.label == group.runs[0].label
        assert [order[id(r)] for r in group.runs] == sorted(order[id(r)] for r in group.runs)
        mines = {r.mine_dir for r in group.runs}
        assert len(mines) == 1  # one mining folder per group (or none: a run of its own)
        if None in mines:
            assert len(group.runs) == 1
    for folder in plan.minings:  # every run on a mining folder is in one group
        assert sum(any(r.mine_dir == folder for r in g.runs) for g in groups) == 1
    seed0 = next(g for g in groups if g.label == "dpo-pgd seed 0")
    assert [r.arm.name for r in seed0.runs] == [
        "dpo-pgd", "mbpo-pgd-iig-online", "mbpo-pgd-iig-offline", "sft-mined"
    ]  # fmt: skip
    # per seed: sft, grpo and the 7 mining folders (the twin variant's is the 7th); plus the
    # base evaluation
    assert len(groups) == 1 + 2 * 9
    no_base = build_plan(
        AblationConfig(model=str(tmp_path / "m"), seeds=[0], arms=["sft"], eval_base=False),
        tmp_path / "o",
    )
    assert [g.label for g in group_runs(no_base)] == ["sft seed 0"]


def test_dry_run_shows_the_groups_only_with_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["ablate", "--model", str(tmp_path / "m"), "--output", str(tmp_path / "o"),
            "--seeds", "0", "--arms", ARMS, "--dry-run"]  # fmt: skip
    assert main([*args, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "--jobs 2: 3 groups, up to 2 at once" in out
    assert "group 1: base evaluation" in out and "group 2: sft seed 0" in out
    assert "group 3: dpo-pgd seed 0, mbpo-pgd-iig-offline seed 0" in out
    assert main(args) == 0
    assert "groups, up to" not in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("jobs", ["0", "-2"])
def test_jobs_below_one_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    args = ["ablate", "--model", str(tmp_path / "m"), "--output", str(tmp_path / "o"), "--jobs"]
    assert main([*args, jobs]) == 2
    err = capsys.readouterr().err
    assert f"--jobs {jobs}" in err and "--jobs 1" in err and err.count("\n") == 1
    with pytest.raises(UserError, match="--jobs"):
        run_ablation(AblationConfig(model=str(tmp_path / "m")), tmp_path / "o", jobs=0)
    assert not (tmp_path / "o").exists()


# ---- workers and failures, on a fake plan ----------------------------------------------------


def fake_plan(tmp_path: Path, names: list[str], base: bool = False) -> Plan:
    """A plan of runs with no real configs: only what grouping and the workers look at."""
    runtime = SimpleNamespace(runtime=SimpleNamespace(threads=1))
    runs = [
        Run(Arm(n, "sft"), 0, tmp_path / n / "train", tmp_path / n / "eval", [], runtime, n)
        for n in names
    ]
    arms = [r.arm for r in runs]
    plan = Plan(AblationConfig(model="m"), tmp_path, ("m", None), arms, runs)
    plan.base_eval = "base-config" if base else None
    return plan


def finish(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"finished": True}))


def test_worker_records_user_errors_and_stops_its_group_at_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = fake_plan(tmp_path, ["a", "b", "c", "d"])

    def execute_run(run: Run, plan: Plan, log: Any, progress: bool, failed: Any) -> None:
        log(f"  training {run.arm.name}")
        if run.arm.name == "a":
            raise UserError("no pair kept")
        if run.arm.name == "c":
            raise RuntimeError("a bug")
        run.eval_config = f"{run.arm.name} trained"

    monkeypatch.setattr(jobs_mod, "execute_run", execute_run)
    result = run_group(plan, Group("a seed 0", plan.runs), False)
    assert result.failures["a seed 0"] == "no pair kept"
    assert "b seed 0" not in result.failures
    assert result.failures["c seed 0"].startswith("crashed with RuntimeError: a bug")
    assert result.failures["d seed 0"].startswith("not run: c seed 0 crashed")
    assert result.eval_configs == {"a seed 0": "a", "b seed 0": "b trained"}
    err = capsys.readouterr().err
    assert "[a seed 0] training b\n" in err and "[a seed 0] (3/4) c seed 0\n" in err
    assert "Traceback" in err and "RuntimeError: a bug" in err
    assert all(line.startswith("[a seed 0] ") for line in err.splitlines() if "training" in line)


def test_merge_orders_failures_as_the_sequential_path_and_applies_eval_configs(
    tmp_path: Path,
) -> None:
    plan = fake_plan(tmp_path, ["a", "b", "c"])
    results = [
        GroupResult({"c seed 0": "late"}, {"c seed 0": "c trained"}),
        GroupResult({"a seed 0": "early"}, {"a seed 0": "a", "b seed 0": "b trained"}),
        GroupResult({BASE: "no model"}),
    ]
    failures = merge(plan, results)
    assert list(failures.items()) == [
        (BASE, "no model"), ("a seed 0", "early"), ("c seed 0", "late")
    ]  # fmt: skip
    assert [r.eval_config for r in plan.runs] == ["a", "b trained", "c trained"]


def test_a_dead_worker_fails_only_its_unfinished_runs(tmp_path: Path) -> None:
    plan = fake_plan(tmp_path, ["a", "b"], base=True)
    finish(plan.runs[0].eval_dir)
    message = died(Group("a seed 0", plan.runs), RuntimeError("gone")).failures
    assert list(message) == ["b seed 0"] and "RuntimeError: gone" in message["b seed 0"]
    assert "rerun the same command" in message["b seed 0"]
    assert list(died(Group(BASE, base=True), RuntimeError("x")).failures) == [BASE]


WORKERS = """
import os
from mbpo_bench.ablation.jobs import GroupResult

def worker(plan, group, progress):
    if group.label.startswith("crash"):
        os._exit(9)
    if group.label.startswith("boom"):
        raise ValueError("outside a run")
    return GroupResult(eval_configs={r.label: "done" for r in group.runs})
"""


def test_spawned_workers_crash_or_raise_without_losing_the_other_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ablate_jobs_workers.py").write_text(WORKERS)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned children get the parent's sys.path
    from ablate_jobs_workers import worker  # type: ignore[import-not-found]

    plan = fake_plan(tmp_path, ["crash", "ok", "boom"])
    groups = [Group(r.label, [r]) for r in plan.runs]
    lines: list[str] = []
    results = run_groups(plan, groups, 2, lines.append, worker=worker)
    assert "worker process died" in results[0].failures["crash seed 0"]
    assert results[1] == GroupResult(eval_configs={"ok seed 0": "done"})
    assert "failed with ValueError: outside a run" in results[2].failures["boom seed 0"]
    assert len(lines) == 3 and all("groups done]" in line for line in lines)


def test_format_groups_names_every_run(tmp_path: Path) -> None:
    plan = fake_plan(tmp_path, ["a", "b"], base=True)
    groups = [Group(BASE, base=True), Group("a seed 0", plan.runs)]
    assert format_groups(groups, 4) == (
        "--jobs 4: 2 groups, up to 4 at once (each in one worker)\n"
        "  group 1: base evaluation\n  group 2: a seed 0, b seed 0\n"
    )


# ---- end to end: --jobs 2 gives the same per_seed.csv as --jobs 1 -----------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    import torch

    from mbpo_bench.models import build_tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ablate_jobs")
    (root / "bench.yaml").write_text(TINY_BENCH)
    with pytest.MonkeyPatch.context() as mp:  # environment: the spawned workers inherit it
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(root / "bench.yaml"))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield {"root": root, "model": build_tiny_model("llava", root / "model", seed=0)}


def argv(tiny: dict[str, Path], output: str, *extra: str) -> list[str]:
    return [
        "ablate", "--model", str(tiny["model"]), "--data", "mbpo_embedded_color",
        "--output", str(tiny["root"] / output), "--seeds", "0", "--arms", ARMS,
        "--steps", "2", "--batch-size", "4", "--eval-limit", "3", "--no-progress",
        "runtime.threads=1", "runtime.progress=false", "runtime.tensorboard=false",
        "optim.warmup_ratio=0.0", "mining.steps=2", "mining.limit=8", "mining.max_new_tokens=3",
        "mining.require_clean_correct=false",  # a random tiny model is rarely right on clean
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_two_jobs_give_the_same_per_seed_results_as_one(
    tiny: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(argv(tiny, "one")) == 0
    capfd.readouterr()
    assert main(argv(tiny, "two", "--jobs", "2")) == 0
    log = capfd.readouterr().err  # the workers' stderr is the parent's file descriptor 2
    assert "[dpo-pgd seed 0] mining ->" in log and "[dpo-pgd seed 0] training [mbpo]" in log
    assert "[sft seed 0] training [sft]" in log and "[base] evaluating ->" in log
    assert "[3/3 groups done]" in log
    one, two = tiny["root"] / "one", tiny["root"] / "two"
    per_seed = pd.read_csv(two / "per_seed.csv")
    assert set(per_seed["arm"]) == {"base (start)", *ARMS.split(",")}
    pd.testing.assert_frame_equal(per_seed, pd.read_csv(one / "per_seed.csv"))
    # the metrics of a tiny model are all 0, so compare what the runs computed, too
    assert outcomes(two) == outcomes(one)
    pd.testing.assert_frame_equal(pd.read_parquet(pairs(two)), pd.read_parquet(pairs(one)))
    report = (two / "report.md").read_text()
    assert "| dpo-pgd |" in report  # command.txt: the test's argv (main() records sys.argv)
    assert report.replace(str(two), str(one)) == (one / "report.md").read_text()
    assert (two / "ablation.yaml").read_text() == (one / "ablation.yaml").read_text()


def pairs(output: Path) -> Path:
    (folder,) = (output / "mining").iterdir()  # mined once, reused by the MBPO arm
    return folder / "pairs.parquet"


def outcomes(output: Path) -> dict[str, Any]:
    """Per arm: training losses and gradient norms per step, and every evaluation answer."""
    from mbpo_bench.runs import read_jsonl

    found: dict[str, Any] = {}
    for arm in ARMS.split(","):
        run = output / "arms" / arm / "seed0"
        steps = [
            (r["step"], r["loss"], r["grad_norm"])
            for r in read_jsonl(run / "train" / "metrics.jsonl")
        ]
        answers = [
            (r["probe"], r["doc_id"], r["response"])
            for r in read_jsonl(run / "eval" / "samples.jsonl")
        ]
        assert len(steps) == 2 and answers, arm
        found[arm] = (steps, answers)
    return found
