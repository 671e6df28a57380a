"""What every report figure shares: matplotlib (Agg) on demand, the palette, the PNG writer.

Why one module: the three figures of a report (modality balance, forest plot, training curves)
must look like one family (same palette, fonts, sizes) and be written the same way (atomically,
bytes that depend on the data only).

Decisions:
- The Agg backend, imported inside the functions (the CLI imports `mbpo_bench.reporting` only
  inside the report command; matplotlib is a dependency, its absence is a one-line error).
- Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), assigned in a
  fixed order so the same run or probe has the same colour in every figure of a report.
- A figure is built and returned open (tests read its artists: the plotted data, not pixels),
  then `save_png` renders it to memory, closes it and writes it atomically, with the matplotlib
  version stripped from the PNG metadata so the same data gives the same file.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mbpo_bench.errors import UserError
from mbpo_bench.runs import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

P = ParamSpec("P")
R = TypeVar("R")

# Okabe & Ito (2008), without yellow (too light on white) first; black last.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
GREY = "#7F7F7F"
DPI = 110
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
}


def colour(i: int) -> str:
    """The i-th colour of the palette (cycled)."""
    return PALETTE[i % len(PALETTE)]


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend; one-line error without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            "report figures need matplotlib, which is not installed — `pip install matplotlib`"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def styled(build: Callable[P, R]) -> Callable[P, R]:
    """Run a figure builder under the report style (`plt.rc_context`: the caller's rcParams
    are left as they were, e.g. in a notebook that imports `render_report`)."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with pyplot().rc_context(STYLE):
            return build(*args, **kwargs)

    return wrapper


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (no version metadata); the figure is closed afterwards."""
    plt = pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)
    return buffer.getvalue()


def save_png(fig: Figure, path: Path) -> Path:
    """Render `fig` and write it to `path` atomically; return `path`."""
    write_atomic(path, png_bytes(fig))
    return path


def pixel_size(fig: Figure) -> tuple[int, int]:
    """(width, height) in pixels of the PNG `save_png` writes for `fig`."""
    width, height = fig.get_size_inches()
    # matplotlib truncates to whole pixels, rounding up within 1e-8 (get_width_height)
    return int(width * DPI + 1e-8), int(height * DPI + 1e-8)


def safe_name(name: str) -> str:
    """A file-name-safe form of a label (letters, digits, '-', '_')."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
