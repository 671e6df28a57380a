"""Paired comparison of two evaluation runs on the same items (checkpoint A vs checkpoint B).

Reports must attach a paired-bootstrap CI to every difference between checkpoints (method.md).
The pairing key is (task, probe, doc_id) from each run's samples.jsonl; only items present in
both runs count, and the number paired is reported so a silent mismatch (different --limit,
skipped items) is visible. The per-sample value is a row field: `correct` (accuracy) by default,
`iig` for the IIG probe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.store import SampleStore
from mbpo_bench.metrics import DEFAULT_RESAMPLES, PairedDifference, paired_bootstrap


def paired_values(
    run_a: Path, run_b: Path, task: str, probe: str = "image", field: str = "correct"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Doc ids both runs scored under (task, probe) and their aligned per-sample values."""

    def values(run: Path) -> dict[str, float]:
        rows = SampleStore(Path(run)).rows()
        out = {}
        for r in rows:
            if r["task"] == task and r["probe"] == probe:
                if field not in r or r[field] is None:
                    raise UserError(
                        f"{run}: rows of {task}/{probe} have no '{field}' — pick another field"
                    )
                out[str(r["doc_id"])] = float(r[field])
        return out

    va, vb = values(run_a), values(run_b)
    common = sorted(set(va) & set(vb))
    if not common:
        raise UserError(
            f"runs {run_a} and {run_b} share no items of task {task}, probe {probe} — "
            "evaluate both on the same tasks and probes"
        )
    return common, np.array([va[d] for d in common]), np.array([vb[d] for d in common])


def compare_runs(
    run_a: Path,
    run_b: Path,
    task: str,
    probe: str = "image",
    field: str = "correct",
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """mean(A) - mean(B) over the shared items, with its paired-bootstrap 95% CI and p-value."""
    _, a, b = paired_values(run_a, run_b, task, probe, field)
    return paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
