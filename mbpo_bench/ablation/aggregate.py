"""Per-seed metrics of every evaluated run, and their mean and spread per arm.

Read from `results.json` only (the typed results schema), like every report here:
- accuracy, pair accuracy (both twins right), counter-prior and prior-consistent accuracy: the
  image probe's metrics (the last three are the embedded tasks' own metrics; other tasks have
  none and show `n/a`);
- visual reliance vs blind and vs a mismatched image: the task's `balance` metrics
  (acc(image) - acc(probe), paired over the same items).

Spread over seeds: the sample standard deviation (ddof 1; undefined for one seed) and min / max.
The average over tasks is taken per (arm, seed) BEFORE the spread, over the tasks on which
every evaluated run has the metric, so no arm's average covers other tasks than another's.
All six quantities are on the same 0-1 scale, so a plain mean over tasks is meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mbpo_bench.ablation.config import Arm
    from mbpo_bench.evaluation.schema import Results

AVERAGE = "(average over tasks)"
BASE = "base (start)"  # the start model's row in the tables and figures
COLUMNS = ("arm", "seed", "task", "metric", "value")


@dataclass(frozen=True)
class Quantity:
    key: str
    label: str
    source: str  # "image" (the image probe's metrics) or "balance"
    higher_is_better: bool


QUANTITIES: tuple[Quantity, ...] = (
    Quantity("accuracy", "accuracy", "image", True),
    Quantity("pair_accuracy", "pair acc. (twins)", "image", True),
    Quantity("acc_counter_prior", "counter-prior acc.", "image", True),
    Quantity("acc_prior_consistent", "prior-consistent acc.", "image", True),
    Quantity("visual_reliance_blind", "visual reliance (blind)", "balance", True),
    Quantity("visual_reliance_mismatched", "visual reliance (mismatched)", "balance", True),
)


@dataclass
class Measurements:
    """Everything the report shows, read from the evaluated run folders."""

    per_seed: pd.DataFrame  # COLUMNS; includes the AVERAGE rows
    tasks: list[str]
    evaluated: dict[str, int]  # arm -> seeds with a finished evaluation
    averaged: dict[str, list[str]]  # metric -> tasks in its average
    versions: dict[str, set[str]]  # task -> versions seen

    @classmethod
    def build(
        cls, rows: Sequence[dict[str, Any]], evaluated: dict[str, int],
        versions: dict[str, set[str]],
    ) -> Measurements:  # fmt: skip
        import pandas as pd

        per_seed = per_seed_frame(rows)
        average, averaged = task_average(per_seed)
        both = pd.concat([per_seed, average], ignore_index=True) if len(average) else per_seed
        return cls(both, sorted(versions), evaluated, averaged, versions)

    @property
    def headline_task(self) -> str | None:
        """The task of the main-effects table: the average over tasks, or the only task."""
        if len(self.tasks) == 1:
            return self.tasks[0]
        return AVERAGE if self.averaged else None


def seed_rows(results: Results, arm: str, seed: int | None) -> list[dict[str, Any]]:
    """One row per (task, quantity) of one evaluated run; value NaN where it is undefined."""
    rows = []
    for task, result in results.tasks.items():
        for q in QUANTITIES:
            if q.source == "image":
                probe = result.probes.get("image")
                metric = probe.metrics.get(q.key) if probe is not None else None
            else:
                metric = result.balance.get(q.key)
            value = metric.value if metric is not None and metric.value is not None else math.nan
            rows.append({"arm": arm, "seed": seed, "task": task, "metric": q.key, "value": value})
    return rows


def per_seed_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    frame["value"] = frame["value"].astype(float)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def task_average(per_seed: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Rows with task = AVERAGE, and per metric the tasks averaged over.

    A metric is averaged over the tasks on which EVERY run present has a finite value; a metric
    with no such task gets no average row.
    """
    import pandas as pd

    frames, used = [], {}
    finite = per_seed.dropna(subset=["value"])
    n_runs = per_seed.groupby(["arm", "seed"], dropna=False).ngroups
    for metric, group in finite.groupby("metric", sort=False):
        runs_per_task = group.drop_duplicates(["task", "arm", "seed"]).groupby("task").size()
        tasks = sorted(runs_per_task[runs_per_task == n_runs].index)
        if not tasks:
            continue
        used[str(metric)] = tasks
        mean = (
            group[group["task"].isin(tasks)]
            .groupby(["arm", "seed"], dropna=False, sort=False)["value"]
            .mean()
            .reset_index()
        )
        mean["task"], mean["metric"] = AVERAGE, metric
        frames.append(mean)
    if not frames:
        return per_seed.iloc[0:0], used
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)], used


def summarise(per_seed: pd.DataFrame) -> pd.DataFrame:
    """(task, arm, metric) -> mean, std (ddof 1), min, max, n (seeds with a finite value)."""
    finite = per_seed.dropna(subset=["value"])
    grouped = finite.groupby(["task", "arm", "metric"], sort=False)["value"]
    out = grouped.agg(["mean", "std", "min", "max", "count"]).rename(columns={"count": "n"})
    return out


FACTORS: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("negatives", "source", ("pgd", "noise", "blind")),
    ("IIG filter", "iig_filter", (True, False)),
    ("online", "online", (True, False)),
)


def level_name(level: Any) -> str:
    return ("on" if level else "off") if isinstance(level, bool) else str(level)


def main_effects(per_seed: pd.DataFrame, task: str, arms: Sequence[Arm]) -> pd.DataFrame:
    """(factor, level, metric) -> mean, std, min, max, n over seeds of the level's mean.

    A level's mean at one seed is the plain mean over the factorial (MBPO) arms at that level,
    i.e. averaged over the other two factors. Only seeds at which all 12 factorial arms have a
    value enter, so every level is averaged over the same balanced set of arms; with fewer
    arms selected the result is empty.
    """
    import pandas as pd

    factorial = [a for a in arms if a.factorial]
    if len(factorial) < 12:
        return pd.DataFrame(columns=["mean", "std", "min", "max", "n"])
    names = [a.name for a in factorial]
    data = per_seed[(per_seed["task"] == task) & per_seed["arm"].isin(names)]
    data = data.dropna(subset=["value"])
    rows = []
    for (metric, seed), group in data.groupby(["metric", "seed"], sort=False):
        values = group.drop_duplicates("arm").set_index("arm")["value"]
        if len(values) < len(names):
            continue
        for label, attr, levels in FACTORS:
            for level in levels:
                at = [a.name for a in factorial if getattr(a, attr) == level]
                rows.append((label, level_name(level), metric, seed, float(values[at].mean())))
    frame = pd.DataFrame(rows, columns=["factor", "level", "metric", "seed", "value"])
    grouped = frame.groupby(["factor", "level", "metric"], sort=False)["value"]
    return grouped.agg(["mean", "std", "min", "max", "count"]).rename(columns={"count": "n"})
