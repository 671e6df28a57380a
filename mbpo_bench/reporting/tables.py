"""Tables of one report: per-task metrics, the normalised average, modality balance.

Decisions:
- A run that lacks a task shows "missing" in every cell of it, never 0; a run that has the task
  but not a probe or metric shows "—".
- The average over tasks maps each task's primary metric (a 0-1 metric, by default accuracy
  with the image) to 0-100 (`100 * (1 - v)` where lower is better) and averages over the tasks
  that EVERY run has, so all runs are averaged over the same tasks; the tasks left out are named.
  Its CI is a bootstrap over items (each task resampled independently, seeded per task) where
  every task in it has per-item samples; otherwise the average is shown without one.
- Probes in a fixed order (image, blind, mismatched, noise, adversarial, iig, then others sorted);
  metrics sorted with accuracy first, so tables do not depend on file order.
- A metric's lmms-eval-compatible twin (`<metric>_lmms`) is a column beside it, not a row of its
  own: the verifier's score compares models, the lmms-eval one stands beside published tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mbpo_bench.evaluation.probes import PROBES
from mbpo_bench.evaluation.schema import BALANCE_METRICS, Metric, TaskResult
from mbpo_bench.metrics import RatioMetric, resample_counts
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.format import ABSENT, MISSING, fmt_estimate
from mbpo_bench.reporting.loading import RunData
from mbpo_bench.reporting.paired import item_values, percentile_ci, seed_for

PROBE_ORDER = PROBES  # the probe table's selectable probes, in its order
# Metrics named `<metric>_lmms` are `<metric>` scored as lmms-eval 0.7.3 scores it
# (mbpo_bench.tasks.lmms_compat); task tables show them in a column of their own.
LMMS_SUFFIX = "_lmms"
LMMS_COLUMN = "(lmms-eval)"


def ordered_probes(names: set[str]) -> list[str]:
    return [p for p in PROBE_ORDER if p in names] + sorted(names - set(PROBE_ORDER))


def ordered_metrics(names: set[str]) -> list[str]:
    return sorted(names, key=lambda m: (m != "accuracy", m))


def all_tasks(runs: Sequence[RunData]) -> list[str]:
    return sorted({t for run in runs for t in run.results.tasks})


def _metric_cell(metric: Metric | None, config: ReportConfig) -> str:
    if metric is None:
        return ABSENT
    return fmt_estimate(metric.value, metric.ci_low, metric.ci_high, config.digits)


def has_lmms_metrics(runs: Sequence[RunData], task: str) -> bool:
    """Whether any run reports lmms-eval-compatible metrics (`<metric>_lmms`) for `task`."""
    return any(
        m.endswith(LMMS_SUFFIX)
        for r in runs
        if task in r.results.tasks
        for p in r.results.tasks[task].probes.values()
        for m in p.metrics
    )


def task_table(runs: Sequence[RunData], task: str, config: ReportConfig) -> pd.DataFrame:
    """Rows 'probe / metric' (and 'probe / n'), one column per run.

    Where the task reports lmms-eval-compatible metrics (`<metric>_lmms`: the same metric under
    lmms-eval 0.7.3's own answer parsing), each run gets a second column, `<run> (lmms-eval)`,
    and `<metric>_lmms` sits in the row of `<metric>`, so the two scorings read side by side.
    """
    present = [r.results.tasks[task] for r in runs if task in r.results.tasks]
    probes = ordered_probes({p for tr in present for p in tr.probes})
    lmms = has_lmms_metrics(runs, task)
    columns = [r.name for r in runs]
    if lmms:
        columns = [c for r in runs for c in (r.name, f"{r.name} {LMMS_COLUMN}")]
    rows: dict[str, list[str]] = {}
    for probe in probes:
        names = {m for tr in present if probe in tr.probes for m in tr.probes[probe].metrics}
        if lmms:
            names = {m.removesuffix(LMMS_SUFFIX) for m in names}
        n = [_probe_n(run, task, probe) for run in runs]
        rows[f"{probe} / n"] = [c for cell in n for c in (cell, cell)] if lmms else n
        for metric in ordered_metrics(names):
            cells = []
            for run in runs:
                variants = (metric, metric + LMMS_SUFFIX) if lmms else (metric,)
                for name in variants:
                    if task not in run.results.tasks:
                        cells.append(MISSING)
                    else:
                        found = _probe_metric(run.results.tasks[task], probe, name)
                        cells.append(_metric_cell(found, config))
            rows[f"{probe} / {metric}"] = cells
    df = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    df.index.name = "probe / metric"
    return df


def _probe_n(run: RunData, task: str, probe: str) -> str:
    if task not in run.results.tasks:
        return MISSING
    result = run.results.tasks[task].probes.get(probe)
    return ABSENT if result is None else str(result.n)


def _probe_metric(result: TaskResult, probe: str, metric: str) -> Metric | None:
    probe_result = result.probes.get(probe)
    return None if probe_result is None else probe_result.metrics.get(metric)


def normalised(
    result: TaskResult, config: ReportConfig
) -> tuple[float, float | None, float | None] | None:
    """The task's primary metric on 0-100 (value, ci_low, ci_high), or None if not normalisable."""
    probe, name = config.primary(result.task)
    metric = _probe_metric(result, probe, name)
    if metric is None or metric.value is None or not 0.0 <= metric.value <= 1.0:
        return None
    flip = metric.higher_is_better is False

    def scale(v: float | None) -> float | None:
        return None if v is None else 100.0 * (1.0 - v if flip else v)

    low, high = scale(metric.ci_low), scale(metric.ci_high)
    if flip:
        low, high = high, low
    return 100.0 * (1.0 - metric.value if flip else metric.value), low, high


def averaged_tasks(runs: Sequence[RunData], config: ReportConfig) -> list[str]:
    """The tasks the average runs over: every run has them, with a 0-1 primary metric."""
    return [
        t
        for t in all_tasks(runs)
        if all(t in r.results.tasks and normalised(r.results.tasks[t], config) for r in runs)
    ]


def primary_flipped(run: RunData, task: str, config: ReportConfig) -> bool:
    """Whether the task's primary metric is lower-is-better (mapped to 100 x (1 - value))."""
    probe, metric = config.primary(task)
    found = _probe_metric(run.results.tasks[task], probe, metric)
    return found is not None and found.higher_is_better is False


def average_table(runs: Sequence[RunData], config: ReportConfig) -> tuple[pd.DataFrame, list[str]]:
    """Rows: runs; columns: each task on 0-100 and the average; plus notes on what is left out."""
    tasks = all_tasks(runs)
    usable = averaged_tasks(runs, config)
    notes = []
    left_out = [t for t in tasks if t not in usable]
    if left_out:
        notes.append(
            "Left out of the average (not in every run, or no 0-1 primary metric): "
            + ", ".join(f"`{t}`" for t in left_out)
            + "."
        )
    digits = max(config.digits - 2, 0)
    columns = [*tasks, "average"]
    data: dict[str, list[str]] = {}
    for run in runs:
        cells = []
        for task in tasks:
            norm = (
                normalised(run.results.tasks[task], config) if task in run.results.tasks else None
            )
            if task not in run.results.tasks:
                cells.append(MISSING)
            else:
                cells.append(ABSENT if norm is None else fmt_estimate(*norm, digits))
        cells.append(_average_cell(run, usable, config, digits))
        data[run.name] = cells
    no_samples = [r.name for r in runs if not r.has_samples]
    if no_samples and usable:
        notes.append(
            "No CI on the average of "
            + ", ".join(f"`{n}`" for n in no_samples)
            + ": no samples.jsonl (the per-item values the CI resamples)."
        )
    df = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    df.index.name = "run"
    return df, notes


def _average_cell(run: RunData, tasks: list[str], config: ReportConfig, digits: int) -> str:
    if not tasks:
        return ABSENT
    points = [normalised(run.results.tasks[t], config) for t in tasks]
    value = float(np.mean([p[0] for p in points if p is not None]))
    low, high = _average_ci(run, tasks, config)
    return fmt_estimate(value, low, high, digits)


def _average_ci(
    run: RunData, tasks: list[str], config: ReportConfig
) -> tuple[float | None, float | None]:
    """Percentile CI of the mean over tasks, resampling each task's items independently."""
    if not run.has_samples:
        return None, None
    stacks = []
    for task in tasks:
        probe, metric = config.primary(task)
        values = item_values(run, task, probe, metric)
        if not values:
            return None, None
        arr = np.array([values[d] for d in sorted(values)], dtype=np.float64)
        counts = resample_counts(len(arr), config.n_resamples, seed_for(config, "avg", task))
        stat = RatioMetric.mean(arr).resampled(counts)
        flip = primary_flipped(run, task, config)
        stacks.append(100.0 * (1.0 - stat if flip else stat))
    return percentile_ci(np.mean(np.stack(stacks), axis=0), config.confidence)


def balance_table(runs: Sequence[RunData], task: str, config: ReportConfig) -> pd.DataFrame | None:
    """Rows: runs; columns: accuracy per probe, balance metrics, image accuracy per prior group
    (the `accuracy[prior=...]` metrics the evaluation writes for the embedded benchmark)."""
    present = [r for r in runs if task in r.results.tasks]
    probes = ordered_probes(
        {
            p
            for r in present
            for p, pr in r.results.tasks[task].probes.items()
            if "accuracy" in pr.metrics
        }
    )
    balance = [
        m for m in BALANCE_METRICS if any(m in r.results.tasks[task].balance for r in present)
    ]
    priors = sorted(
        {
            m
            for r in present
            if "image" in r.results.tasks[task].probes
            for m in r.results.tasks[task].probes["image"].metrics
            if m.startswith("accuracy[prior=")
        }
    )
    columns = (
        [f"acc {p}" for p in probes]
        + balance
        + [f"acc {m.removeprefix('accuracy[').rstrip(']')}" for m in priors]
    )
    if not columns:
        return None
    data: dict[str, list[str]] = {}
    for run in runs:
        if task not in run.results.tasks:
            data[run.name] = [MISSING] * len(columns)
            continue
        result = run.results.tasks[task]
        cells = [_metric_cell(_probe_metric(result, p, "accuracy"), config) for p in probes]
        cells += [_metric_cell(result.balance.get(m), config) for m in balance]
        cells += [_metric_cell(_probe_metric(result, "image", m), config) for m in priors]
        data[run.name] = cells
    df = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    df.index.name = "run"
    return df
