"""Cell formatting and DataFrame -> markdown.

Why by hand: pandas' `DataFrame.to_markdown` needs `tabulate`, which is not a dependency (and is
not on the GPU image); a pipe table is ten lines. Cells are strings already formatted here, so
the markdown is byte-stable for golden tests.
"""

from __future__ import annotations

import pandas as pd

MISSING = "missing"  # the run has no result for this task (never shown as 0)
ABSENT = "—"  # the run has the task but not this probe or metric
UNDEFINED = "n/a"  # defined nowhere (0/0, e.g. precision with no predicted yes)


def fmt_value(value: float | None, digits: int, *, signed: bool = False) -> str:
    if value is None:
        return UNDEFINED
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_estimate(
    value: float | None,
    low: float | None,
    high: float | None,
    digits: int,
    *,
    scale: float = 1.0,
    signed: bool = False,
) -> str:
    """'0.812 [0.780, 0.843]' (the interval only where there is one)."""
    if value is None:
        return UNDEFINED
    text = fmt_value(value * scale, digits, signed=signed)
    if low is None or high is None:
        return text
    lo, hi = (
        fmt_value(low * scale, digits, signed=signed),
        fmt_value(high * scale, digits, signed=signed),
    )
    return f"{text} [{lo}, {hi}]"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, *, index: bool = True) -> str:
    """A GitHub pipe table of `df` (index as the first column when `index`)."""
    headers = ([str(df.index.name or "")] if index else []) + [str(c) for c in df.columns]
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for label, row in df.iterrows():
        cells = ([label] if index else []) + list(row)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
