"""Run an ablation plan: mine, train and evaluate every arm and seed, then write the report.

Resumable by construction: each step is a run folder of its own (`mbpo_bench.runs`), so a rerun
of the same command skips finished folders, resumes an interrupted training run from its last
checkpoint and an interrupted evaluation from its last written sample. Before anything runs,
every existing folder's saved config is compared with the plan's: a folder made with other
settings stops the ablation at once (one line naming it) instead of being skipped into a report
that would mix two configurations.

A run that fails with a `UserError` (a diverged loss, mining that kept no DPO pair, a model that
does not load) is recorded and the ablation goes on with the other runs; the report lists it
and the command exits non-zero at the end. Any other exception is a bug and stops everything.
Runs go seed-major, so an interrupted ablation has complete comparisons for its first seeds.
With `--jobs N` the runs go to N worker processes instead (`jobs.py`), grouped so that the runs
sharing a mining folder stay together; a crashed worker then fails its own runs only. The entry
point that chooses between the two, `run_ablation`, is `driver.py`: this module and `jobs.py`
both sit below it, so neither imports the other's caller.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mbpo_bench.ablation.plan import Plan, Run
from mbpo_bench.config import dump_yaml
from mbpo_bench.errors import UserError
from mbpo_bench.runs import RunDir, write_atomic

Log = Callable[[str], None]
REPORT = "report.md"
PER_SEED = "per_seed.csv"


@dataclass
class AblationResult:
    plan: Plan
    report: Path
    per_seed: Path
    failures: dict[str, str] = field(default_factory=dict)


def check_existing(plan: Plan) -> None:
    """Refuse folders that hold a run (finished or not) with a config other than the plan's."""
    folders: list[tuple[Path, Any]] = list(plan.minings.items())
    if plan.base_eval is not None:
        folders.append((Path(plan.base_eval.output), plan.base_eval))
    for run in plan.runs:
        folders += [(run.train_dir, run.train_config), (run.eval_dir, run.eval_config)]
    for folder, config in folders:
        saved = folder / "config.yaml"
        if saved.is_file() and saved.read_text() != dump_yaml(config):
            raise UserError(
                f"{folder} holds a run made with other settings — rerun with the settings of "
                f"{plan.output / 'ablation.yaml'} (--config) or choose another --output"
            )


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def mine(folder: Path, config: Any, log: Log) -> None:
    from mbpo_bench.trainers.mining import run_mine

    if RunDir(folder).finished:
        return
    log(f"  mining -> {folder}")
    pairs, _ = run_mine(config, folder)
    log(f"  mined {len(pairs)} pairs")


def train(run: Run, log: Log) -> None:
    from mbpo_bench.trainers.table import load_trainer

    if RunDir(run.train_dir).finished:
        return
    log(f"  training [{run.arm.method}] -> {run.train_dir}")
    _, fn = load_trainer(run.arm.method)
    fn(run.train_config, run.train_dir, resume=True)


def evaluate(config: Any, log: Log, progress: bool) -> None:
    from mbpo_bench.evaluation.api import run_eval

    if RunDir(Path(config.output)).finished:
        return
    log(f"  evaluating -> {config.output}")
    run_eval(config, progress=progress)


def trained_weights(run: Run) -> None:
    """Point the run's evaluation at the weights its training wrote (as `--model RUN` would)."""
    from mbpo_bench.trainers.policy import resolve_start

    model, adapter = resolve_start(str(run.train_dir))
    if (model, adapter) != (run.eval_config.model, run.eval_config.adapter):
        run.eval_config = replace(run.eval_config, model=model, adapter=adapter)


def execute_run(run: Run, plan: Plan, log: Log, progress: bool, failed: dict[Path, str]) -> None:
    if run.mine_dir is not None:
        if run.mine_dir in failed:
            raise UserError(f"its mining failed: {failed[run.mine_dir]}")
        try:
            mine(run.mine_dir, plan.minings[run.mine_dir], log)
        except UserError as exc:
            failed[run.mine_dir] = str(exc)
            raise
    train(run, log)
    trained_weights(run)
    evaluate(run.eval_config, log, progress)


def run_sequential(plan: Plan, log: Log, progress: bool) -> dict[str, str]:
    """The base evaluation, then every run in plan order, in this process; the failures."""
    failures: dict[str, str] = {}
    failed_mining: dict[Path, str] = {}
    if plan.base_eval is not None:
        log(f"[base] {plan.config.model}")
        try:
            evaluate(plan.base_eval, log, progress)
        except UserError as exc:
            failures["base"] = str(exc)
    for i, run in enumerate(plan.runs, 1):
        log(f"[{i}/{len(plan.runs)}] {run.label}")
        try:
            execute_run(run, plan, log, progress, failed_mining)
        except UserError as exc:
            failures[run.label] = str(exc)
            log(f"  failed: {exc}")
        finally:
            _free_memory()
    return failures


def write_outputs(plan: Plan, failures: dict[str, str], argv: list[str]) -> AblationResult:
    """per_seed.csv and report.md (atomically) from the evaluated run folders."""
    from mbpo_bench.ablation.aggregate import AVERAGE, Measurements
    from mbpo_bench.ablation.lr_choice import write_choice
    from mbpo_bench.ablation.report import eval_split, render

    measured = Measurements.build(*collect(plan))
    out = plan.output
    write_choice(plan, measured.per_seed, eval_split(plan))
    per_seed = measured.per_seed[measured.per_seed["task"] != AVERAGE]
    write_atomic(out / PER_SEED, per_seed.to_csv(index=False))
    write_atomic(out / REPORT, render(plan, measured, failures, argv, out))
    return AblationResult(plan, out / REPORT, out / PER_SEED, failures)


def collect(plan: Plan) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, set[str]]]:
    """(per-seed rows, arm -> seeds evaluated, task -> versions seen) of finished evaluations."""
    from mbpo_bench.ablation.aggregate import seed_rows
    from mbpo_bench.ablation.report import BASE
    from mbpo_bench.evaluation.schema import Results

    found: list[tuple[str, int | None, Path]] = []
    if plan.base_eval is not None:
        found.append((BASE, None, Path(plan.base_eval.output)))
    found += [(r.arm.name, r.seed, r.eval_dir) for r in plan.runs]
    rows: list[dict[str, Any]] = []
    evaluated: dict[str, int] = {}
    versions: dict[str, set[str]] = {}
    for arm, seed, folder in found:
        if not RunDir(folder).finished:
            continue
        results = Results.read(folder / "results.json")
        rows += seed_rows(results, arm, seed)
        evaluated[arm] = evaluated.get(arm, 0) + 1
        for task, result in results.tasks.items():
            versions.setdefault(task, set()).add(result.version)
    return rows, evaluated, versions
