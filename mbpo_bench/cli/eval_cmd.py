"""`mbpo-bench eval`: evaluate a checkpoint on tasks with modality-balance probes."""

from __future__ import annotations

from mbpo_bench.cli.common import not_built_yet


def eval_command() -> None:
    """Evaluate a model on tasks with modality-balance probes (not built yet)."""
    raise not_built_yet("mbpo-bench eval", "issue: eval")
