"""`mbpo-bench quickstart`: the whole pipeline offline on the embedded benchmark."""

from __future__ import annotations

from mbpo_bench.cli.common import not_built_yet


def quickstart_command() -> None:
    """Build a tiny model, make it biased, run MBPO, evaluate, report (not built yet)."""
    raise not_built_yet("mbpo-bench quickstart", "issue: reports and quickstart")
