"""Training curves from the training runs' `metrics.jsonl`, as PNGs beside the report.

One PNG per numeric metric (loss, reward_mean, ...), every training run overlaid, x = `step`
(the row number where a row has none), so runs are compared on the same axes. matplotlib with
the Agg backend (no display); the PNG is rendered to memory and written atomically, with its
metadata stripped of the matplotlib version so re-rendering the same data gives the same file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbpo_bench.errors import UserError
from mbpo_bench.runs import read_jsonl, write_atomic

SKIP_KEYS = frozenset({"step", "epoch", "time", "wall_time", "timestamp", "elapsed_s"})


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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def plot_curves(curves: Sequence[Curves], out_dir: Path, stem: str) -> list[tuple[str, Path]]:
    """Write `<stem>_<metric>.png` per metric into `out_dir`; return (metric, path) pairs."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            "training curves need matplotlib, which is not installed — `pip install matplotlib` "
            "or leave out --training-run"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({m for c in curves for m in c.series})
    written = []
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        try:
            for c in curves:
                if metric in c.series:
                    xs, ys = c.series[metric]
                    ax.plot(xs, ys, label=c.name, linewidth=1.2)
            ax.set_xlabel("step")
            ax.set_ylabel(metric)
            ax.set_title(metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", metadata={"Software": None})
        finally:
            plt.close(fig)
        path = out_dir / f"{stem}_{_safe(metric)}.png"
        write_atomic(path, buffer.getvalue())
        written.append((metric, path))
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
