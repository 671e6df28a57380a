"""`mbpo-bench models`: build tiny offline models and list families."""

from __future__ import annotations

import typer

from mbpo_bench.cli.common import not_built_yet

app = typer.Typer(help="Build tiny offline models; list families and sizes.", no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """List model families and sizes (not built yet)."""
    raise not_built_yet("mbpo-bench models list", "issue: model layer")


@app.command("init")
def init() -> None:
    """Build a tiny random model of a real architecture offline (not built yet)."""
    raise not_built_yet("mbpo-bench models init", "issue: model layer")
