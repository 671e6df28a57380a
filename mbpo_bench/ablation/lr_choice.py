"""Learning rates chosen on `dev`: an ablation with an lr grid (`lrs`) writes `lr_choice.json`,
and a later ablation with `lr_from` trains each tuned arm at its chosen lr.

Why a file between two ablations rather than one command that does both: the test ablation
must not start before the choice exists, and the file is the record of what was chosen, on
which split, from which scores, so the test report can state it (and refuse a choice made on
`test`).

The choice: per arm, the grid value with the highest mean over seeds of the pair accuracy (both
twins right) averaged over the tasks that define it; the smaller lr on a tie. Pair accuracy is
the benchmark's headline and cannot rise by moving text-only answers, so the choice does not
reward forgetting the prior-consistent answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError
from mbpo_bench.runs import write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

# `plan` arguments are `ablation.plan.Plan`s, typed Any: plan.py reads the choice (read_choice),
# so naming Plan here would be an import cycle (tests/test_foundation_imports.py)
Plan = Any

FILE = "lr_choice.json"
METRIC = "pair_accuracy"


@dataclass
class Choice:
    lr: float
    scores: dict[str, float]  # str(lr) -> mean dev pair accuracy over seeds
    seeds: int  # seeds that entered the chosen lr's mean
    split: str
    source: str  # the dev ablation's folder


def choose(plan: Plan, per_seed: pd.DataFrame, split: str) -> dict[str, Choice]:
    """Per tuned arm (name without `@lr...`): the chosen lr, from the evaluated runs."""
    from mbpo_bench.ablation.aggregate import AVERAGE

    rows = per_seed[(per_seed["task"] == AVERAGE) & (per_seed["metric"] == METRIC)]
    rows = rows.dropna(subset=["value"])
    grid: dict[str, list[tuple[float, float, int]]] = {}  # arm -> (lr, mean score, seeds)
    for arm in plan.arms:
        values = rows[rows["arm"] == arm.name]["value"]
        if arm.lr is not None and "@lr" in arm.name and not values.empty:
            base = arm.name.split("@lr")[0]
            grid.setdefault(base, []).append((arm.lr, float(values.mean()), len(values)))
    out: dict[str, Choice] = {}
    for base, points in grid.items():
        lr, _, n = max(points, key=lambda p: (p[1], -p[0]))
        scores = {repr(p[0]): p[1] for p in points}
        out[base] = Choice(lr, scores, n, split, str(plan.output))
    return out


def write_choice(plan: Plan, per_seed: pd.DataFrame, split: str) -> dict[str, Choice]:
    """Write `lr_choice.json` beside the report (only for an ablation with an lr grid)."""
    if not plan.config.lrs:
        return {}
    chosen = choose(plan, per_seed, split)
    write_json_atomic(plan.output / FILE, {k: asdict(v) for k, v in chosen.items()})
    return chosen


def read_choice(folder: Path) -> dict[str, Choice]:
    """The choices of a finished dev ablation; a choice made on another split is refused."""
    path = folder / FILE
    if not path.is_file():
        raise UserError(
            f"lr_from: {path} does not exist — run the dev ablation with lrs=[...] and "
            "eval:split=dev into that folder first"
        )
    data = json.loads(path.read_text())
    chosen = {name: Choice(**value) for name, value in data.items()}
    bad = sorted({c.split for c in chosen.values()} - {"dev"})
    if bad:
        raise UserError(
            f"lr_from: {path} chose on split {', '.join(bad)} — choose on dev (eval:split=dev)"
        )
    if not chosen:
        raise UserError(f"lr_from: {path} holds no choice — no run of that ablation finished")
    return chosen


def choice_lines(plan: Plan, chosen: dict[str, Choice], split: str) -> list[str]:
    """The report's lines on learning rates: the grid's scores (dev), or the choice used."""
    cfg = plan.config
    if cfg.lrs:
        lines = [
            "## Learning rates on the grid",
            "",
            f"Grid {', '.join(f'{lr:g}' for lr in cfg.lrs)} for every arm, evaluated on split "
            f"**{split}**; choice per arm = the highest mean over seeds of pair accuracy "
            f"(averaged over tasks), the smaller lr on a tie; written to `{FILE}` for "
            "`lr_from`.",
            "",
        ]
        for name, c in chosen.items():
            grid = ", ".join(f"{float(k):g}: {v:.3f}" for k, v in c.scores.items())
            lines.append(f"- `{name}`: chosen lr {c.lr:g} ({grid})")
        return [*lines, ""] if chosen else [*lines, "- no run finished: nothing chosen", ""]
    if not cfg.lr_from:
        return []
    got = read_choice(Path(cfg.lr_from))
    lines = [
        "## Learning rates chosen on dev",
        "",
        f"Each tuned arm trains at the lr chosen on split **dev** by the ablation in "
        f"`{cfg.lr_from}` (its `{FILE}`: highest mean dev pair accuracy over seeds, over the "
        "grid); this ablation's own split was not used to choose. Arms not tuned there keep "
        "their default lr (MBPO's for the matched controls).",
        "",
    ]
    for arm in plan.arms:
        if arm.name in got:
            c = got[arm.name]
            grid = ", ".join(f"{float(k):g}: {v:.3f}" for k, v in c.scores.items())
            lines.append(f"- `{arm.name}`: lr {c.lr:g} (dev pair accuracy {grid}; {c.seeds} seeds)")
    return [*lines, ""]
