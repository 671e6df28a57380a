"""Helpers shared by command modules."""

from __future__ import annotations

from mbpo_bench.errors import UserError


def not_built_yet(what: str, issue: str) -> UserError:
    """The honest answer of a command whose capability has not landed yet (exit code 2)."""
    return UserError(f"'{what}' is not built yet ({issue}); nothing was run", exit_code=2)
