"""A report's figures: build each from the report's data, write it beside the report, and return
the markdown that links it (alt text stating the figure's main number, a one-line caption).

Kept apart from `render` so the report's text and its figures are assembled in one place each;
the figures themselves live in `balance_figure`, `forest` and `plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mbpo_bench.reporting import balance_figure as balance
from mbpo_bench.reporting import forest
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.differences import DiffRow, paired_rows
from mbpo_bench.reporting.figures import safe_name, save_png
from mbpo_bench.reporting.loading import RunData
from mbpo_bench.reporting.plots import Curves, curves_figure, panels_for
from mbpo_bench.reporting.seed_differences import SeedRow


def image(alt: str, path: Path) -> str:
    """A markdown image; square brackets in the alt text become parentheses."""
    text = alt.replace("[", "(").replace("]", ")")
    return f"![{text}]({path.name})"


def balance_figures(runs: Sequence[RunData], baseline: str | None, out: Path) -> list[str]:
    """One modality-balance figure per task group, with its markdown."""
    lines = []
    for group, tasks in balance.all_groups(runs).items():
        fig = balance.balance_figure(runs, tasks, baseline)
        path = save_png(fig, out.parent / f"{out.stem}_balance_{safe_name(group)}.png")
        lines += [image(balance.alt_text(runs, tasks, group), path), ""]
    return lines


def forest_rows(
    runs: Sequence[RunData],
    base: RunData,
    flagged: Sequence[str],
    config: ReportConfig,
    over_seeds: Sequence[SeedRow] = (),
) -> list[forest.ForestRow]:
    """Every paired difference of every run against `base` (the tables' rows, as numbers),
    without the 0-100 average (another scale) and tasks missing from a run. An arm run at
    several seeds is one column of its rows over seeds (`over_seeds`) instead of one per seed."""
    grouped = {r.arm for r in over_seeds}
    rows = []
    for run in runs:
        if run is base or run.arm in grouped:
            continue
        diffs, _ = paired_rows(run, base, config, flagged)
        rows += [_forest_row(d, f"{run.name} vs {base.name}") for d in diffs if not d.missing]
    for r in over_seeds:
        d = r.diff
        seeds = (
            None if d.low is None or d.high is None else forest.SeedCI(d.low, d.high, len(r.seeds))
        )
        low, high = (None, None) if d.item is None else d.item[:2]
        column = f"{r.arm} ({len(r.seeds)} seeds) vs {base.name}"
        rows.append(forest.ForestRow(r.task, r.quantity, column, d.mean, low, high, d.shown, seeds))
    return rows


def _forest_row(d: DiffRow, column: str) -> forest.ForestRow:
    return forest.ForestRow(d.task, d.quantity, column, d.diff, d.low, d.high, d.shown)


def forest_figure_md(
    runs: Sequence[RunData],
    base: RunData,
    flagged: Sequence[str],
    config: ReportConfig,
    out: Path,
    over_seeds: Sequence[SeedRow] = (),
) -> list[str]:
    """The forest plot of the paired differences against the baseline, with its markdown."""
    rows = forest_rows(runs, base, flagged, config, over_seeds)
    if not rows:
        return []
    marks = ("shown", "not shown") if over_seeds else ("CI excludes 0", "CI includes 0")
    fig = forest.forest_figure(rows, marks=marks)
    path = save_png(fig, out.parent / f"{out.stem}_forest.png")
    caption = (
        f"Every row of the tables below but the 0-100 average; filled = the CI excludes zero "
        f"(`{config.mark}` in the tables)."
    )
    if over_seeds:
        caption = (
            "Every row of the tables below but the 0-100 average. A run: its paired CI (thin), "
            f"filled = the CI excludes zero (`{config.mark}` in its table). An arm run at several "
            "seeds: one column, the mean over seeds with the per-item paired CI of the "
            "seed-averaged differences (thin) and the 95% t interval over seeds (thick); filled "
            "= **shown** in its table over seeds (the interval over seeds excludes zero and "
            "Holm p < 0.05)."
        )
    return [image(forest.alt_text(rows, marks), path), "", caption, ""]


def curves_figure_md(curves: Sequence[Curves], out: Path, *, title: str | None = None) -> list[str]:
    """The grid of training curves, with its markdown (nothing when no panel has data)."""
    fig = curves_figure(curves, title=title)
    if fig is None:
        return ["No training run logged a metric the grid draws (loss, reward, KL, accuracy).", ""]
    path = save_png(fig, out.parent / f"{out.stem}_curves.png")
    return [image(_curves_alt(curves), path), ""]


def _curves_alt(curves: Sequence[Curves]) -> str:
    panels = panels_for(curves)
    key = panels[0].key
    last = [f"{c.name} {c.series[key][1][-1]:.4g}" for c in curves if key in c.series]
    titles = ", ".join(p.title for p in panels)
    return f"Training curves ({titles}); last {key}: {', '.join(last)}"
