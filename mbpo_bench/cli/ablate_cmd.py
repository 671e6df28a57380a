"""`mbpo-bench ablate`: the factorial ablation of method.md."""

from __future__ import annotations

from mbpo_bench.cli.common import not_built_yet


def ablate_command() -> None:
    """Run the factorial ablation (not built yet)."""
    raise not_built_yet("mbpo-bench ablate", "issue: reports and quickstart")
