"""The modality-balance figure: does a checkpoint answer from the image?

For each run, grouped bars of accuracy with the image and under every other probe the results
carry (blind, mismatched image, noise, ...), each with its bootstrap CI as a whisker. Where the
task splits its items by language prior (`accuracy[prior=...]` metrics), prior-consistent and
counter-prior items get their own panels beside "all items": a model that reads the image scores
alike on both; one that answers from the prior does not. A twin-pair metric (its name contains
"pair", e.g. `pair_accuracy`: both twins of a pair right, which no text-only answer can raise)
gets a panel of its own, under the same probes.

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

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mbpo_bench.evaluation.schema import TaskResult
from mbpo_bench.reporting.figures import GREY, PALETTE, pyplot, styled
from mbpo_bench.reporting.loading import RunData
from mbpo_bench.reporting.tables import PROBE_ORDER, all_tasks, ordered_probes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ALL = "all items"
PRIOR_ORDER = ("consistent", "counter")
PRIOR_TITLES = {"consistent": "prior-consistent items", "counter": "counter-prior items"}
PAIR_TITLES = {"pair_accuracy": "twin pairs (both right)"}
OTHER_GROUP = "other tasks"
MAX_WIDTH = 15.0  # inches of panels side by side before a task's panels wrap to a new row


@dataclass(frozen=True)
class Bar:
    """One bar: a run's value of one series (probe or pair metric) in one panel."""

    task: str
    panel: str  # ALL, a prior value ("consistent", "counter", ...) or a pair metric
    run: str
    series: str  # the probe
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


def _pair_metrics(result: TaskResult) -> list[str]:
    """Names of the probe metrics that score twin pairs (the name says "pair")."""
    return sorted({m for pr in result.probes.values() for m in pr.metrics if _is_pair(m)})


def _is_pair(metric: str) -> bool:
    return "pair" in metric and "[" not in metric


def _prior_values(result: TaskResult) -> list[str]:
    found = {
        m.removeprefix("accuracy[prior=").removesuffix("]")
        for pr in result.probes.values()
        for m in pr.metrics
        if m.startswith("accuracy[prior=") and m.endswith("]")
    }
    return sorted(found)


def panels(runs: Sequence[RunData], task: str) -> list[str]:
    """ALL, one panel per prior value, one per twin-pair metric any run's results carry."""
    priors: set[str] = set()
    pairs: set[str] = set()
    for run in runs:
        if task in run.results.tasks:
            priors.update(_prior_values(run.results.tasks[task]))
            pairs.update(_pair_metrics(run.results.tasks[task]))
    return order_panels(priors | pairs)


def order_panels(found: set[str]) -> list[str]:
    """ALL first, then the prior panels (consistent, counter, others), then the pair metrics."""
    priors = {p for p in found if p != ALL and not _is_pair(p)}
    pairs = {p for p in found if _is_pair(p)}
    ordered = [p for p in PRIOR_ORDER if p in priors] + sorted(priors - set(PRIOR_ORDER))
    return [ALL, *ordered, *sorted(pairs)]


def panel_metric(panel: str) -> str:
    """The metric a panel's bars show, under each probe."""
    if panel == ALL:
        return "accuracy"
    return panel if _is_pair(panel) else f"accuracy[prior={panel}]"


def panel_title(panel: str) -> str:
    if panel == ALL:
        return ALL
    if _is_pair(panel):
        return PAIR_TITLES.get(panel, panel)
    return PRIOR_TITLES.get(panel, f"prior={panel}")


def balance_bars(runs: Sequence[RunData], task: str) -> list[Bar]:
    """Every bar of one task: per panel, per run, per probe that has the panel's metric."""
    bars = []
    for run in runs:
        result = run.results.tasks.get(task)
        if result is None:
            continue
        for panel in panels(runs, task):
            metric = panel_metric(panel)
            for probe in ordered_probes(set(result.probes)):
                found = result.probes[probe].metrics.get(metric)
                if found is not None and found.value is not None:
                    bars.append(
                        Bar(task, panel, run.name, probe, found.value, found.ci_low, found.ci_high)
                    )
    return bars


def series_colours(bars: Sequence[Bar]) -> dict[str, str]:
    """A colour per probe: known probes keep their PROBE_ORDER colour, others follow."""
    names = list(dict.fromkeys(b.series for b in bars))
    known = [p for p in PROBE_ORDER if p in names]
    rest = [n for n in names if n not in PROBE_ORDER]
    out = {p: PALETTE[PROBE_ORDER.index(p)] for p in known}
    free = [c for c in PALETTE if c not in out.values()]
    out.update({n: free[i % len(free)] for i, n in enumerate(rest)})
    return out


def grid(
    runs: Sequence[RunData], tasks: Sequence[str], n_series: int
) -> tuple[float, int, list[tuple[str, str, int, int]]]:
    """(panel width in inches, columns, [(task, panel, row, col)]): each task's panels fill
    rows of `columns` panels: as few rows as MAX_WIDTH allows, evenly filled."""
    return layout({t: panels(runs, t) for t in tasks}, len(runs), n_series)


def layout(
    task_panels: dict[str, list[str]], n_runs: int, n_series: int
) -> tuple[float, int, list[tuple[str, str, int, int]]]:
    """`grid` over given panels per task (in order) and a number of runs along x."""
    width = max(3.2, 0.2 * n_series * n_runs + 0.8)
    most = max(len(p) for p in task_panels.values())
    fit = max(1, int(MAX_WIDTH // width))
    ncols = -(-most // -(-most // fit))  # as many rows as needed, filled evenly (4 -> 2 x 2)
    cells, row = [], 0
    for task, given in task_panels.items():
        names = _side_by_side(given, ncols)
        for i, panel in enumerate(names):
            cells.append((task, panel, row + i // ncols, i % ncols))
        row += -(-len(names) // ncols)
    return width, ncols, cells


def _side_by_side(names: list[str], ncols: int) -> list[str]:
    """Keep prior-consistent and counter-prior panels in one row when a row holds two: where
    they would straddle a row break, the panels after them (twin pairs) move before them."""
    if ncols < 2 or not all(p in names for p in PRIOR_ORDER):
        return names
    first = names.index(PRIOR_ORDER[0])
    if first % ncols != ncols - 1:
        return names
    priors = [p for p in names if p in PRIOR_ORDER]
    after = [p for p in names[first:] if p not in PRIOR_ORDER]
    return [*names[:first], *after, *priors]


LEGEND = "accuracy with the image and under each probe (whiskers: 95% bootstrap CI)"


def balance_figure(runs: Sequence[RunData], tasks: Sequence[str], baseline: str | None) -> Figure:
    """Each task's panels (all items, per prior, per pair metric) in rows; in a panel, bars
    grouped by run, coloured by probe. See `draw_balance` for the artists' gids."""
    per_task = {t: balance_bars(runs, t) for t in tasks}
    task_panels = {t: panels(runs, t) for t in tasks}
    return draw_balance(per_task, task_panels, [r.name for r in runs], baseline, LEGEND)


@styled
def draw_balance(
    per_task: dict[str, list[Bar]],
    task_panels: dict[str, list[str]],
    names: Sequence[str],
    baseline: str | None,
    legend: str,
) -> Figure:
    """The balance figure of given bars: `task_panels` (task -> its panels, in order) in rows,
    `names` (the runs) along x in each panel, one bar per series (probe), the baseline shaded.

    Artists carry gids the tests read: `bar|<task>|<panel>|<run>|<probe>` (a bar),
    `ci|<task>|<panel>|<run>|<probe>` (its whisker), `baseline|<task>|<panel>` (the shading).
    """
    plt = pyplot()
    colours = series_colours([b for bars in per_task.values() for b in bars])
    width, ncols, cells = layout(task_panels, len(names), len(colours))
    nrows = max(r for _, _, r, _ in cells) + 1
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, 2.5 * nrows + 0.7), squeeze=False, sharey=True,
        layout="constrained",
    )  # fmt: skip
    used = set()
    for task, panel, row, col in cells:
        ax = axes[row][col]
        used.add((row, col))
        bars = [b for b in per_task[task] if b.panel == panel]
        _draw_panel(ax, task, panel, bars, names, baseline, colours)
        title = panel_title(panel)  # the task named at the start of each of its rows
        ax.set_title(f"{task}: {title}" if col == 0 else title, loc="left")
        if col == 0:
            ax.set_ylabel("accuracy")
    for row in range(nrows):
        for col in range(ncols):
            if (row, col) not in used:
                axes[row][col].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=s) for s, c in colours.items()]
    fig.legend(
        handles=handles, loc="outside upper center", ncols=len(handles), frameon=False,
        title=legend,
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
            if bar.value < 0.005:  # a bar of height 0 is invisible: say it
                ax.text(xpos, 0.01, "0", ha="center", va="bottom", fontsize=7, color=colours[name])
            if bar.low is not None and bar.high is not None:
                err = [[bar.value - bar.low], [bar.high - bar.value]]
                lines = ax.errorbar(
                    xpos, bar.value, yerr=err, fmt="none", ecolor="#222222", elinewidth=0.9,
                    capsize=1.5, zorder=3,
                )  # fmt: skip
                lines.lines[2][0].set_gid(f"ci|{gid}")
    ax.set_xticks(range(len(runs)))
    # names wider than their slot (about 0.065 inch a character at 9 pt) are turned
    crowded = max(len(r) for r in runs) * 0.065 > 0.95 * _panel_width(ax) / len(runs)
    ax.set_xticklabels(
        [f"{r}\n(baseline)" if r == baseline else r for r in runs],
        rotation=35 if crowded else 0, ha="right" if crowded else "center",
        rotation_mode="anchor",
    )  # fmt: skip
    for label, run in zip(ax.get_xticklabels(), runs, strict=True):
        if run == baseline:
            label.set_fontweight("bold")
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.set_ylim(0, 1.04)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.grid(axis="y", alpha=0.3, linewidth=0.5, color=GREY)
    ax.set_axisbelow(True)


def _panel_width(ax: Any) -> float:
    """Width in inches of one panel: the figure's width over the grid's columns."""
    ncols = ax.get_subplotspec().get_gridspec().ncols
    return float(ax.get_figure().get_size_inches()[0]) / ncols


def alt_text(runs: Sequence[RunData], tasks: Sequence[str], group: str) -> str:
    """The figure's main number: image accuracy per run, mean over the group's tasks (and the
    counter-prior accuracy where the tasks split by prior)."""
    per_task = {t: balance_bars(runs, t) for t in tasks}
    return bars_alt_text(per_task, [r.name for r in runs], group)


def bars_alt_text(per_task: dict[str, list[Bar]], names: Sequence[str], group: str) -> str:
    """`alt_text` of given bars (task -> bars; `names` in order)."""
    tasks = list(per_task)
    parts = []
    for panel, what in ((ALL, "image accuracy"), ("counter", "counter-prior image accuracy")):
        values = []
        for name in names:
            found = [
                b.value
                for t in tasks
                for b in per_task[t]
                if b.run == name and b.panel == panel and b.series == "image"
            ]
            if len(found) == len(tasks):
                values.append(f"{name} {sum(found) / len(found):.3f}")
        if values:
            parts.append(f"{what} {', '.join(values)}")
    mean = f"mean over {len(tasks)} tasks" if len(tasks) > 1 else tasks[0]
    return f"Modality balance, {group} ({mean}): " + "; ".join(parts)


def seed_mean_bars(seeds: Mapping[str, Sequence[RunData]], task: str) -> list[Bar]:
    """Bars of runs repeated over seeds (name -> its seeds' runs): each bar is the mean over
    the seeds that have its metric, its whisker the 95% t interval over those seeds
    (`metrics.across_seeds`, the quickstart findings' interval); a name evaluated at one seed
    keeps that run's bootstrap CI over items (there is no spread over seeds to show)."""
    from mbpo_bench.metrics import across_seeds

    out = []
    for name, runs in seeds.items():
        found: dict[tuple[str, str], list[Bar]] = {}
        for run in runs:
            for bar in balance_bars([run], task):
                found.setdefault((bar.panel, bar.series), []).append(bar)
        for (panel, series), bars in found.items():
            if len(bars) == 1:
                out.append(dataclasses.replace(bars[0], run=name))
                continue
            est = across_seeds([b.value for b in bars])
            out.append(Bar(task, panel, name, series, est.mean, est.low, est.high))
    return out


def all_groups(runs: Sequence[RunData]) -> dict[str, list[str]]:
    """Task groups of every task any run has that has at least one bar to draw."""
    drawable = [t for t in all_tasks(runs) if balance_bars(runs, t)]
    return task_groups(drawable)
