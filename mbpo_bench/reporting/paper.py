"""The MBPO paper's evaluation table: one row per run, the seven benchmarks in the paper's layout.

Columns: AI2D, MME, MMStar, MM-Vet, MMBench, MMHal-Bench (each its headline metric with the image,
as results.json names it per task), CHAIR_S / CHAIR_I, and the average of the normalised
headlines on 0-100. Normalising is per benchmark to its own scale, never a sum of raw scores:
accuracy-like scores x100, MME perception out of its maximum 2000, MMHal-Bench's 0-6 rating out
of 6. CHAIR is lower-is-better and reported apart (it does not enter the average). The average
runs over the benchmarks every run has, names the ones left out, and has no CI of its own (the
per-benchmark CIs are in the cells; the benchmarks are independent samples of different sizes).
Under the table, each judged benchmark's judge and prompt hash per run: a number from our own
prompt wording, or another judge, is not comparable with published scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from mbpo_bench.evaluation.schema import Metric, TaskResult
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.format import ABSENT, MISSING, fmt_estimate, markdown_table
from mbpo_bench.reporting.loading import RunData


@dataclass(frozen=True)
class Column:
    label: str
    task: str
    metric: str | None  # None: the task's headline
    scale: float | None  # the headline's maximum (normalised = 100 x value / scale); None: apart


PAPER_COLUMNS: tuple[Column, ...] = (
    Column("AI2D", "mbpo_ai2d", None, 1.0),
    Column("MME (perception)", "mbpo_mme", None, 2000.0),
    Column("MMStar", "mbpo_mmstar", None, 1.0),
    Column("MM-Vet", "mbpo_mmvet", None, 1.0),
    Column("MMBench (circular)", "mbpo_mmbench_en", None, 1.0),
    Column("MMHal-Bench (0-6)", "mbpo_mmhal", None, 6.0),
    Column("CHAIR_S", "mbpo_chair", "chair_s", None),
    Column("CHAIR_I", "mbpo_chair", "chair_i", None),
)
PAPER_TASKS = frozenset(c.task for c in PAPER_COLUMNS)


def _metric(result: TaskResult, column: Column) -> Metric | None:
    image = result.probes.get("image")
    if image is None:
        return None
    return image.metrics.get(column.metric or result.headline)


def _normalised(result: TaskResult, column: Column) -> float | None:
    metric = _metric(result, column)
    if column.scale is None or metric is None or metric.value is None:
        return None
    return 100.0 * metric.value / column.scale


def paper_table(runs: Sequence[RunData], config: ReportConfig) -> tuple[pd.DataFrame, list[str]]:
    """Rows: runs; columns: the paper's benchmarks, CHAIR and the normalised average."""
    columns = [c for c in PAPER_COLUMNS if any(c.task in r.results.tasks for r in runs)]
    averaged = [
        c
        for c in columns
        if c.scale is not None
        and all(c.task in r.results.tasks and _normalised(r.results.tasks[c.task], c) is not None
                for r in runs)
    ]  # fmt: skip
    data: dict[str, list[str]] = {}
    for run in runs:
        cells = []
        for column in columns:
            result = run.results.tasks.get(column.task)
            if result is None:
                cells.append(MISSING)
                continue
            metric = _metric(result, column)
            scale = column.scale or 1.0
            digits = config.digits if scale == 1.0 else (1 if scale > 10 else 2)
            cells.append(
                ABSENT
                if metric is None or metric.value is None
                else fmt_estimate(metric.value, metric.ci_low, metric.ci_high, digits)
            )
        values = [_normalised(run.results.tasks[c.task], c) for c in averaged]
        mean = sum(v for v in values if v is not None) / len(values) if values else None
        cells.append(ABSENT if mean is None else f"{mean:.1f}")
        data[run.name] = cells
    df = pd.DataFrame.from_dict(
        data, orient="index", columns=[*(c.label for c in columns), "average (0-100)"]
    )
    df.index.name = "run"
    notes = []
    left = [c.label for c in columns if c.scale is not None and c not in averaged]
    if left:
        notes.append(
            "Left out of the average (not in every run, or no value): " + ", ".join(left) + "."
        )
    return df, notes + judge_notes(runs)


def judge_notes(runs: Sequence[RunData]) -> list[str]:
    """Per judged benchmark and run: the judge, the prompt's hash and source, judge errors."""
    lines = []
    for run in runs:
        for task, result in sorted(run.results.tasks.items()):
            j = result.judge
            if not j:
                continue
            lines.append(
                f"- {run.name} · `{task}`: judge `{j.get('judge')}`, prompt "
                f"`{j.get('prompt_hash')}` ({j.get('prompt_source')}), "
                f"{j.get('judge_errors', 0)} judge errors of {j.get('answers_judged', 0)} answers "
                "(left out, not scored 0)"
            )
    if not lines:
        return []
    return [
        "",
        "Judged benchmarks (only the official prompt with the official judge model is "
        "comparable with published scores):",
        "",
        *lines,
    ]


def paper_section(runs: Sequence[RunData], config: ReportConfig) -> list[str]:
    """The report section, or nothing when no run has any of the paper's benchmarks."""
    if not any(t in PAPER_TASKS for r in runs for t in r.results.tasks):
        return []
    df, notes = paper_table(runs, config)
    intro = (
        "The MBPO paper's table: each benchmark's headline metric with the image "
        "(`value [CI]`); MMBench is CircularEval accuracy; CHAIR_S / CHAIR_I are lower-is-better "
        "and stay out of the average. The average maps each benchmark to 0-100 on its own scale "
        "(x100; MME perception / 2000; MMHal-Bench / 6) and means them; no CI of its own."
    )
    return ["## Paper table", "", intro, "", markdown_table(df), *notes, ""]
