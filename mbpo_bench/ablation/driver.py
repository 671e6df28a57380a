"""`run_ablation`: check and write the plan, run it (one run at a time, or `--jobs N` groups at
once), then write the report.

It sits above both executors: `execute.py` (the per-run steps and the sequential loop) and
`jobs.py` (worker processes running those same per-run steps), so the import graph is
driver -> jobs -> execute, with no way back.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from mbpo_bench.ablation.config import AblationConfig
from mbpo_bench.ablation.execute import (
    AblationResult,
    Log,
    check_existing,
    run_sequential,
    trained_weights,
    write_outputs,
)
from mbpo_bench.ablation.jobs import check_jobs, run_parallel
from mbpo_bench.ablation.plan import build_plan
from mbpo_bench.config import dump_yaml, print_config
from mbpo_bench.runs import write_atomic


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_ablation(
    config: AblationConfig,
    output: Path,
    *,
    progress: bool = True,
    log: Log = _stderr,
    argv: list[str] | None = None,
    jobs: int = 1,
    show_config: bool = False,
) -> AblationResult:
    """Mine, train and evaluate every run of the plan (skipping finished ones), then report.

    `jobs` > 1 runs that many groups of runs at once in worker processes (`jobs.py`); the
    per-seed results are the same as with one run at a time. `show_config` prints the resolved
    config (stderr) once the plan, the output folder and the start model have passed their
    checks, so a refused run prints its one-line error and nothing else.
    """
    from mbpo_bench.models.loading import resolve_folder

    check_jobs(jobs)
    plan = build_plan(config, output)
    check_existing(plan)
    resolve_folder(plan.start[0], local_files_only=True)  # a wrong --model fails before any run
    if show_config:
        print_config(config, "ablate")
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / "ablation.yaml", dump_yaml(config))
    argv = list(sys.argv) if argv is None else argv
    write_atomic(output / "command.txt", shlex.join(argv) + "\n")
    parallel = jobs > 1
    failures = run_parallel(plan, jobs, log) if parallel else run_sequential(plan, log, progress)
    return write_outputs(plan, failures, argv)


def report_ablation(
    config: AblationConfig, output: Path, argv: list[str] | None = None
) -> AblationResult:
    """The report and per_seed.csv from the runs that finished, running nothing (`--report-only`):
    for an ablation stopped by a time limit, or to re-render. Unfinished runs are listed under
    Problems, never counted as 0."""
    from mbpo_bench.runs import RunDir

    plan = build_plan(config, output)
    failures: dict[str, str] = {}
    if plan.base_eval is not None and not RunDir(Path(plan.base_eval.output)).finished:
        failures["base"] = "not evaluated (report written with --report-only)"
    for run in plan.runs:
        if not RunDir(run.eval_dir).finished:
            failures[run.label] = "not finished (report written with --report-only)"
        elif RunDir(run.train_dir).finished:
            trained_weights(run)
    argv = list(sys.argv) if argv is None else argv
    return write_outputs(plan, failures, argv)
