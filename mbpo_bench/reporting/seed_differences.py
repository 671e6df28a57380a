"""Paired differences against the baseline over seeds, for arms run at several seeds.

When a report's runs include several seeds of one arm (`render.seed_groups`: runs sharing a
name, trained at distinct recorded seeds), each table row of the per-run difference tables
(`differences.paired_rows`) is also taken over the seeds: the mean of the per-seed differences
with a t interval over seeds and Holm p (over every such row of the report), and the per-item
paired CI of the seed-averaged per-item differences (`reporting.seeds`, the quickstart
findings' statistics). These rows are the text the forest plot's seed columns follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.differences import paired_rows, quantities
from mbpo_bench.reporting.loading import RunData
from mbpo_bench.reporting.paired import aligned, seed_for
from mbpo_bench.reporting.seeds import HEADER, SeedDiff, item_ci, seed_diff, with_holm


@dataclass(frozen=True)
class SeedRow:
    arm: str
    task: str  # as in the tables ("† "-flagged)
    quantity: str
    seeds: tuple[int, ...]
    diff: SeedDiff


def seed_rows(
    groups: Mapping[str, Sequence[RunData]],
    base: RunData,
    config: ReportConfig,
    flagged: Sequence[str] = (),
) -> list[SeedRow]:
    """Every (task, quantity) row every seed of an arm has, over its seeds; Holm over all."""
    out = []
    for arm, runs in groups.items():
        runs = [r for r in runs if r is not base]
        if len(runs) < 2:
            continue
        per_run = [{(d.task, d.quantity): d for d in paired_rows(r, base, config, flagged)[0]}
                   for r in runs]  # fmt: skip
        for key in per_run[0]:
            found = [rows.get(key) for rows in per_run]
            diffs = [d.diff for d in found if d is not None and d.diff is not None]
            if len(diffs) < len(runs):
                continue
            task, quantity = key
            item = _item_ci(runs, base, task.removesuffix(" †"), quantity, config)
            seeds = tuple(r.seed if r.seed is not None else i for i, r in enumerate(runs))
            out.append(SeedRow(arm, task, quantity, seeds, seed_diff(diffs, item)))
    adjusted = with_holm([r.diff for r in out])
    return [replace(r, diff=d) for r, d in zip(out, adjusted, strict=True)]


def _item_ci(
    runs: Sequence[RunData], base: RunData, task: str, quantity: str, config: ReportConfig
) -> tuple[float, float, int] | None:
    """Per-item CI of the seed-averaged differences, for rows read per item (not the gap)."""
    spec = next((q for q in quantities(runs[0], base, task) if q[0] == quantity), None)
    if spec is None:
        return None
    _, probe, metric, subset = spec
    per_doc: dict[str, list[float]] = {}
    for run in runs:
        docs, a, b = aligned(run, base, task, probe, metric, subset)
        for doc, x, y in zip(docs, a, b, strict=True):
            per_doc.setdefault(doc, []).append(float(x - y))
    return item_ci(
        [per_doc], len(runs), n_resamples=config.n_resamples, confidence=config.confidence,
        seed=seed_for(config, "seeds", task, quantity),
    )  # fmt: skip


def seed_tables(rows: Sequence[SeedRow], base: str) -> list[str]:
    """One markdown table per arm: its rows over seeds with their verdicts."""
    lines: list[str] = []
    for arm in dict.fromkeys(r.arm for r in rows):
        mine = [r for r in rows if r.arm == arm]
        seeds = ", ".join(map(str, mine[0].seeds))
        lines += [
            f"### {arm} over {len(mine[0].seeds)} seeds ({seeds}) vs {base}",
            "",
            "| task | quantity | " + " | ".join(HEADER) + " |",
            "|---|---|---:|---:|---|---:|---|",
            *(f"| {r.task} | {r.quantity} | " + " | ".join(r.diff.cells()) + " |" for r in mine),
            "",
        ]
    return lines
