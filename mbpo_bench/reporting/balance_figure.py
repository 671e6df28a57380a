"""The modality-balance figure: does a checkpoint answer from the image?

For each run, grouped bars of accuracy with the image and under every other probe the results
carry (blind, mismatched image, noise, ...), plus any twin-pair metric (a metric whose name
contains "pair", e.g. `pair_accuracy`: both twins of a pair right), each with its bootstrap CI
as a whisker. Where the task splits its items by language prior (`accuracy[prior=...]`
metrics), prior-consistent and counter-prior items get their own panels beside "all items": a
model that reads the image scores alike on both; one that answers from the prior does not.

One figure per task group (`task_groups`): one row of panels per task. Everything comes from
`results.json` (value, ci_low, ci_high of each metric): nothing is recomputed from samples.

Decisions:
- Which bars: generic over what the results hold, so new probes or pair metrics appear without
  a change here. Colours follow the probe (the same in every figure), runs are the groups along
  x, the baseline's group is shaded and labelled "(baseline)".
- Task groups by name (`mbpo_embedded_color` -> `mbpo_embedded`) where two or more tasks share
  the prefix; the rest share one figure "other tasks". Results carry no tags, and a report reads
  results files only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mbpo_bench.evaluation.schema import Metric, TaskResult
from mbpo_bench.reporting.figures import GREY, PALETTE, pyplot, styled
from mbpo_bench.reporting.loading import RunData
from mbpo_bench.reporting.tables import PROBE_ORDER, all_tasks, ordered_probes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ALL = "all items"
PRIOR_ORDER = ("consistent", "counter")
PRIOR_TITLES = {"consistent": "prior-consistent items", "counter": "counter-prior items"}
OTHER_GROUP = "other tasks"


@dataclass(frozen=True)
class Bar:
    """One bar: a run's value of one series (probe or pair metric) in one panel."""

    task: str
    panel: str  # ALL or a prior value ("consistent", "counter", ...)
    run: str
    series: str  # probe name, or "<metric>" / "<probe> <metric>" for pair metrics
    value: float
    low: float | None
    high: float | None


def task_groups(tasks: Sequence[str]) -> dict[str, list[str]]:
    """Group name -> tasks: tasks sharing the name minus its last `_part` (2 or more) group
    together; the others go to `OTHER_GROUP`. Groups in order of their first task."""
    by_prefix: dict[str, list[str]] = {}
    for task in sorted(tasks):
        by_prefix.setdefault(task.rpartition("_")[0] or task, []).append(task)
    groups: dict[str, list[str]] = {}
    for prefix, members in by_prefix.items():
        key = prefix if len(members) > 1 else OTHER_GROUP
        groups.setdefault(key, []).extend(members)
    return groups


def _pair_metrics(result: TaskResult) -> list[tuple[str, str]]:
    """(probe, metric) of every metric whose name says it scores twin pairs."""
    found = [
        (p, m)
        for p, pr in result.probes.items()
        for m in pr.metrics
        if "pair" in m and "[" not in m
    ]
    found += [("", m) for m in result.balance if "pair" in m]
    return sorted(
        found, key=lambda pm: (PROBE_ORDER.index(pm[0]) if pm[0] in PROBE_ORDER else 99, pm)
    )


def _series_name(probe: str, metric: str) -> str:
    return metric if probe in ("", "image") else f"{probe} {metric}"


def _prior_values(result: TaskResult) -> list[str]:
    found = {
        m.removeprefix("accuracy[prior=").removesuffix("]")
        for pr in result.probes.values()
        for m in pr.metrics
        if m.startswith("accuracy[prior=") and m.endswith("]")
    }
    return [p for p in PRIOR_ORDER if p in found] + sorted(found - set(PRIOR_ORDER))


def panels(runs: Sequence[RunData], task: str) -> list[str]:
    """ALL, then one panel per prior value any run's results carry for the task."""
    priors: list[str] = []
    for run in runs:
        if task in run.results.tasks:
            priors += [p for p in _prior_values(run.results.tasks[task]) if p not in priors]
    ordered = [p for p in PRIOR_ORDER if p in priors] + sorted(set(priors) - set(PRIOR_ORDER))
    return [ALL, *ordered]


def balance_bars(runs: Sequence[RunData], task: str) -> list[Bar]:
    """Every bar of one task: per panel, per run, per probe with accuracy (+ pair metrics)."""
    bars = []
    for run in runs:
        result = run.results.tasks.get(task)
        if result is None:
            continue
        for panel in panels(runs, task):
            metric = "accuracy" if panel == ALL else f"accuracy[prior={panel}]"
            for probe in ordered_probes(set(result.probes)):
                bars += _bar(task, panel, run.name, probe, result.probes[probe].metrics.get(metric))
            if panel == ALL:
                for probe, name in _pair_metrics(result):
                    found = (
                        result.balance.get(name)
                        if probe == ""
                        else result.probes[probe].metrics[name]
                    )
                    bars += _bar(task, panel, run.name, _series_name(probe, name), found)
    return bars


def _bar(task: str, panel: str, run: str, series: str, metric: Metric | None) -> list[Bar]:
    if metric is None or metric.value is None:
        return []
    return [Bar(task, panel, run, series, metric.value, metric.ci_low, metric.ci_high)]


def series_colours(bars: Sequence[Bar]) -> dict[str, str]:
    """A colour per series: known probes keep their PROBE_ORDER colour, others follow."""
    names = list(dict.fromkeys(b.series for b in bars))
    known = [p for p in PROBE_ORDER if p in names]
    rest = [n for n in names if n not in PROBE_ORDER]
    out = {p: PALETTE[PROBE_ORDER.index(p)] for p in known}
    free = [c for c in PALETTE if c not in out.values()]
    out.update({n: free[i % len(free)] for i, n in enumerate(rest)})
    return out


@styled
def balance_figure(runs: Sequence[RunData], tasks: Sequence[str], baseline: str | None) -> Figure:
    """One row per task, one panel per item subset; bars grouped by run, coloured by series.

    Artists carry gids the tests read: `bar|<task>|<panel>|<run>|<series>` (a bar),
    `ci|<task>|<panel>|<run>|<series>` (its whisker), `baseline|<task>|<panel>` (the shading).
    """
    plt = pyplot()
    per_task = {t: balance_bars(runs, t) for t in tasks}
    ncols = max(len(panels(runs, t)) for t in tasks)
    names = [r.name for r in runs]
    colours = series_colours([b for bars in per_task.values() for b in bars])
    width = max(3.4, 0.22 * len(colours) * len(names) + 0.8)
    fig, axes = plt.subplots(
        len(tasks), ncols, figsize=(width * ncols, 2.5 * len(tasks) + 0.7), squeeze=False,
        sharey=True, layout="constrained",
    )  # fmt: skip
    for row, task in enumerate(tasks):
        task_panels = panels(runs, task)
        for col in range(ncols):
            ax = axes[row][col]
            if col >= len(task_panels):
                ax.set_visible(False)
                continue
            panel = task_panels[col]
            bars = [b for b in per_task[task] if b.panel == panel]
            _draw_panel(ax, task, panel, bars, names, baseline, colours)
            title = PRIOR_TITLES.get(panel, panel if panel == ALL else f"prior={panel}")
            ax.set_title(f"{task}: {title}" if col == 0 else title, loc="left")
        axes[row][0].set_ylabel("accuracy")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=s) for s, c in colours.items()]
    fig.legend(
        handles=handles, loc="outside upper center", ncols=len(handles), frameon=False,
        title="accuracy with the image and under each probe (whiskers: 95% bootstrap CI)",
    )  # fmt: skip
    return fig


def _draw_panel(
    ax: Any,
    task: str,
    panel: str,
    bars: Sequence[Bar],
    runs: Sequence[str],
    baseline: str | None,
    colours: dict[str, str],
) -> None:
    series = [s for s in colours if any(b.series == s for b in bars)]
    step = 0.8 / max(len(series), 1)
    for x, run in enumerate(runs):
        if run == baseline:
            shade = ax.axvspan(x - 0.48, x + 0.48, color="#EBEBEB", zorder=0, linewidth=0)
            shade.set_gid(f"baseline|{task}|{panel}")
        for j, name in enumerate(series):
            found = [b for b in bars if b.run == run and b.series == name]
            if not found:
                continue
            bar = found[0]
            xpos = x - 0.4 + step * (j + 0.5)
            gid = f"{task}|{panel}|{run}|{name}"
            ax.bar(xpos, bar.value, step * 0.92, color=colours[name], gid=f"bar|{gid}", zorder=2)
            if bar.low is not None and bar.high is not None:
                err = [[bar.value - bar.low], [bar.high - bar.value]]
                lines = ax.errorbar(
                    xpos, bar.value, yerr=err, fmt="none", ecolor="#222222", elinewidth=0.9,
                    capsize=1.5, zorder=3,
                )  # fmt: skip
                lines.lines[2][0].set_gid(f"ci|{gid}")
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([f"{r}\n(baseline)" if r == baseline else r for r in runs])
    for label, run in zip(ax.get_xticklabels(), runs, strict=True):
        if run == baseline:
            label.set_fontweight("bold")
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.set_ylim(0, 1.04)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.grid(axis="y", alpha=0.3, linewidth=0.5, color=GREY)
    ax.set_axisbelow(True)


def alt_text(runs: Sequence[RunData], tasks: Sequence[str], group: str) -> str:
    """The figure's main number: image accuracy per run, mean over the group's tasks (and the
    counter-prior accuracy where the tasks split by prior)."""
    parts = []
    for panel, what in ((ALL, "image accuracy"), ("counter", "counter-prior image accuracy")):
        values = []
        for run in runs:
            found = [
                b.value
                for t in tasks
                for b in balance_bars([run], t)
                if b.panel == panel and b.series == "image"
            ]
            if len(found) == len(tasks):
                values.append(f"{run.name} {sum(found) / len(found):.3f}")
        if values:
            parts.append(f"{what} {', '.join(values)}")
    mean = f"mean over {len(tasks)} tasks" if len(tasks) > 1 else tasks[0]
    return f"Modality balance, {group} ({mean}): " + "; ".join(parts)


def all_groups(runs: Sequence[RunData]) -> dict[str, list[str]]:
    """Task groups of every task any run has that has at least one bar to draw."""
    drawable = [t for t in all_tasks(runs) if balance_bars(runs, t)]
    return task_groups(drawable)
