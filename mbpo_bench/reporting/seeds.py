"""Differences over seeds: the rule of the quickstart's findings, for any report.

Seeds are the unit of inference. A difference measured at several seeds (per seed: run minus
its reference on the same items) gets its mean over seeds with a t interval over seeds and the
one-sample t p-value (`metrics.across_seeds`), Holm-adjusted over the rows it is reported with
(`metrics.holm`); beside it, the per-item paired bootstrap CI of the seed-averaged per-item
differences (`item_ci`), which ignores seed variance and is never the basis of a verdict.
A row is **shown** when its interval over seeds excludes zero and its Holm p is below 0.05;
one seed shows nothing, and neither do identical per-seed values (no spread, no test: seeds
that repeat one measurement, like a base shared by every seed, are not independent evidence).

Used by the ablation report (every arm vs the base and its matched control) and by
`mbpo-bench report` when runs of one name carry several training seeds (`training_seed`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_bench.metrics import RatioMetric, across_seeds, holm, percentile_interval, resample_counts

ALPHA = 0.05


@dataclass(frozen=True)
class SeedDiff:
    """A difference over seeds: per-seed values, their mean, t interval, p, Holm p, item CI."""

    per_seed: tuple[float, ...]
    mean: float
    low: float | None
    high: float | None
    p: float | None
    item: tuple[float, float, int] | None = None  # per-item paired CI (low, high, n items)
    p_holm: float | None = None

    @property
    def shown(self) -> bool:
        if self.low is None or self.high is None or self.p_holm is None:
            return False
        return self.p_holm < ALPHA and (self.low > 0 or self.high < 0)

    def verdict(self) -> str:
        if len(self.per_seed) < 2:
            return "not shown (one seed)"
        if self.p is None:
            return "not shown (identical at every seed: no spread to test)"
        if not self.shown:
            return "not shown"
        return "**shown** (a gain)" if self.mean > 0 else "**shown** (a loss)"

    def cells(self) -> list[str]:
        """Table cells: mean [t interval], Holm p, per seed, per-item CI (n), verdict."""
        item = "n/a" if self.item is None else (
            f"[{self.item[0]:+.3f}, {self.item[1]:+.3f}] ({self.item[2]})"
        )  # fmt: skip
        return [
            f"{_signed(self.mean)} [{_signed(self.low)}, {_signed(self.high)}]",
            _plain(self.p_holm),
            ", ".join(_signed(v) for v in self.per_seed),
            item,
            self.verdict(),
        ]


HEADER = ["mean over seeds [t interval]", "Holm p", "per seed", "per-item CI (n)", "verdict"]


def seed_diff(per_seed: Sequence[float], item: tuple[float, float, int] | None = None) -> SeedDiff:
    """The over-seeds statistics of per-seed differences (Holm p left to `with_holm`)."""
    est = across_seeds(list(per_seed))
    return SeedDiff(tuple(per_seed), est.mean, est.low, est.high, est.p_value, item)


def with_holm(diffs: Sequence[SeedDiff]) -> list[SeedDiff]:
    """The diffs with their Holm-adjusted p over the whole list."""
    adjusted = holm([d.p for d in diffs])
    return [dataclasses.replace(d, p_holm=a) for d, a in zip(diffs, adjusted, strict=True)]


def item_ci(
    strata: Sequence[Mapping[str, Sequence[float]]],
    n_seeds: int,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, int] | None:
    """Per-item paired bootstrap CI of the seed-averaged per-item differences.

    `strata`: per task, doc_id -> that item's difference at each seed; only items present at
    all `n_seeds` seeds enter. Items are resampled within each task and the tasks' means
    averaged, as the tables average over tasks. None when a task has no such item.
    """
    stacks: list[np.ndarray] = []
    n = 0
    for i, per_doc in enumerate(strata):
        d = np.array([np.mean(v) for _, v in sorted(per_doc.items()) if len(v) == n_seeds])
        if not d.size:
            return None
        counts = resample_counts(d.size, n_resamples, seed=seed + i)
        stacks.append(RatioMetric.mean(d).resampled(counts))
        n += int(d.size)
    if not stacks:
        return None
    low, high = percentile_interval(np.mean(np.stack(stacks), axis=0), confidence)
    return None if low is None or high is None else (low, high, n)


def training_seed(config: Mapping[str, Any]) -> int | None:
    """The training seed of the checkpoint an evaluation scored (its results' `config`).

    An evaluation records the `model` (and `adapter`) it loaded; a checkpoint that
    `mbpo-bench train --output DIR` made lies at DIR (a run folder), DIR/final/model or
    DIR/final/adapter, and DIR/config.yaml records `runtime.seed`. None for a checkpoint not
    trained here (a base model) or a run folder that is no longer where it was.
    """
    import yaml

    for key in ("adapter", "model"):
        value = config.get(key)
        if not value:
            continue
        path = Path(str(value))
        for folder in (path, path.parent, path.parent.parent):
            cfg = folder / "config.yaml"
            if (folder / "final").is_dir() and cfg.is_file():
                try:
                    data = yaml.safe_load(cfg.read_text())
                except (OSError, yaml.YAMLError):
                    return None
                seed = ((data or {}).get("runtime") or {}).get("seed")
                return seed if isinstance(seed, int) else None
    return None


def _signed(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:+.3f}"


def _plain(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"
