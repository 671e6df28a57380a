"""Several runs of an ablation at once on one machine: `mbpo-bench ablate --jobs N`.

A small model leaves a large GPU idle most of the time, so one run after another wastes the
machine; N runs side by side use it. `--jobs 1` (the default) never comes here: `execute.py`
runs the plan one run at a time, as before.

Decisions:
- The unit of work is a GROUP: the base evaluation, one mining folder (`Run.mine_dir`, mined
  once), or one run. Runs that train on a mining folder's pairs (DPO, the MBPO arms and the
  matched controls at one seed) wait for that folder's mining group and then go out one per
  worker: two workers never mine the same folder at once, and the six or so runs that share
  one folder no longer queue behind each other in one worker (they did before the matched
  controls of issue 17 made such chains the critical path). Mining groups are submitted first
  (they gate the most work), then the base evaluation, then the runs that need no mining.
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
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbpo_bench.ablation.execute import Log, evaluate, execute_run, mine
from mbpo_bench.ablation.plan import Plan, Run
from mbpo_bench.errors import UserError
from mbpo_bench.runs import RunDir

BASE = "base"  # the failure key and group label of the base evaluation, as in execute.py


@dataclass
class Group:
    """Runs that one worker executes in order (or the base evaluation, `base=True`)."""

    label: str  # the run's label, "base" or "mining <folder>"; prefixes the worker's log lines
    runs: list[Run] = field(default_factory=list)
    base: bool = False
    mining: Path | None = None  # a mining-only group: mine this folder (plan.minings)
    after: Path | None = None  # start only once this folder's mining group has finished


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
    """The plan's work as groups: every mining folder, the base evaluation, then one group per
    run in plan order (seed-major); a run on mined pairs waits for its folder's group."""
    groups = [Group(f"mining {folder.name}", mining=folder) for folder in plan.minings]
    groups += [Group(BASE, base=True)] if plan.base_eval is not None else []
    for run in plan.runs:
        after = run.mine_dir if run.mine_dir in plan.minings else None
        groups.append(Group(run.label, [run], after=after))
    return groups


def format_groups(groups: list[Group], jobs: int) -> str:
    """The `--dry-run` lines that show which runs share a worker."""
    lines = [f"--jobs {jobs}: {len(groups)} groups, up to {jobs} at once (each in one worker)"]
    for i, group in enumerate(groups, 1):
        names = ["base evaluation"] if group.base else [r.label for r in group.runs]
        if group.mining is not None:
            names = [f"mining {group.mining}"]
        wait = f" (after mining {group.after.name})" if group.after is not None else ""
        lines.append(f"  group {i}: {', '.join(names)}{wait}")
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
    if group.mining is not None:
        try:
            mine(group.mining, plan.minings[group.mining], log)
        except UserError as exc:
            result.failures[group.label] = str(exc)
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
    if group.mining is not None:
        return GroupResult({group.label: message})
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
    results: dict[int, GroupResult] = {}
    waiting = {i: g for i, g in enumerate(groups) if g.after is not None}
    minings = {g.mining for g in groups if g.mining is not None}
    with ThreadPoolExecutor(max_workers=min(jobs, len(groups))) as threads:
        futures: dict[Future[GroupResult], int] = {}

        def submit(i: int) -> None:
            futures[threads.submit(_in_own_process, plan, groups[i], progress, worker)] = i

        for i, group in enumerate(groups):
            if group.after is None or group.after not in minings:
                waiting.pop(i, None)
                submit(i)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = futures[future]
                results[i] = future.result()
                failed = len(results[i].failures)
                note = f", {failed} failed" if failed else ""
                log(f"[{len(results)}/{len(groups)} groups done] {groups[i].label}{note}")
                folder = groups[i].mining
                if folder is None:
                    continue
                for j in [j for j, g in waiting.items() if g.after == folder]:
                    group = waiting.pop(j)
                    if results[i].failures:
                        cause = next(iter(results[i].failures.values()))
                        results[j] = GroupResult(
                            {r.label: f"its mining failed: {cause}" for r in group.runs}
                        )
                    else:
                        submit(j)
                pending |= {f for f, k in futures.items() if k not in results} - done
    for j, group in waiting.items():  # a mining group that never ran: cannot happen, but say so
        results[j] = GroupResult({r.label: "its mining never ran" for r in group.runs})
    return [results[i] for i in range(len(groups))]


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
