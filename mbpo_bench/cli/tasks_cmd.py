"""`mbpo-bench tasks`: list, show, validate, verify and make (new) tasks.

Start-up stays light: the registry and the verifiers import only the standard library and PyYAML
at module level; nothing here imports pandas, torch or lmms-eval.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

app = typer.Typer(help="List, show, validate and verify tasks.", no_args_is_help=True)

INCLUDE_HELP = "Extra folder of task YAML (repeatable)."


def _include(paths: list[Path] | None) -> list[Path]:
    return list(paths or [])


@app.command("list")
def list_command(
    include_path: list[Path] = typer.Option(None, "--include-path", help=INCLUDE_HELP),
) -> None:
    """List tasks, where each came from (built-in, plugin, include folder) and whether their data
    is available here."""
    from rich.console import Console
    from rich.table import Table

    from mbpo_bench.data.registry import data_available, list_tasks

    table = Table(title="mbpo-bench tasks ('tasks show NAME' for prompt, metrics, data path)")
    table.add_column("task", no_wrap=True)
    for column in ("suites", "verifier", "from", "data here"):
        table.add_column(column)
    for spec in list_tasks(_include(include_path)):
        available = data_available(spec)
        table.add_row(
            spec.name,
            ", ".join(spec.suites),
            spec.verifier or "(open-ended)",
            spec.origin,
            ("generated" if spec.data["source"] == "embedded" else "yes") if available else "no",
        )
    Console().print(table)


@app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Task name."),
    include_path: list[Path] = typer.Option(None, "--include-path", help=INCLUDE_HELP),
) -> None:
    """Show a task's prompt, metrics and data location."""
    from mbpo_bench.data.registry import data_available, get_task
    from mbpo_bench.data.sources import data_root

    spec = get_task(name, _include(include_path))
    if spec.data["source"] == "embedded":
        where = "generated on first use under $MBPO_BENCH_CACHE/embedded/ (~/.cache/mbpo-bench)"
    else:
        where = str(data_root() / str(spec.data.get("dir", spec.name)))
        if spec.data.get("hub_id"):
            where += f" (or the HF cache / hub: {spec.data['hub_id']})"
    lines = [
        f"task:        {spec.name} (version {spec.version})",
        f"yaml:        {spec.yaml_path} ({spec.origin})",
        f"suites:      {', '.join(spec.suites) or '-'}",
        f"verifier:    {spec.verifier or '(open-ended)'}",
        f"metrics:     {', '.join(spec.metrics)}",
        *(
            [f"judge:       rubric {spec.judge} (eval needs --judge openai:MODEL or hf:PATH)"]
            if spec.judge
            else []
        ),
        f"generation:  {json.dumps(spec.generation)}",
        f"data:        {where}",
        f"available:   {'yes' if data_available(spec) else 'no'}",
        "prompt:",
        *("  " + line for line in spec.prompt.splitlines()),
    ]
    typer.echo("\n".join(lines))


@app.command("validate")
def validate_command(
    include_path: list[Path] = typer.Option(None, "--include-path", help=INCLUDE_HELP),
) -> None:
    """Load every task YAML and import every function it names; exit 1 on any problem."""
    from mbpo_bench.data.registry import validate_tasks
    from mbpo_bench.errors import UserError

    n_ok, problems = validate_tasks(_include(include_path))
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    typer.echo(f"{n_ok} tasks loaded, {len(problems)} problem(s)")
    if problems:
        # a UserError, not typer.Exit: main() runs click with standalone_mode=False, where an
        # Exit's code is returned by click and lost.
        raise UserError(
            f"{len(problems)} task file problem(s) — fix the files named above", exit_code=1
        )


@app.command("verify")
def verify_command(
    name: str = typer.Argument(..., help="Task name (its verifier is used)."),
    response: str = typer.Argument(..., help="The model's response."),
    target: str = typer.Option(..., "--target", "-t", help="The reference answer."),
    options: list[str] = typer.Option(
        None, "--options", help="Answer options (repeat, or one comma-separated value)."
    ),
    include_path: list[Path] = typer.Option(None, "--include-path", help=INCLUDE_HELP),
) -> None:
    """Print the task verifier's verdict on RESPONSE as JSON."""
    from mbpo_bench.data.registry import get_task
    from mbpo_bench.errors import UserError
    from mbpo_bench.tasks.lmms_compat.process_results import lmms_rule_of
    from mbpo_bench.tasks.verifiers import reward, verify

    spec = get_task(name, _include(include_path))
    if spec.verifier is None:
        raise UserError(f"task {name} is open-ended and has no verifier — pick a close-ended task")
    opts = list(options or [])
    if len(opts) == 1 and "," in opts[0]:
        opts = [o.strip() for o in opts[0].split(",")]
    verdict = verify(spec.verifier, response, target, opts)
    out = {"task": name, "verifier": spec.verifier, **dataclasses.asdict(verdict),
           "reward": reward(spec.verifier, response, target, opts)}  # fmt: skip
    rule = lmms_rule_of(spec.raw.get("process_results"))
    if rule is not None:  # the `_lmms` metrics' verdict: lmms-eval 0.7.3's own parsing
        out["lmms"] = rule(response, {"answer": target, "options": opts})
    typer.echo(json.dumps(out))


@app.command("new")
def new_command(
    name: str = typer.Argument(..., help="Name of the new task (letters, digits, _)."),
    source: str = typer.Option(
        ..., "--from", help="The task to start from, e.g. mbpo_pope_random."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for NAME.yaml and its README.md."),
    include_path: list[Path] = typer.Option(None, "--include-path", help=INCLUDE_HELP),
) -> None:
    """Write a self-contained task YAML (no include) and a data README from an existing task."""
    from mbpo_bench.data.task_new import new_task

    path = new_task(name, source, out, _include(include_path))
    typer.echo(
        f"wrote {path} and {path.parent / 'README.md'}; check it with: "
        f"mbpo-bench tasks validate --include-path {path.parent}"
    )
