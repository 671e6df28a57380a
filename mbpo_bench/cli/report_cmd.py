"""`mbpo-bench report`: compare checkpoints from their results files."""

from __future__ import annotations

from mbpo_bench.cli.common import not_built_yet


def report_command() -> None:
    """Render a markdown report comparing runs (not built yet)."""
    raise not_built_yet("mbpo-bench report", "issue: reports")
