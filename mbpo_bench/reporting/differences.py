"""Differences against the baseline on PAIRED items, with paired bootstrap 95% CIs.

For every task both runs have, from `samples.jsonl` joined on (task, probe, doc_id):
accuracy under each generation probe, accuracy with the image per prior group (`meta.prior`)
and the counter-prior gap, visual reliance per other probe (correct(image) - correct(probe), per
item), the predicted-yes ratio (yes/no tasks) and IIG. First row: the normalised 0-100 average
over the same tasks as the averages table. A difference whose CI excludes zero gets
`config.mark`.

Differences of combined quantities (the average over tasks, the gap between prior groups) are
bootstrapped by drawing ONE count matrix per task and applying it to both runs' aligned items
(`mbpo_bench.metrics.RatioMetric.resampled`), so they stay paired.
The baseline's and the run's columns are the means over the paired items only, so
`run - baseline == diff` in every row (they can differ from the full-task values above).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mbpo_bench.metrics import RatioMetric, resample_counts
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.format import MISSING, fmt_estimate, fmt_value
from mbpo_bench.reporting.loading import RunData
from mbpo_bench.reporting.paired import (
    Subset,
    aligned,
    excludes_zero,
    meta_is,
    meta_values,
    paired_difference,
    percentile_ci,
    seed_for,
)
from mbpo_bench.reporting.tables import ordered_probes, primary_flipped

Row = list[str]
PRIOR_GROUPS = ("consistent", "counter")

COLUMNS = ["task", "quantity", "baseline", "run", "diff", "95% CI", "n"]


def quantities(run: RunData, base: RunData, task: str) -> list[tuple[str, str, str, Subset | None]]:
    """(label, probe, metric, subset) rows to compare for one task."""
    probes = set(run.results.tasks[task].probes) & set(base.results.tasks[task].probes)
    probes = {p for p in probes if run.rows(task, p) and base.rows(task, p)}
    out: list[tuple[str, str, str, Subset | None]] = []
    for probe in ordered_probes(probes - {"iig"}):
        out.append((f"acc {probe}", probe, "accuracy", None))
    if "image" in probes:
        for prior in meta_values(base, task, "prior"):
            out.append((f"acc image, prior={prior}", "image", "accuracy", meta_is(prior=prior)))
        for other in ordered_probes(probes - {"image", "iig", "adversarial"}):
            out.append((f"visual reliance vs {other}", other, f"visual_reliance_{other}", None))
        balance = set(run.results.tasks[task].balance) | set(base.results.tasks[task].balance)
        if "predicted_yes_ratio" in balance:
            out.append(("predicted yes ratio", "image", "predicted_yes", None))
    if "iig" in probes:
        out.append(("IIG", "iig", "iig", None))
    return out


@dataclass(frozen=True)
class DiffRow:
    """One paired difference run - baseline, as numbers (the table and the forest plot both
    read these, so they cannot disagree)."""

    task: str  # label: the task, "† "-flagged, or "average"
    quantity: str
    base: float | None
    run: float | None
    low: float | None
    high: float | None
    n: int
    digits: int | None = None  # decimals in the table (None: the config's)
    missing: bool = False  # the task is in only one of the two runs

    @property
    def diff(self) -> float | None:
        return None if self.base is None or self.run is None else self.run - self.base

    @property
    def shown(self) -> bool:
        """Whether the table marks the difference (its CI excludes zero)."""
        return excludes_zero(self.low, self.high)


def paired_rows(
    run: RunData,
    base: RunData,
    config: ReportConfig,
    flagged: Sequence[str] = (),
    averaged: Sequence[str] = (),
) -> tuple[list[DiffRow], list[str]]:
    """Paired differences run - baseline, plus notes on what could not be paired."""
    notes: list[str] = []
    for missing in (r for r in (run, base) if not r.has_samples):
        notes.append(f"`{missing.name}` has no samples.jsonl: no paired differences.")
    if notes:
        return [], notes
    rows = [_average_row(run, base, averaged, config)] if averaged else []
    tasks = sorted(set(run.results.tasks) | set(base.results.tasks))
    for task in tasks:
        label = f"{task} †" if task in flagged else task
        if task not in run.results.tasks or task not in base.results.tasks:
            rows.append(DiffRow(label, "all", None, None, None, None, 0, missing=True))
            continue
        for name, probe, metric, subset in quantities(run, base, task):
            diff, mean_run, mean_base = paired_difference(
                run, base, task, probe, metric, subset, config
            )
            rows.append(
                DiffRow(label, name, mean_base, mean_run, diff.ci_low, diff.ci_high, diff.n)
            )
        gap = _gap_row(run, base, task, config)
        if gap is not None:
            rows.append(dataclasses.replace(gap, task=label))
    return rows, notes


def difference_table(
    run: RunData,
    base: RunData,
    config: ReportConfig,
    flagged: Sequence[str] = (),
    averaged: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[str]]:
    """Long table of paired differences run - baseline, plus notes on what could not be paired."""
    rows, notes = paired_rows(run, base, config, flagged, averaged)
    return pd.DataFrame([_cells(r, config) for r in rows], columns=COLUMNS), notes


def _cells(row: DiffRow, config: ReportConfig) -> Row:
    if row.missing:
        return [row.task, row.quantity, *[MISSING] * 5]
    d = config.digits if row.digits is None else row.digits
    mark = config.mark if row.shown else ""
    return [
        row.task,
        row.quantity,
        fmt_value(row.base, d),
        fmt_value(row.run, d),
        fmt_value(row.diff, d, signed=True) + mark,
        _interval(row.low, row.high, d),
        str(row.n),
    ]


def _average_row(
    run: RunData, base: RunData, tasks: Sequence[str], config: ReportConfig
) -> DiffRow:
    """Normalised 0-100 average over `tasks`, paired per task (the first row of a table)."""
    means_run, means_base, stacks, n = [], [], [], 0
    for task in tasks:
        probe, metric = config.primary(task)
        docs, a, b = aligned(run, base, task, probe, metric)
        if not docs:
            return DiffRow("average", "0-100 over tasks", None, None, None, None, 0)
        counts = resample_counts(len(docs), config.n_resamples, seed_for(config, "avg", task))
        flip = primary_flipped(base, task, config)
        sign, offset = (-100.0, 100.0) if flip else (100.0, 0.0)
        means_run.append(offset + sign * float(a.mean()))
        means_base.append(offset + sign * float(b.mean()))
        resampled = RatioMetric.mean(a).resampled(counts) - RatioMetric.mean(b).resampled(counts)
        stacks.append(sign * resampled)
        n += len(docs)
    low, high = percentile_ci(np.mean(np.stack(stacks), axis=0), config.confidence)
    name = f"0-100 over {len(tasks)} task{'s' if len(tasks) != 1 else ''}"
    digits = max(config.digits - 2, 0)
    return DiffRow(
        "average", name, float(np.mean(means_base)), float(np.mean(means_run)), low, high, n,
        digits,
    )  # fmt: skip


def _gap_row(run: RunData, base: RunData, task: str, config: ReportConfig) -> DiffRow | None:
    """acc(prior-consistent) - acc(counter-prior) with the image, paired over items."""
    if not run.rows(task, "image") or set(meta_values(base, task, "prior")) != set(PRIOR_GROUPS):
        return None
    docs, a, b = aligned(run, base, task, "image", "accuracy")
    rows = base.rows(task, "image")
    member = {
        g: np.array([float((rows[d].get("meta") or {}).get("prior") == g) for d in docs])
        for g in PRIOR_GROUPS
    }
    counts = resample_counts(len(docs), config.n_resamples, seed_for(config, "gap", task))

    def gap(values: np.ndarray) -> tuple[float | None, np.ndarray]:
        cons, counter = (RatioMetric(values * member[g], member[g]) for g in PRIOR_GROUPS)
        v_cons, v_counter = cons.value(), counter.value()
        point = None if v_cons is None or v_counter is None else v_cons - v_counter
        return point, cons.resampled(counts) - counter.resampled(counts)

    (gap_run, stats_run), (gap_base, stats_base) = gap(a), gap(b)
    low, high = percentile_ci(stats_run - stats_base, config.confidence)
    return DiffRow(task, "counter-prior gap", gap_base, gap_run, low, high, len(docs))


def _interval(low: float | None, high: float | None, digits: int) -> str:
    if low is None or high is None:
        return "n/a"
    text = fmt_estimate(0.0, low, high, digits, signed=True)
    return text[text.index("[") :]
