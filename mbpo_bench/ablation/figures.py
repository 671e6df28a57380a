"""The ablation report's figures: modality balance per task group, a forest plot of paired
differences (every arm vs the base, and vs its matched control), one grid of training curves.

Written beside `report.md` (`report_balance_<group>.png`, `report_forest.png`,
`report_curves.png`), from the run folders' files only, like the tables.

Decisions:
- Seeds are the unit of inference, as in the quickstart's findings. Balance bars are the mean
  over an arm's seeds with the 95% t interval over seeds as whiskers (`metrics.across_seeds`);
  the base, evaluated once, keeps its bootstrap CI over items.
- Forest rows: the ablation's quantities (the tables' columns) on its headline task (the
  average over tasks, or the only task), for every arm minus the base and minus each of its
  matched controls (`matched_controls`). The point and the across-seed interval come from the same per-seed values as the
  tables (`Measurements.per_seed`), so figure and tables agree; the thin line beside it is the
  per-item paired bootstrap CI of the seed-averaged per-item differences (stratified by task),
  where the runs kept `samples.jsonl`. A row is **shown** when its across-seed interval excludes
  zero and its Holm-adjusted p (over every row of the plot) is below 0.05, the quickstart's
  rule; one seed shows nothing. The table under the figure states every row's verdict: the
  figure's marks are that column, never re-derived.
- Curves: one line per arm, the mean over its seeds step by step (`plots.mean_curves`; why not
  one line per seed is said there), raw faint and smoothed solid, every arm on the same axes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError
from mbpo_bench.reporting.seeds import HEADER, SeedDiff, item_ci, seed_diff, with_holm
from mbpo_bench.runs import RunDir

if TYPE_CHECKING:
    from mbpo_bench.ablation.aggregate import Measurements
    from mbpo_bench.ablation.config import Arm
    from mbpo_bench.ablation.plan import Plan
    from mbpo_bench.reporting import forest
    from mbpo_bench.reporting.loading import RunData

STEM = "report"  # the ablation's report is <output>/report.md
VS_BASE = "vs the base (start)"
VS_CONTROL = "vs the matched control"


@dataclass(frozen=True)
class ItemSpec:
    """How a quantity is read per item from `samples.jsonl` (`reporting.paired.item_values`)."""

    probe: str
    metric: str
    prior: str | None = None


# aggregate.QUANTITIES key -> per-item reading ("pair_accuracy": per twin pair, both right)
ITEMS = {
    "pair_accuracy": ItemSpec("image", "pair_accuracy"),
    "accuracy": ItemSpec("image", "accuracy"),
    "acc_counter_prior": ItemSpec("image", "accuracy", "counter"),
    "acc_prior_consistent": ItemSpec("image", "accuracy", "consistent"),
    "visual_reliance_blind": ItemSpec("image", "visual_reliance_blind"),
    "visual_reliance_mismatched": ItemSpec("image", "visual_reliance_mismatched"),
}


def matched_controls(arms: Sequence[Arm]) -> dict[str, list[str]]:
    """MBPO arm name -> the names of its matched controls among `arms`, in catalogue order.

    A control (`Arm.control`) that mines as an MBPO arm does (`Arm.miner`) matches the MBPO arm
    with exactly those overrides (`sft-mined`, `dpo-mined`, `dpo-mdpo`, `sft-balanced` -> MBPO;
    `sft-twins` -> `mbpo-twins`); an MBPO-method control without `miner` (`grpo-mined`) matches
    the MBPO arm whose overrides it extends most closely. In a learning-rate grid
    (`<arm>@lr<value>`) a control matches only the MBPO arm at the same grid point; a control
    trained at its own tuned lr (`lr_from`) still matches MBPO: that is the matched comparison.
    """
    mbpo = [a for a in arms if a.method == "mbpo" and not getattr(a, "control", False)]
    out: dict[str, list[str]] = {}
    for control in arms:
        if not getattr(control, "control", False):
            continue
        grid = _grid_point(control.name)
        same_lr = [m for m in mbpo if _grid_point(m.name) == grid]
        if control.miner:
            found = [m for m in same_lr if m.overrides == control.miner]
        else:
            inside = [m for m in same_lr if set(m.overrides) <= set(control.overrides)]
            found = sorted(inside, key=lambda m: -len(m.overrides))[:1]
        for arm in found[:1]:
            out.setdefault(arm.name, []).append(control.name)
    return out


def _grid_point(name: str) -> str:
    """The lr-grid suffix of an arm's name (`mbpo-twins@lr3e-05` -> `lr3e-05`), or ''."""
    return name.partition("@")[2]


def evaluated(plan: Plan) -> tuple[RunData | None, dict[str, dict[int, RunData]]]:
    """(the base's run, arm -> seed -> run) of every finished evaluation."""
    from mbpo_bench.reporting.loading import load_run

    def load(folder: Path, name: str) -> RunData | None:
        if not RunDir(folder).finished:
            return None
        try:
            return load_run(folder, name)
        except UserError:
            return None  # listed under Problems

    base = None if plan.base_eval is None else load(Path(plan.base_eval.output), _base())
    arms: dict[str, dict[int, RunData]] = {}
    for run in plan.runs:
        data = load(run.eval_dir, run.arm.name)
        if data is not None:
            arms.setdefault(run.arm.name, {})[run.seed] = data
    return base, arms


def _base() -> str:
    from mbpo_bench.ablation.aggregate import BASE

    return BASE


# ---------------------------------------------------------------- modality balance


def balance_section(
    base: RunData | None, arms: Mapping[str, Mapping[int, RunData]], report_dir: Path
) -> list[str]:
    """One modality-balance figure per task group (arms as runs, mean over seeds)."""
    from mbpo_bench.reporting import balance_figure as balance
    from mbpo_bench.reporting.figures import safe_name, save_png
    from mbpo_bench.reporting.report_figures import image

    seeds: dict[str, list[RunData]] = {} if base is None else {base.name: [base]}
    seeds.update({arm: list(runs.values()) for arm, runs in arms.items() if runs})
    if not seeds:
        return []
    every = [r for runs in seeds.values() for r in runs]
    tasks = [t for t in balance.all_tasks(every) if any(balance.balance_bars(every, t))]
    n_seeds = max(len(r) for r in seeds.values())
    legend = (
        f"accuracy with the image and under each probe, mean over seeds (up to {n_seeds})\n"
        "whiskers: 95% t interval over seeds (one evaluation: 95% bootstrap CI over items)"
    )
    lines = []
    for group, members in balance.task_groups(tasks).items():
        per_task = {t: balance.seed_mean_bars(seeds, t) for t in members}
        panels = {t: balance.order_panels({b.panel for b in per_task[t]}) for t in members}
        names = list(seeds)
        fig = balance.draw_balance(per_task, panels, names, _base_name(base), legend)
        path = save_png(fig, report_dir / f"{STEM}_balance_{safe_name(group)}.png")
        lines += [image(balance.bars_alt_text(per_task, names, group), path), ""]
    return lines


def _base_name(base: RunData | None) -> str | None:
    return None if base is None else base.name


# ---------------------------------------------------------------- forest plot


@dataclass(frozen=True)
class Comparison:
    """One forest row: `arm` minus `reference` (the base, or the arm's matched control) on one
    quantity of the headline task, over seeds (`reporting.seeds`: the quickstart's rule)."""

    arm: str
    reference: str
    section: str  # VS_BASE | VS_CONTROL
    quantity: str  # aggregate.QUANTITIES key
    label: str  # the quantity's label
    seeds: tuple[int, ...]
    diff: SeedDiff

    @property
    def shown(self) -> bool:
        return self.diff.shown


def comparisons(
    plan: Plan,
    measured: Measurements,
    base: RunData | None,
    arms: Mapping[str, Mapping[int, RunData]],
    *,
    n_resamples: int = 1000,
) -> list[Comparison]:
    """Every arm vs the base and vs its matched control, each quantity, Holm over them all."""
    import pandas as pd

    from mbpo_bench.ablation.aggregate import QUANTITIES

    task = measured.headline_task
    if task is None:
        return []
    frame = measured.per_seed[measured.per_seed["task"] == task]
    values: dict[tuple[str, str], dict[int | None, float]] = {}
    for arm, seed_cell, metric, value in zip(
        frame["arm"], frame["seed"], frame["metric"], frame["value"], strict=True
    ):
        if math.isfinite(float(value)):
            seed = None if pd.isna(seed_cell) else int(seed_cell)
            values.setdefault((str(arm), str(metric)), {})[seed] = float(value)
    base_name = _base_name(base)
    pairs: list[tuple[str, str, str]] = []
    if base_name is not None:
        pairs += [(a.name, base_name, VS_BASE) for a in plan.arms]
    controls = matched_controls(plan.arms)
    pairs += [(a.name, c, VS_CONTROL) for a in plan.arms for c in controls.get(a.name, [])]
    out = []
    for arm, ref, section in pairs:
        for q in QUANTITIES:
            mine = values.get((arm, q.key), {})
            theirs = values.get((ref, q.key), {})
            diffs = {
                s: v - (theirs[None] if ref == base_name else theirs[s])
                for s, v in mine.items()
                if s is not None and (None in theirs if ref == base_name else s in theirs)
            }
            if not diffs:
                continue
            strata = _items(task, q.key, measured, arms, base, arm, ref, list(diffs))
            item = None if strata is None else item_ci(strata, len(diffs), n_resamples=n_resamples)
            out.append(Comparison(arm, ref, section, q.key, q.label, tuple(diffs),
                                  seed_diff(list(diffs.values()), item)))  # fmt: skip
    adjusted = with_holm([c.diff for c in out])
    return [dataclasses.replace(c, diff=d) for c, d in zip(out, adjusted, strict=True)]


def _items(
    task: str,
    key: str,
    measured: Measurements,
    arms: Mapping[str, Mapping[int, RunData]],
    base: RunData | None,
    arm: str,
    ref: str,
    seeds: Sequence[int],
) -> list[dict[str, list[float]]] | None:
    """Per task of the headline, doc_id -> arm - ref on that item at each seed; None where a
    run has no samples.jsonl."""
    from mbpo_bench.ablation.aggregate import AVERAGE
    from mbpo_bench.reporting.paired import aligned, meta_is

    spec = ITEMS.get(key)
    if spec is None:
        return None
    tasks = measured.averaged.get(key, []) if task == AVERAGE else [task]
    subset = None if spec.prior is None else meta_is(prior=spec.prior)
    strata = []
    for t in tasks:
        per_doc: dict[str, list[float]] = {}
        for seed in seeds:
            mine = arms.get(arm, {}).get(seed)
            other = base if base is not None and ref == base.name else arms.get(ref, {}).get(seed)
            if mine is None or other is None or not (mine.has_samples and other.has_samples):
                return None
            if spec.metric == "pair_accuracy":  # items are twin pairs (meta.pair_id)
                docs, a, b = _aligned_pairs(mine, other, t)
            else:
                docs, xs, ys = aligned(mine, other, t, spec.probe, spec.metric, subset)
                a, b = xs.tolist(), ys.tolist()
            for doc, x, y in zip(docs, a, b, strict=True):
                per_doc.setdefault(doc, []).append(float(x - y))
        strata.append(per_doc)
    return strata


def _aligned_pairs(a: RunData, b: RunData, task: str) -> tuple[list[str], list[float], list[float]]:
    """(pair ids both runs completed, a's and b's pair accuracy on them): the quickstart's
    `pair_table` (both twins right under the image probe)."""
    from mbpo_bench.quickstart_report import pair_table

    pa, pb = pair_table(a, task), pair_table(b, task)
    docs = sorted(pa.keys() & pb.keys())
    return docs, [pa[d]["pair_accuracy"] for d in docs], [pb[d]["pair_accuracy"] for d in docs]


def forest_rows(found: Sequence[Comparison]) -> list[forest.ForestRow]:
    """The comparisons as forest rows: a panel per quantity, sections vs base / vs control."""
    from mbpo_bench.reporting import forest

    rows = []
    for c in found:
        d = c.diff
        seeds = (
            None if d.low is None or d.high is None else forest.SeedCI(d.low, d.high, len(c.seeds))
        )
        low, high = (None, None) if d.item is None else d.item[:2]
        label = c.arm if c.section == VS_BASE else f"{c.arm} - {c.reference}"
        rows.append(forest.ForestRow(c.section, label, c.label, d.mean, low, high, c.shown, seeds))
    return rows


def forest_section(
    plan: Plan,
    measured: Measurements,
    base: RunData | None,
    arms: Mapping[str, Mapping[int, RunData]],
    report_dir: Path,
) -> list[str]:
    """The forest plot, its caption and the table of every row's numbers and verdict."""
    from mbpo_bench.ablation.aggregate import AVERAGE
    from mbpo_bench.reporting import forest
    from mbpo_bench.reporting.figures import save_png
    from mbpo_bench.reporting.report_figures import image

    found = comparisons(plan, measured, base, arms)
    if not found:
        return []
    rows = forest_rows(found)
    where = "averaged over tasks" if measured.headline_task == AVERAGE else measured.headline_task
    title = (
        f"arm - reference ({where}): mean over seeds, per-item paired 95% CI (thin), "
        "95% t interval over seeds (thick)"
    )
    fig = forest.forest_figure(
        rows, title=title, xlabel="difference (arm - reference)", limit=1.0
    )  # differences of proportions: the axis stops at -+1 (the numbers are in the margin)
    path = save_png(fig, report_dir / f"{STEM}_forest.png")
    lines = [
        image(forest.alt_text(rows), path),
        "",
        f"Each row: arm minus the base or minus its matched control, {where}, mean over the "
        "seeds both have (the tables' numbers); thick bar: 95% t interval over seeds; thin line: "
        "per-item paired bootstrap CI of the seed-averaged per-item differences (ignores seed "
        "variance, not the basis of a verdict). **Shown** (filled) = the interval over seeds "
        f"excludes zero and the Holm-adjusted p over these {len(found)} rows is below 0.05; one "
        "seed shows nothing.",
        "",
        "| comparison | quantity | " + " | ".join(HEADER) + " |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for c in found:
        lines.append(
            f"| {c.arm} - {c.reference} | {c.label} | " + " | ".join(c.diff.cells()) + " |"
        )
    return [*lines, ""]


# ---------------------------------------------------------------- training curves


def curves_section(plan: Plan, report_dir: Path) -> list[str]:
    """One grid of every arm's training curves, mean over its seeds."""
    from mbpo_bench.reporting.plots import mean_curves, read_curves
    from mbpo_bench.reporting.report_figures import curves_figure_md

    by_arm: dict[str, list[Any]] = {}
    for run in plan.runs:
        if (run.train_dir / "metrics.jsonl").is_file():
            by_arm.setdefault(run.arm.name, []).append(read_curves(run.train_dir, run.arm.name))
    if not by_arm:
        return []
    curves = [mean_curves(arm, seeds) for arm, seeds in by_arm.items()]
    n = max(len(s) for s in by_arm.values())
    title = f"arm, mean over its seeds (up to {n}) step by step (faint: raw; solid: moving average)"
    return curves_figure_md(curves, report_dir / f"{STEM}.md", title=title)


def figures_section(
    plan: Plan, measured: Measurements, report_dir: Path, *, curves: bool = True
) -> list[str]:
    """The report's `## Figures`: balance per task group, forest plot, curves grid."""
    base, arms = evaluated(plan)
    lines = ["## Figures", "", "### Modality balance", ""]
    lines += balance_section(base, arms, report_dir) or ["No evaluated run to draw.", ""]
    forest_lines = forest_section(plan, measured, base, arms, report_dir)
    if forest_lines:
        lines += ["### Paired differences", "", *forest_lines]
    if curves:
        grid = curves_section(plan, report_dir)
        if grid:
            lines += ["### Training curves", "", *grid]
    return lines
