"""The benchmark-v2 quickstart report's findings (per-item CIs, one seed): kept to re-derive
the v2 reports that reports/gpu/ held until its v3 regeneration (`git show 37dac6e:reports/gpu/`;
their seed table came from benchmarks/seed_study.py, removed since). No CLI path calls it; only
tests do. New reports use `quickstart_report` (twin pairs, seeds as the unit of inference).

Original description: findings computed from the eval runs, then `render_report`'s tables.

Each finding pools the three embedded tasks (image probe) and states a paired 95% bootstrap CI
over the same items. A claim is marked "shown" only when its CI says so (a gain: the CI is above
zero; "no loss": the CI is not entirely below zero), so the findings can never disagree with
the tables under them. The paired findings are also drawn as a forest plot
(`<report stem>_findings.png`) whose marks come from the same `shown` as the text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mbpo_bench.errors import UserError
from mbpo_bench.metrics import bootstrap_ci, paired_bootstrap
from mbpo_bench.quickstart_report import Diff  # the same paired difference, one class
from mbpo_bench.reporting import forest, meta_is
from mbpo_bench.reporting.figures import save_png
from mbpo_bench.reporting.loading import RunData
from mbpo_bench.reporting.paired import aligned, item_values
from mbpo_bench.reporting.report_figures import image

if TYPE_CHECKING:
    pass

Subset = Callable[[dict[str, Any]], bool] | None
TASKS = ("mbpo_embedded_existence", "mbpo_embedded_color", "mbpo_embedded_count")


def pooled_diff(a: RunData, b: RunData, metric: str, subset: Subset, seed: int) -> Diff:
    """a - b over the items of all embedded tasks both runs scored, paired bootstrap CI."""
    xs, ys = [], []
    for task in TASKS:
        _, arr_a, arr_b = aligned(a, b, task, "image", metric, subset)
        xs.append(arr_a)
        ys.append(arr_b)
    x, y = np.concatenate(xs), np.concatenate(ys)
    d = paired_bootstrap(x, y, n_resamples=2000, seed=seed)
    if d.diff is None or d.ci_low is None or d.ci_high is None:
        return Diff(float("nan"), float("nan"), float("nan"), 0)
    return Diff(d.diff, d.ci_low, d.ci_high, d.n)


def pooled_mean(run: RunData, subset: Subset, seed: int) -> tuple[float, float, float, int]:
    values = [
        v
        for task in TASKS
        for _, v in sorted(item_values(run, task, "image", "accuracy", subset).items())
    ]
    est = bootstrap_ci(values, n_resamples=2000, seed=seed)
    if est.value is None or est.ci_low is None or est.ci_high is None:
        raise UserError(f"run {run.name} has no scored items in this subset — rerun its evaluation")
    return est.value, est.ci_low, est.ci_high, len(values)


def shown(diff: Diff, want: str) -> bool:
    """Whether the CI supports the claim: a "gain" needs the whole CI above zero; "no loss"
    needs it not entirely below zero. The findings text and the findings figure both ask this."""
    return diff.low > 0 if want == "gain" else diff.high >= 0


def _verdict(diff: Diff, want: str) -> str:
    if shown(diff, want):
        return "**shown**"
    return "**not shown**" if want == "gain" else "**not shown** (a loss: the CI is below zero)"


@dataclass(frozen=True)
class Finding:
    """One paired finding: MBPO vs `against` on `what`, the claim `want` ("gain" / "no loss")."""

    against: str
    what: str
    diff: Diff
    want: str

    @property
    def shown(self) -> bool:
        return shown(self.diff, self.want)


COMPARISONS = (("the base", "base"), ("the control (continued SFT, same time)", "control"))


def paired_findings(base: RunData, mbpo: RunData, control: RunData) -> list[Finding]:
    """Findings 2.. of the report: MBPO against the base and the control, paired."""
    counter, consistent = meta_is(prior="counter"), meta_is(prior="consistent")
    rows = [
        ("counter-prior accuracy", "accuracy", counter, "gain"),
        ("visual reliance (image - blind)", "visual_reliance_blind", None, "gain"),
        ("visual reliance (image - mismatched)", "visual_reliance_mismatched", None, "gain"),
        ("prior-consistent accuracy (no loss)", "accuracy", consistent, "no loss"),
    ]
    out, n = [], 2
    for (label, _), other in zip(COMPARISONS, (base, control), strict=True):
        for i, (what, metric, subset, want) in enumerate(rows):
            d = pooled_diff(mbpo, other, metric, subset, seed=10 * n + i)
            out.append(Finding(label, what, d, want))
            n += 1
    return out


def findings(
    base: RunData, mbpo: RunData, control: RunData, paired: list[Finding] | None = None
) -> list[str]:
    """The findings section's lines (`paired`: `paired_findings(...)` when already computed)."""
    counter, consistent = meta_is(prior="counter"), meta_is(prior="consistent")
    c_acc = pooled_mean(base, consistent, 1)
    k_acc = pooled_mean(base, counter, 2)
    bias = c_acc[1] > k_acc[2]
    lines = [
        "## Findings (computed from the tables below)",
        "",
        "Pooled over the three embedded tasks, image probe; differences are paired over the same",
        "items with 95% bootstrap CIs. 'Shown' means the CI says so.",
        "",
        f"1. The base leans on the language prior: accuracy {c_acc[0]:.3f} "
        f"[{c_acc[1]:.3f}, {c_acc[2]:.3f}] on prior-consistent items vs {k_acc[0]:.3f} "
        f"[{k_acc[1]:.3f}, {k_acc[2]:.3f}] on counter-prior items — "
        + ("**shown** (the CIs do not overlap)." if bias else "**not shown** (the CIs overlap)."),
    ]
    paired = paired_findings(base, mbpo, control) if paired is None else paired
    for n, f in enumerate(paired, start=2):
        lines.append(
            f"{n}. MBPO vs {f.against}, {f.what}: {f.diff.text()} — {_verdict(f.diff, f.want)}."
        )
    return lines


def finding_rows(paired: list[Finding]) -> list[forest.ForestRow]:
    """The paired findings as forest rows; each row's mark is its finding's `shown`."""
    names = dict(COMPARISONS)
    column = f"findings 2-{len(paired) + 1}"
    return [
        forest.ForestRow(
            f"MBPO vs {names[f.against]}",
            f.what,
            column,
            f.diff.diff,
            f.diff.low,
            f.diff.high,
            f.shown,
        )
        for f in paired
        if f.diff.n
    ]


def findings_figure(paired: list[Finding], path: Path) -> list[str]:
    """The paired findings as a forest plot written to `path`, with its markdown."""
    rows = finding_rows(paired)
    title = "MBPO - other on paired items, pooled over the embedded tasks (95% bootstrap CI)"
    save_png(forest.forest_figure(rows, title=title), path)
    return [image(forest.alt_text(rows), path), ""]
