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


def test_each_mining_folder_is_one_group_and_its_runs_wait_for_it(tmp_path: Path) -> None:
    plan = build_plan(AblationConfig(model=str(tmp_path / "m"), seeds=[0, 1]), tmp_path / "o")
    groups = group_runs(plan)
    n_mining = len(plan.minings)
    # mining first (they gate the most work), then the base evaluation, then a group per run
    assert [g.mining for g in groups[:n_mining]] == list(plan.minings)
    assert all(not g.runs and g.label.startswith("mining ") for g in groups[:n_mining])
    assert groups[n_mining].base and groups[n_mining].label == BASE
    rest = groups[n_mining + 1 :]
    assert [g.runs for g in rest] == [[r] for r in plan.runs]  # each run once, in plan order
    for group in rest:
        assert group.label == group.runs[0].label
        assert group.after == group.runs[0].mine_dir  # None for arms that do not mine
    # per seed: the 7 mining folders (the twin variant's is the 7th)
    assert n_mining == 2 * 7
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
    assert "--jobs 2: 5 groups, up to 2 at once" in out
    assert "group 1: mining " in out and "group 2: base evaluation" in out
    assert "group 3: sft seed 0\n" in out
    assert "group 4: dpo-pgd seed 0 (after mining pgd-iig-seed0-" in out
    assert "group 5: mbpo-pgd-iig-offline seed 0 (after mining pgd-iig-seed0-" in out
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


def test_runs_start_after_their_mining_and_fail_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ablate_jobs_workers.py").write_text(WORKERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from ablate_jobs_workers import worker  # type: ignore[import-not-found]

    plan = fake_plan(tmp_path, ["a", "b", "c"])
    good, bad = tmp_path / "mining" / "good", tmp_path / "mining" / "boom-bad"
    groups = [
        Group("mining good", mining=good),
        Group("boom mining", mining=bad),
        Group("a seed 0", [plan.runs[0]], after=good),
        Group("b seed 0", [plan.runs[1]], after=bad),
        Group("c seed 0", [plan.runs[2]]),
    ]
    lines: list[str] = []
    results = run_groups(plan, groups, 2, lines.append, worker=worker)
    assert results[2] == GroupResult(eval_configs={"a seed 0": "done"})
    assert results[3].failures["b seed 0"].startswith("its mining failed: its worker failed")
    assert results[4] == GroupResult(eval_configs={"c seed 0": "done"})
    done = [line.split("] ", 1)[1] for line in lines]
    assert done.index("a seed 0") > done.index("mining good")  # waited for its mining
    assert "b seed 0" not in done and len(lines) == 4  # never started


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
    assert "[mining pgd-iig-seed0-" in log and "] mining ->" in log
    assert "[dpo-pgd seed 0] training [dpo]" in log
    assert "[mbpo-pgd-iig-offline seed 0] training [mbpo]" in log
    assert "[sft seed 0] training [sft]" in log and "[base] evaluating ->" in log
    assert "[5/5 groups done]" in log
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
