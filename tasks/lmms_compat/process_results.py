"""Task `process_results` functions that add lmms-eval's verdict to our per-sample row.

A task YAML names one of these instead of `mbpo_bench.tasks.common.process_results`
(`process_results: !function mbpo_bench.tasks.lmms_compat.process_results.pope`); the row is
the verifier's row plus `row["lmms"]` from the task's rule in `rules.py`. Another task reuses a
rule, or brings its own: `with_lmms(my_rule)` in any importable module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mbpo_bench.tasks import common
from mbpo_bench.tasks.lmms_compat import rules

Rule = Callable[[str, dict[str, Any]], dict[str, Any]]
ProcessResults = Callable[[dict[str, Any], Sequence[str]], dict[str, dict[str, Any]]]


def with_lmms(rule: Rule) -> ProcessResults:
    """Our `process_results`, with `rule`'s lmms-eval verdict stored as `row["lmms"]`."""

    def process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, dict[str, Any]]:
        scored = common.process_results(doc, results)
        response = str(results[0]) if results else ""
        verdict = rule(response, doc)
        for row in {id(r): r for r in scored.values()}.values():  # one shared row object
            row["lmms"] = verdict
        return scored

    process_results.__doc__ = f"Our row plus lmms-eval's verdict by `rules.{rule.__name__}`."
    process_results.lmms_rule = rule  # type: ignore[attr-defined]  # `tasks verify` reads it
    return process_results


def lmms_rule_of(process_results_ref: str | None) -> Rule | None:
    """The lmms-eval rule behind a task's `process_results` reference, if it has one."""
    if not process_results_ref:
        return None
    import importlib

    module, _, name = str(process_results_ref).rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return getattr(fn, "lmms_rule", None)


pope = with_lmms(rules.pope)
mme = with_lmms(rules.mme)
ai2d = with_lmms(rules.ai2d)
mmstar = with_lmms(rules.mmstar)
mmvp = with_lmms(rules.mmvp)
hallusionbench = with_lmms(rules.hallusionbench)
realworldqa = with_lmms(rules.realworldqa)
