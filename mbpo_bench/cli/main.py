"""`mbpo-bench`: the command-line entry point.

One module per command group, joined here. Commands only parse options into a config and call one
function of the library. `main()` turns a `UserError` into one line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from mbpo_bench import __version__
from mbpo_bench.cli import (
    ablate_cmd,
    eval_cmd,
    mine_cmd,
    models_cmd,
    quickstart_cmd,
    report_cmd,
    tasks_cmd,
    train_cmd,
)
from mbpo_bench.errors import UserError

app = typer.Typer(
    name="mbpo-bench",
    help="Does the model look at the image? Evaluate and align LMMs for modality balance (MBPO).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mbpo-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Does the model look at the image? Evaluate and align LMMs for modality balance (MBPO)."""


app.command("eval")(eval_cmd.eval_command)
app.command("train")(train_cmd.train_command)
app.command("mine")(mine_cmd.mine_command)
app.add_typer(tasks_cmd.app, name="tasks")
app.add_typer(models_cmd.app, name="models")
app.command("report")(report_cmd.report_command)
app.command("quickstart")(quickstart_cmd.quickstart_command)
app.command("ablate")(ablate_cmd.ablate_command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv`; return the exit code instead of exiting (testable)."""
    from mbpo_bench.cli.invocation import set_argv

    set_argv(argv)
    try:
        # Without standalone mode click returns the code of a `typer.Exit` instead of raising it.
        code = app(args=argv, prog_name="mbpo-bench", standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo(
            "interrupted: finished work is saved; rerun the same command to resume", err=True
        )
        return 130
    except Exception as exc:
        # Typer >= 0.20 vendors click (typer._click), older ones use click itself: match the
        # usage errors and exits of either by their interface, not their class.
        name = type(exc).__name__
        if name == "Exit":
            return int(getattr(exc, "exit_code", 0))
        if name == "Abort":
            typer.echo("aborted", err=True)
            return 130
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            # a usage error (bad option value, unknown option, missing argument): one line in
            # the house format, with where to look, instead of click's usage block
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "mbpo-bench"
            message = " ".join(str(exc.format_message()).split()).rstrip(".")
            typer.echo(f"error: {message} — see '{where} --help' for the options", err=True)
            return int(exc.exit_code)
        raise
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
