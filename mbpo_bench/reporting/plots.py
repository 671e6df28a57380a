"""Training curves from the training runs' `metrics.jsonl`: ONE grid figure per report.

The panels are the metrics that explain a run, in this order, whichever the runs logged: loss,
reward (mean, with the spread across samples as a band), KL to the reference, the share of
rollout groups with a learning signal (1 - `zero_variance_frac`: a group whose rewards are all
equal has zero advantage) and accuracy. Throughput, learning rate and the advantage statistics
stay in `metrics.jsonl`: they explain the machine or the schedule, not what was learned.

Every run is drawn on the same axes (x = `step`, the row number where a row has none), its raw
values faint and an exponential moving average over them solid, so noise and trend are both
visible. The smoothing span scales with the run's length (`smooth`), so a 60-step and a
400-step run are smoothed comparably.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError
from mbpo_bench.reporting.figures import PALETTE, colour, pyplot, styled
from mbpo_bench.runs import read_jsonl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# spread bands drawn up to this many runs; beyond, overlapping bands hide the lines (the spread
# stays in the last-values table and in metrics.jsonl)
MAX_BANDS = 4
SKIP_KEYS = frozenset({"step", "epoch", "time", "wall_time", "timestamp", "elapsed_s"})


@dataclass(frozen=True)
class Panel:
    """One panel of the grid: a title and how to read its series from a run."""

    key: str  # the metric drawn as the line
    title: str
    band: str | None = None  # metric drawn as +- band around the line
    transform: str | None = None  # "one_minus": draw 1 - value


PANELS = (
    Panel("loss", "loss"),
    Panel("reward_mean", "reward (mean ± spread)", band="reward_std"),
    Panel("kl", "KL to reference"),
    Panel("zero_variance_frac", "share of groups with signal", transform="one_minus"),
    Panel("accuracy", "accuracy (online rollouts)"),
)


@dataclass(frozen=True)
class Curves:
    """One training run's series: metric -> (steps, values)."""

    name: str
    path: Path
    series: dict[str, tuple[list[float], list[float]]]
    last_step: float | None


def read_curves(path: Path, name: str) -> Curves:
    """Numeric series of `path/metrics.jsonl`; one-line UserError when the file is missing."""
    file = path / "metrics.jsonl"
    if not path.is_dir():
        raise UserError(
            f"training run folder {path} does not exist — pass a folder that "
            "`mbpo-bench train --output DIR` wrote"
        )
    if not file.is_file():
        raise UserError(
            f"training run folder {path} has no metrics.jsonl — pass a folder that "
            "`mbpo-bench train --output DIR` wrote"
        )
    series: dict[str, tuple[list[float], list[float]]] = {}
    last_step: float | None = None
    for i, row in enumerate(read_jsonl(file)):
        step = _number(row.get("step"))
        x = float(i) if step is None else step
        last_step = x
        for key, value in row.items():
            number = _number(value)
            if key in SKIP_KEYS or number is None:
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(x)
            ys.append(number)
    return Curves(name, path, dict(sorted(series.items())), last_step)


def mean_curves(name: str, seeds: Sequence[Curves]) -> Curves:
    """One run's curves averaged over its seeds, step by step: a series keeps the steps every
    seed logged it at (in the first seed's order), each value the mean over the seeds.

    Why a mean and not one faint line per seed: an ablation draws up to 17 arms in each panel;
    per-seed lines would double or triple that. How far seeds spread is what the report's
    across-seed intervals show, next to the numbers it compares."""
    if len(seeds) == 1:
        return Curves(name, seeds[0].path, seeds[0].series, seeds[0].last_step)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for key in sorted(set.intersection(*(set(c.series) for c in seeds))):
        maps = [dict(zip(*c.series[key], strict=True)) for c in seeds]
        xs = [x for x in seeds[0].series[key][0] if all(x in m for m in maps)]
        if xs:
            series[key] = (xs, [sum(m[x] for m in maps) / len(maps) for x in xs])
    lasts = [c.last_step for c in seeds if c.last_step is not None]
    return Curves(name, seeds[0].path, series, min(lasts) if lasts else None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def panels_for(curves: Sequence[Curves]) -> list[Panel]:
    """The panels at least one run has data for, in `PANELS` order."""
    return [p for p in PANELS if any(p.key in c.series for c in curves)]


def smooth(values: Sequence[float]) -> list[float]:
    """Exponential moving average with a span of 1/6 of the series (at least 1 point),
    bias-corrected at the start so the first smoothed value is the first raw value."""
    span = max(1.0, len(values) / 6)
    alpha = 2.0 / (span + 1.0)
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        acc = (1 - alpha) * acc + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(acc / weight)
    return out


def panel_values(c: Curves, panel: Panel) -> tuple[list[float], list[float]] | None:
    """(steps, values) of a run in a panel (transformed), or None when the run lacks it."""
    if panel.key not in c.series:
        return None
    xs, ys = c.series[panel.key]
    if panel.transform == "one_minus":
        ys = [1.0 - y for y in ys]
    return xs, ys


@styled
def curves_figure(curves: Sequence[Curves], title: str | None = None) -> Figure | None:
    """The grid of `panels_for(curves)`, every run in each panel; None when no panel has data.

    Artists carry gids the tests read: `raw|<run>|<metric>`, `smooth|<run>|<metric>`,
    `band|<run>|<metric>`.
    """
    panels = panels_for(curves)
    if not panels:
        return None
    plt = pyplot()
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 2.5 * nrows + 0.5), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, c in enumerate(curves):
            _draw_run(ax, c, panel, colour(i), linestyle(i), bands=len(curves) <= MAX_BANDS)
        ax.set_title(panel.title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.25, linewidth=0.5)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles = [
        plt.Line2D([], [], color=colour(i), linestyle=linestyle(i), linewidth=2, label=c.name)
        for i, c in enumerate(curves)
    ]
    fig.legend(
        handles=handles, loc="outside upper center", ncols=_legend_columns(curves, ncols),
        frameon=False, title=title or "training run (faint: raw values; solid: moving average)",
    )  # fmt: skip
    return fig


def _legend_columns(curves: Sequence[Curves], ncols: int) -> int:
    """As many legend entries a row as fit the figure (about 0.07 inch a character at 9 pt,
    plus the line sample), so long arm names are not cut at the edge."""
    entry = 0.07 * max(len(c.name) for c in curves) + 0.8
    return max(1, min(len(curves), int(3.6 * ncols // entry)))


def linestyle(i: int) -> str:
    """Solid for the first palette's worth of runs, then dashed, then dotted: an ablation's 17
    arms stay distinguishable with 8 colour-blind-safe colours."""
    return ("-", "--", ":")[(i // len(PALETTE)) % 3]


def _draw_run(
    ax: Any, c: Curves, panel: Panel, col: str, style: str = "-", *, bands: bool = True
) -> None:
    values = panel_values(c, panel)
    if values is None:
        return
    xs, ys = values
    ax.plot(xs, ys, color=col, alpha=0.25, linewidth=0.8, gid=f"raw|{c.name}|{panel.key}")
    smoothed = smooth(ys)
    ax.plot(
        xs, smoothed, color=col, linestyle=style, linewidth=1.8, gid=f"smooth|{c.name}|{panel.key}"
    )
    if bands and panel.band and panel.band in c.series:
        bx, spread = c.series[panel.band]
        if bx == xs:
            s = smooth(spread)
            low = [m - d for m, d in zip(smoothed, s, strict=True)]
            high = [m + d for m, d in zip(smoothed, s, strict=True)]
            band = ax.fill_between(xs, low, high, color=col, alpha=0.15, linewidth=0)
            band.set_gid(f"band|{c.name}|{panel.key}")


def last_values(curves: Sequence[Curves]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the last logged value of every plotted metric, one row per run."""
    keys = [k for p in panels_for(curves) for k in (p.key, p.band) if k]
    keys = [k for k in keys if any(k in c.series for c in curves)]
    rows = []
    for c in curves:
        step = "—" if c.last_step is None else f"{c.last_step:g}"
        rows.append(
            [c.name, step, *(f"{c.series[k][1][-1]:.4g}" if k in c.series else "—" for k in keys)]
        )
    return ["training run", "last step", *keys], rows
