"""`mbpo-bench mine`: adversarial hard-negative mining alone."""

from __future__ import annotations

from mbpo_bench.cli.common import not_built_yet


def mine_command() -> None:
    """Mine adversarial hard negatives into a preference dataset (not built yet)."""
    raise not_built_yet("mbpo-bench mine", "issue: trainers")
