"""Per-item values from `samples.jsonl` and paired comparisons between two runs.

Pairing is by (task, probe, doc_id): only items that BOTH runs scored enter a difference, so a
run that skipped an item never changes the other run's side. The statistics come from
`mbpo_bench.metrics` (percentile paired bootstrap, seeded); nothing here re-implements them.

Per-item quantities (`item_value`):
- `accuracy` (or `correct`): 1.0 if the verdict was correct, else 0.0 (no answer counts as wrong);
- `score`: the verifier's score in [0, 1];
- `yes` / `predicted_yes`: 1.0 where the parsed answer is "yes" (the predicted-yes ratio);
- `iig`: the row's Image Information Gain (rows of the `iig` probe);
- any other name: that numeric column of the row.
Visual reliance per item is correct(image) - correct(probe) on items scored under both probes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_bench.errors import UserError
from mbpo_bench.metrics import (
    Estimate,
    FloatArray,
    PairedDifference,
    bootstrap_ci,
    paired_bootstrap,
    percentile_interval,
)
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.loading import RunData, load_run

Subset = Callable[[dict[str, Any]], bool]


def item_value(row: dict[str, Any], metric: str) -> float | None:
    """The per-item value of `metric` in a sample row; None where it has none."""
    if metric in ("accuracy", "correct"):
        if "correct" in row and row["correct"] is not None:
            return float(bool(row["correct"]))
        score = row.get("score")
        return None if score is None else float(float(score) >= 1.0)
    if metric in ("yes", "predicted_yes", "yes_ratio", "predicted_yes_ratio"):
        parsed = row.get("parsed")
        return float(isinstance(parsed, str) and parsed.strip().lower() == "yes")
    if metric in ("iig", "iig_mean"):
        value = row.get("iig")
        return None if value is None else float(value)
    value = row.get(metric)
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


def meta_is(**expected: Any) -> Subset:
    """A subset filter on the item's `meta`: `meta_is(prior="counter")`."""

    def keep(row: dict[str, Any]) -> bool:
        meta = row.get("meta") or {}
        return all(meta.get(k) == v for k, v in expected.items())

    keep.__name__ = ", ".join(f"{k}={v}" for k, v in sorted(expected.items()))
    return keep


def _as_run(run: Path | RunData) -> RunData:
    return run if isinstance(run, RunData) else load_run(Path(run))


def _require(run: RunData, task: str, probe: str) -> dict[str, dict[str, Any]]:
    if not run.has_samples:
        raise UserError(
            f"run folder {run.path} has no samples.jsonl — re-run `mbpo-bench eval --output "
            f"{run.path}` (paired comparisons need per-sample results)"
        )
    rows = run.rows(task, probe)
    if not rows:
        raise UserError(
            f"run folder {run.path} has no samples of task '{task}' under probe '{probe}' — "
            "evaluate that task and probe in this run"
        )
    return rows


def seed_for(config: ReportConfig, *parts: str) -> int:
    """A per-comparison seed that is the same on every machine (crc32, not hash())."""
    return (config.seed + zlib.crc32("/".join(parts).encode())) % 2**32


def item_values(
    run: RunData, task: str, probe: str, metric: str, subset: Subset | None = None
) -> dict[str, float]:
    """doc_id -> per-item value for one run, task and probe (items without a value dropped).

    For `visual_reliance_<other>` the value is correct(image) - correct(<other>).
    """
    if metric.startswith("visual_reliance_"):
        other = metric.removeprefix("visual_reliance_")
        img = item_values(run, task, "image", "accuracy", subset)
        oth = item_values(run, task, other, "accuracy", subset)
        return {d: img[d] - oth[d] for d in img.keys() & oth.keys()}
    out = {}
    for doc_id, row in run.rows(task, probe).items():
        if subset is not None and not subset(row):
            continue
        value = item_value(row, metric)
        if value is not None:
            out[doc_id] = value
    return out


def paired_difference(
    run_a: RunData,
    run_b: RunData,
    task: str,
    probe: str,
    metric: str = "accuracy",
    subset: Subset | None = None,
    config: ReportConfig | None = None,
) -> tuple[PairedDifference, float | None, float | None]:
    """(a - b on paired items, mean of a, mean of b) over the doc_ids both runs have."""
    config = config or ReportConfig()
    docs, arr_a, arr_b = aligned(run_a, run_b, task, probe, metric, subset)
    diff = paired_bootstrap(
        arr_a,
        arr_b,
        n_resamples=config.n_resamples,
        confidence=config.confidence,
        seed=seed_for(config, task, probe, metric),
    )
    mean_a = float(arr_a.mean()) if docs else None
    mean_b = float(arr_b.mean()) if docs else None
    return diff, mean_a, mean_b


def compare(
    run_a: Path | RunData,
    run_b: Path | RunData,
    task: str,
    probe: str,
    metric: str = "accuracy",
    subset: Subset | None = None,
    config: ReportConfig | None = None,
) -> tuple[float | None, float | None, float | None, int]:
    """(diff, ci_low, ci_high, n): metric(a) - metric(b) on the items both runs scored.

    `subset` filters items by their sample row (e.g. `meta_is(prior="counter")`); the CI is the
    paired bootstrap's. n = 0 (and None values) when no item is in both runs and the subset.
    """
    a, b = _as_run(run_a), _as_run(run_b)
    _require(a, task, "image" if metric.startswith("visual_reliance_") else probe)
    _require(b, task, "image" if metric.startswith("visual_reliance_") else probe)
    diff, _, _ = paired_difference(a, b, task, probe, metric, subset, config)
    return diff.diff, diff.ci_low, diff.ci_high, diff.n


def subset_metric(
    run: Path | RunData,
    task: str,
    probe: str = "image",
    metric: str = "accuracy",
    subset: Subset | None = None,
    config: ReportConfig | None = None,
) -> Estimate:
    """Mean of a per-item metric over the items in `subset`, with its bootstrap CI.

    `subset_metric(run, "mbpo_embedded_colour", subset=meta_is(prior="counter"))` is the
    counter-prior accuracy with the image.
    """
    config = config or ReportConfig()
    data = _as_run(run)
    _require(data, task, "image" if metric.startswith("visual_reliance_") else probe)
    values = item_values(data, task, probe, metric, subset)
    docs = sorted(values)
    return bootstrap_ci(
        [values[d] for d in docs],
        n_resamples=config.n_resamples,
        confidence=config.confidence,
        seed=seed_for(config, task, probe, metric),
    )


def meta_values(run: RunData, task: str, key: str, probe: str = "image") -> list[Any]:
    """The distinct values of `meta[key]` among a task's items, sorted by their text."""
    found = {(row.get("meta") or {}).get(key) for row in run.rows(task, probe).values()}
    return sorted((v for v in found if v is not None), key=str)


def aligned(
    run_a: RunData,
    run_b: RunData,
    task: str,
    probe: str,
    metric: str,
    subset: Subset | None = None,
) -> tuple[list[str], FloatArray, FloatArray]:
    """(doc_ids both runs have a value for, sorted; a's values; b's values), aligned."""
    a = item_values(run_a, task, probe, metric, subset)
    b = item_values(run_b, task, probe, metric, subset)
    docs = sorted(a.keys() & b.keys())
    return (
        docs,
        np.array([a[d] for d in docs], dtype=np.float64),
        np.array([b[d] for d in docs], dtype=np.float64),
    )


# One percentile interval for the whole package (mbpo_bench.metrics); the reports call it by
# this name.
percentile_ci = percentile_interval


def excludes_zero(low: float | None, high: float | None) -> bool:
    return low is not None and high is not None and (low > 0 or high < 0)
