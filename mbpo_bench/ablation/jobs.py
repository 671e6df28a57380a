"""Several runs of an ablation at once on one machine: `mbpo-bench ablate --jobs N`.

A small model leaves a large GPU idle most of the time, so one run after another wastes the
machine; N runs side by side use it. `--jobs 1` (the default) never comes here: `execute.py`
runs the plan one run at a time, as before.

Decisions:
- The unit of work is a GROUP, not a run. Runs that share a mining folder (`Run.mine_dir`: DPO
  and the MBPO arms on the same PGD pairs at one seed) go to the same worker, in plan order,
  because the first one mines and the others read its `pairs.parquet`; two workers would mine
  the same folder at once. Runs that do not mine are a group each; the base evaluation is one
  more group (labelled "base"), submitted first.
- Worker processes start with the `spawn` method: a forked child of a parent that touched CUDA
  cannot use CUDA, and spawn is safe whatever the parent did.
- Each group runs in a process of its own (a one-process pool per group, at most `jobs` at once,
  driven from `jobs` threads) rather than in one shared pool of `jobs` processes: a process
  that dies (killed for memory, a crash in native code) then breaks only its own pool, so the
  failure names exactly its runs instead of every group still queued; and each group starts
  with a fresh process, so GPU memory is handed back between groups.
- A worker runs its group with the sequential path's own functions (`execute_run`,
  `evaluate`): finished folders are skipped, interrupted ones resume. A `UserError` fails that
  run and the group goes on, as in the sequential path; any other exception is a bug: it fails
  that run (with the traceback in the log) and the rest of its group, not the other groups.
- Results do not depend on `jobs`: every run seeds itself from its config, so it computes the
  same thing in any process. The worker hands back each run's evaluation config as pointed at
  its trained weights (`trained_weights`), so the report's commands are the sequential ones too.
- Only the parent writes `ablation.yaml`, `command.txt`, `per_seed.csv` and `report.md`; the
  workers write only their own run folders.
- Each worker sets torch's CPU threads from `runtime.threads` before anything runs (evaluation
  does not set them itself), so N workers on a CPU box do not each take every core.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbpo_bench.ablation.execute import Log, evaluate, execute_run
from mbpo_bench.ablation.plan import Plan, Run
from mbpo_bench.errors import UserError
from mbpo_bench.runs import RunDir

BASE = "base"  # the failure key and group label of the base evaluation, as in execute.py


@dataclass
class Group:
    """Runs that one worker executes in order (or the base evaluation, `base=True`)."""

    label: str  # the first run's label, or "base"; prefixes the worker's log lines
    runs: list[Run] = field(default_factory=list)
    base: bool = False


@dataclass
class GroupResult:
    """What a worker hands back: failures {run label: message} and the evaluation configs of
    the runs it trained, pointed at their weights {run label: EvalConfig}."""

    failures: dict[str, str] = field(default_factory=dict)
    eval_configs: dict[str, Any] = field(default_factory=dict)


Worker = Callable[[Plan, Group, bool], GroupResult]


def check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise UserError(
            f"--jobs {jobs} is not a number of parallel runs — pass --jobs 1 (one run at a "
            "time, the default) or more"
        )


def group_runs(plan: Plan) -> list[Group]:
    """The plan's work as groups: the base evaluation, then runs grouped by mining folder.

    Groups come in order of their first run in the plan (seed-major), and the runs of a group in
    plan order, so the run that mines a folder comes before the runs that reuse its pairs.
    """
    groups: list[Group] = [Group(BASE, base=True)] if plan.base_eval is not None else []
    by_mining: dict[Path, Group] = {}
    for run in plan.runs:
        if run.mine_dir is not None and run.mine_dir in by_mining:
            by_mining[run.mine_dir].runs.append(run)
            continue
        group = Group(run.label, [run])
        groups.append(group)
        if run.mine_dir is not None:
            by_mining[run.mine_dir] = group
    return groups


def format_groups(groups: list[Group], jobs: int) -> str:
    """The `--dry-run` lines that show which runs share a worker."""
    lines = [f"--jobs {jobs}: {len(groups)} groups, up to {jobs} at once (each in one worker)"]
    for i, group in enumerate(groups, 1):
        names = ["base evaluation"] if group.base else [r.label for r in group.runs]
        lines.append(f"  group {i}: {', '.join(names)}")
    return "\n".join(lines) + "\n"


def _threads(plan: Plan, group: Group) -> int | None:
    runs = group.runs or plan.runs[:1]  # the base evaluation takes the first run's setting
    return runs[0].train_config.runtime.threads if runs else None


def _prefixed(label: str) -> Log:
    def log(message: str) -> None:
        print(f"[{label}] {message.strip()}", file=sys.stderr, flush=True)

    return log


def run_group(plan: Plan, group: Group, progress: bool) -> GroupResult:
    """Worker entry point (runs in a spawned process): execute the group's runs in order."""
    threads = _threads(plan, group)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    log = _prefixed(group.label)
    result = GroupResult()
    if group.base:
        log(f"base evaluation of {plan.config.model}")
        try:
            evaluate(plan.base_eval, log, progress)
        except UserError as exc:
            result.failures[BASE] = str(exc)
            log(f"failed: {exc}")
        return result
    failed_mining: dict[Path, str] = {}
    for i, run in enumerate(group.runs):
        log(f"({i + 1}/{len(group.runs)}) {run.label}")
        try:
            execute_run(run, plan, log, progress, failed_mining)
        except UserError as exc:
            result.failures[run.label] = str(exc)
            log(f"failed: {exc}")
        except Exception as exc:
            log(traceback.format_exc())
            cause = f"crashed with {type(exc).__name__}: {exc} (traceback in the log)"
            result.failures[run.label] = cause
            for rest in group.runs[i + 1 :]:
                result.failures[rest.label] = f"not run: {run.label} {cause} in the same worker"
            break
        result.eval_configs[run.label] = run.eval_config
    return result


def died(group: Group, cause: BaseException) -> GroupResult:
    """The result of a group whose worker did not hand back a result: each of its unfinished
    runs failed, with the cause."""
    if isinstance(cause, BrokenProcessPool):
        what = "its worker process died (e.g. killed for memory or a crash in native code)"
    else:
        what = f"its worker failed with {type(cause).__name__}: {cause}"
    message = f"{what} — rerun the same command to resume"
    if group.base:
        return GroupResult({BASE: message})
    return GroupResult({r.label: message for r in group.runs if not RunDir(r.eval_dir).finished})


def _in_own_process(plan: Plan, group: Group, progress: bool, worker: Worker) -> GroupResult:
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(worker, plan, group, progress).result()
    except Exception as exc:  # BrokenProcessPool, or a result or argument that did not pickle
        return died(group, exc)


def run_groups(
    plan: Plan,
    groups: list[Group],
    jobs: int,
    log: Log,
    *,
    progress: bool = False,
    worker: Worker = run_group,
) -> list[GroupResult]:
    """Run every group, at most `jobs` at once, each in a spawned process; results in order.

    `worker` must be importable by name in a fresh interpreter (spawn pickles it by reference).
    `jobs` is validated by the callers (`run_ablation`, the CLI), before anything is written.
    """
    if not groups:
        return []
    with ThreadPoolExecutor(max_workers=min(jobs, len(groups))) as threads:
        futures = {
            threads.submit(_in_own_process, plan, group, progress, worker): group
            for group in groups
        }
        for done, future in enumerate(as_completed(futures), 1):
            failed = len(future.result().failures)
            note = f", {failed} failed" if failed else ""
            log(f"[{done}/{len(groups)} groups done] {futures[future].label}{note}")
        return [future.result() for future in futures]


def merge(plan: Plan, results: Iterable[GroupResult]) -> dict[str, str]:
    """Failures in the sequential path's order (base, then the plan's runs), and each trained
    run's evaluation config put back into the plan (the report prints its command)."""
    failures: dict[str, str] = {}
    configs: dict[str, Any] = {}
    for result in results:
        failures.update(result.failures)
        configs.update(result.eval_configs)
    for run in plan.runs:
        if run.label in configs:
            run.eval_config = configs[run.label]
    order = [BASE, *(r.label for r in plan.runs)]
    known = {k: failures[k] for k in order if k in failures}
    return known | {k: v for k, v in failures.items() if k not in known}


def run_parallel(plan: Plan, jobs: int, log: Log) -> dict[str, str]:
    """Execute the plan with `jobs` workers; the failures, merged as the sequential path has them."""
    groups = group_runs(plan)
    log(f"{len(plan.runs)} runs in {len(groups)} groups, {min(jobs, len(groups))} at once")
    return merge(plan, run_groups(plan, groups, jobs, log))
