"""`mbpo-bench tasks`: list, show, validate and verify tasks."""

from __future__ import annotations

import typer

from mbpo_bench.cli.common import not_built_yet

app = typer.Typer(help="List, show, validate and verify tasks.", no_args_is_help=True)


@app.command("list")
def list_tasks() -> None:
    """List tasks and whether their data is available here (not built yet)."""
    raise not_built_yet("mbpo-bench tasks list", "issue: tasks")


@app.command("show")
def show() -> None:
    """Show a task's prompt, metrics and data location (not built yet)."""
    raise not_built_yet("mbpo-bench tasks show", "issue: tasks")


@app.command("validate")
def validate() -> None:
    """Load every task YAML (not built yet)."""
    raise not_built_yet("mbpo-bench tasks validate", "issue: tasks")


@app.command("verify")
def verify() -> None:
    """Print a verifier's verdict on a response (not built yet)."""
    raise not_built_yet("mbpo-bench tasks verify", "issue: tasks")
