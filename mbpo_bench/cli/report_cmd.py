"""`mbpo-bench report`: compare checkpoints from their results files.

Parses options into a `ReportConfig` and calls `mbpo_bench.reporting.render_report`; the
reporting package (pandas, numpy, matplotlib) is imported inside the command so `--help` stays
fast.
"""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR", help="Evaluation run folders (each with results.json)."
    ),
    out: Path = typer.Option(..., "--out", help="Markdown file to write, e.g. reports/NAME.md."),
    baseline: Path | None = typer.Option(
        None, "--baseline", help="Run folder to compare every run against on paired items."
    ),
    name: list[str] | None = typer.Option(
        None,
        "--name",
        help="Label of each RUN_DIR, in order (repeat; default: folder names). Seeds of one arm "
        "may share a name: their differences are then also taken over seeds.",
    ),
    training_run: list[Path] | None = typer.Option(
        None, "--training-run", help="Training run folder whose metrics.jsonl to plot (repeat)."
    ),
    title: str | None = typer.Option(None, "--title", help="Report title."),
    allow_version_mismatch: bool = typer.Option(
        False,
        "--allow-version-mismatch",
        help="Report tasks evaluated with different task versions (flagged) instead of refusing.",
    ),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Render a markdown report comparing runs, with paired CIs against a baseline."""
    from mbpo_bench.reporting import ReportConfig, render_report

    config = ReportConfig(
        n_resamples=resamples, seed=seed, allow_version_mismatch=allow_version_mismatch
    )
    path = render_report(
        run_dirs,
        baseline=baseline,
        out=out,
        names=name or None,
        training_runs=training_run or (),
        title=title,
        config=config,
    )
    typer.echo(f"wrote {path}")
