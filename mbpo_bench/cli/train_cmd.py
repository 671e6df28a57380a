"""`mbpo-bench train METHOD`: SFT, DPO, GRPO and MBPO training plugins."""

from __future__ import annotations

from mbpo_bench.cli.common import not_built_yet


def train_command() -> None:
    """Train with sft, dpo, grpo or mbpo (not built yet)."""
    raise not_built_yet("mbpo-bench train", "issue: trainers")
