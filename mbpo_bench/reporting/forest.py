"""The forest plot of paired differences against the baseline: one row per (task, quantity).

Each row is a point estimate with its paired 95% CI (thin line) and, where several seeds were
run, the across-seed CI (a thick translucent bar behind it); a vertical line at zero. A row's
mark comes from the same decision as the text it illustrates, passed in as `ForestRow.shown`
(never re-derived here): the difference tables' `*` (`DiffRow.shown`) in a report, the finding's
verdict in the quickstart's findings. Filled = shown, hollow = not shown, and the right margin
spells it out with the numbers.

Rows are grouped under bold section headers (the task); several comparisons (mbpo vs base,
control vs base) are side-by-side panels over the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mbpo_bench.reporting.figures import GREY, pyplot, styled

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SHOWN, NOT_SHOWN = "#0072B2", "#666666"  # Okabe-Ito blue; dark grey
MARKS = ("shown", "NOT shown")
PLOT_WIDTH = 3.4  # inches of one comparison's intervals
PER_ROW = 2  # comparisons side by side; more wrap to further rows of panels  # the words of the right margin and the legend


@dataclass(frozen=True)
class SeedCI:
    """Across-seed interval of a difference: the CI over per-seed differences."""

    low: float
    high: float
    n_seeds: int


@dataclass(frozen=True)
class ForestRow:
    section: str  # header the row sits under (the task)
    label: str  # the quantity
    column: str  # the comparison, e.g. "mbpo vs base"
    diff: float | None
    low: float | None
    high: float | None
    shown: bool
    seeds: SeedCI | None = None

    def text(self) -> str:
        """The margin's numbers: the point and its interval; where seeds decide the verdict,
        the interval over seeds (the per-item CI stays drawn, and in the text's table)."""
        if self.diff is None:
            return "n/a"
        if self.seeds is not None:
            return f"{self.diff:+.3f}, seeds [{self.seeds.low:+.3f}, {self.seeds.high:+.3f}]"
        ci = (
            "" if self.low is None or self.high is None else f" [{self.low:+.3f}, {self.high:+.3f}]"
        )
        return f"{self.diff:+.3f}{ci}"


def layout(rows: Sequence[ForestRow]) -> list[tuple[str, str | None]]:
    """Top-to-bottom lines: (section, None) for a header, (section, label) for a row."""
    lines: list[tuple[str, str | None]] = []
    for row in rows:
        if (row.section, None) not in lines:
            lines.append((row.section, None))
        if (row.section, row.label) not in lines:
            lines.append((row.section, row.label))
    return lines


@styled
def forest_figure(
    rows: Sequence[ForestRow],
    *,
    marks: tuple[str, str] = MARKS,
    title: str | None = None,
    xlabel: str = "difference (run - baseline)",
    limit: float | None = None,
) -> Figure:
    """The forest plot of `rows`, one panel per distinct `column` (in order of appearance).

    Artists carry gids the tests read: `point|<column>|<section>|<label>` (the marker),
    `ci|...` (the paired CI), `seeds|...` (the across-seed CI), `zero|<column>`.
    """
    plt = pyplot()
    columns = list(dict.fromkeys(r.column for r in rows))
    lines = layout(rows)
    y = {line: len(lines) - 1 - i for i, line in enumerate(lines)}
    ncols = min(len(columns), PER_ROW)
    nrows = -(-len(columns) // ncols)
    # inches: the row labels (9 pt, ~0.068 a character), each plot, each margin (8.5 pt text)
    label_w = 0.068 * max(len(text or section) for section, text in lines) + 0.3
    margin_w = 0.062 * max(len(f"{r.text()}  {marks[0] if r.shown else marks[1]}") for r in rows)
    margin_w = max(2.2, margin_w + 0.3)
    fig, axes = plt.subplots(
        nrows, 2 * ncols,
        figsize=(label_w + (PLOT_WIDTH + margin_w) * ncols, nrows * (0.22 * len(lines) + 0.9) + 0.5),
        sharey=True, width_ratios=[PLOT_WIDTH, margin_w] * ncols, layout="constrained",
        squeeze=False,
    )  # fmt: skip
    plots = [ax for row in axes for ax in row[0::2]]
    margins = [ax for row in axes for ax in row[1::2]]
    for i, (ax, margin) in enumerate(zip(plots, margins, strict=True)):
        if i >= len(columns):
            ax.set_visible(False)
            margin.set_visible(False)
            continue
        if i:
            ax.sharex(plots[0])
        column = columns[i]
        _draw_column(ax, margin, column, [r for r in rows if r.column == column], y, marks)
        ax.set_xlabel(xlabel)
        ax.set_title(column, loc="left", fontweight="bold")
    _symmetric(plots[0], rows, limit)
    plots[0].set_yticks([y[line] for line in lines])
    plots[0].set_yticklabels([label or section for section, label in lines])
    plots[0].set_ylim(-0.7, len(lines) - 0.3)
    for row in axes:  # the first panel of each row shows the labels, headers in bold
        for tick, (_, label) in zip(row[0].get_yticklabels(), lines, strict=True):
            tick.set_fontweight("bold" if label is None else "normal")
    handles = [
        plt.Line2D([], [], marker="o", color=SHOWN, linestyle="-", label=marks[0]),
        plt.Line2D(
            [],
            [],
            marker="o",
            color=NOT_SHOWN,
            markerfacecolor="white",
            linestyle="-",
            label=marks[1],
        ),
    ]
    if any(r.seeds is not None for r in rows):
        handles.append(
            plt.Line2D([], [], color=GREY, alpha=0.35, linewidth=7, label="across-seed 95% CI")
        )
    fig.legend(
        handles=handles, loc="outside upper center", ncols=len(handles), frameon=False,
        title=title or "run - baseline on paired items: point and paired 95% bootstrap CI",
    )  # fmt: skip
    return fig


def _draw_column(
    ax: Any,
    margin: Any,
    column: str,
    rows: Sequence[ForestRow],
    y: dict[tuple[str, str | None], int],
    marks: tuple[str, str],
) -> None:
    """One comparison: the intervals in `ax`, the numbers and the verdicts in `margin`."""
    zero = ax.axvline(0.0, color="#222222", linewidth=0.9, zorder=1)
    zero.set_gid(f"zero|{column}")
    for line, pos in y.items():
        if line[1] is None:
            ax.axhline(pos, color=GREY, linewidth=0.4, alpha=0.5, zorder=0)
    for row in rows:
        if row.diff is None:
            continue
        pos = y[(row.section, row.label)]
        gid = f"{column}|{row.section}|{row.label}"
        col = SHOWN if row.shown else NOT_SHOWN
        if row.seeds is not None:
            ax.plot(
                [row.seeds.low, row.seeds.high], [pos, pos], color=col, alpha=0.25, linewidth=7,
                solid_capstyle="butt", zorder=1, gid=f"seeds|{gid}",
            )  # fmt: skip
        if row.low is not None and row.high is not None:
            ax.plot([row.low, row.high], [pos, pos], color=col, linewidth=1.4, zorder=2,
                    gid=f"ci|{gid}")  # fmt: skip
        ax.plot(
            [row.diff], [pos], marker="o", markersize=5, color=col,
            markerfacecolor=col if row.shown else "white", zorder=3, gid=f"point|{gid}",
        )  # fmt: skip
        verdict = marks[0] if row.shown else marks[1]
        margin.text(
            0.0, pos, f"{row.text()}  {verdict}", va="center", fontsize=8.5, color=col,
            fontweight="bold" if row.shown else "normal", gid=f"text|{gid}",
        )  # fmt: skip
    ax.grid(axis="x", alpha=0.3, linewidth=0.5, color=GREY)
    ax.tick_params(axis="y", length=0)
    margin.set_xlim(0, 1)
    margin.axis("off")


def _symmetric(ax: Any, rows: Sequence[ForestRow], limit: float | None = None) -> None:
    """Zero in the middle of the (shared) x axis: left of it a loss, right of it a gain. With
    `limit` (e.g. 1 for differences of proportions) the axis stops there: a t interval over
    two seeds can be many times wider than any difference the quantity allows."""
    ends = [abs(v) for r in rows for v in (r.diff, r.low, r.high) if v is not None]
    ends += [abs(v) for r in rows if r.seeds for v in (r.seeds.low, r.seeds.high)]
    span = max([*ends, 1e-3]) * 1.08
    if limit is not None:
        span = min(span, limit * 1.04)
    ax.set_xlim(-span, span)


def alt_text(rows: Sequence[ForestRow], marks: tuple[str, str] = MARKS) -> str:
    """The figure's main number: how many rows are marked, and the largest marked difference."""
    drawn = [r for r in rows if r.diff is not None]
    shown = [r for r in drawn if r.shown]
    text = (
        f"Forest plot of {len(drawn)} paired differences, {marks[0]}: {len(shown)} of {len(drawn)}"
    )
    if shown:
        top = max(shown, key=lambda r: abs(r.diff or 0.0))
        ci = "" if top.low is None else f" (95% CI {top.low:+.3f} to {top.high:+.3f})"
        text += f"; largest: {top.column}, {top.section} {top.label} {top.diff:+.3f}{ci}"
    return text
