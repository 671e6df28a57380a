"""`mbpo-bench quickstart`: the whole pipeline offline on the embedded benchmark."""

from __future__ import annotations

from pathlib import Path

import typer

from mbpo_bench.cli.options import ConfigFile, Overrides, Quiet, Sets


def quickstart_command(
    output: Path = typer.Option(
        None, help="Folder for every stage's run (default runs/quickstart, or the --config's)."
    ),
    report: Path = typer.Option(
        None, help="Markdown report to write (default: report.md inside --output)."
    ),
    threads: int = typer.Option(None, help="torch CPU threads (default: torch's choice)."),
    jobs: int = typer.Option(
        None, "--jobs", help="Seeds at once, each in its own process (default 1; for a GPU)."
    ),
    eval_limit: int = typer.Option(
        None,
        help="Evaluate only the first N items of each task (default 500 of 1000; the override eval_limit=null evaluates all).",
    ),
    seeds: int = typer.Option(
        None, "--seeds", help="Run N seeds (seed .. seed+N-1); findings are over seeds (default 1)."
    ),
    split: str = typer.Option(
        None,
        "--split",
        help="Evaluation split: test (reports, default) or dev (choosing settings).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild the base model."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    config: ConfigFile = None,
    overrides: Overrides = None,
    sets: Sets = None,
    quiet: Quiet = False,
) -> None:
    """Build a tiny model, make it biased (SFT), run MBPO, the twin-pair variant and their
    matched SFT controls, evaluate them on the embedded benchmark's twin pairs with
    modality-balance probes and write the report (findings over --seeds). Offline; a few
    minutes a seed on a laptop CPU (a visible GPU is used when present)."""
    from mbpo_bench.config import load_config, print_config
    from mbpo_bench.quickstart import QuickstartConfig, run_quickstart

    # Only flags the user gave: a CLI default must not override the --config file's value.
    flags = [f"output={output}"] if output is not None else []
    if report is not None:
        flags.append(f"report={report}")
    if threads is not None:
        flags.append(f"threads={threads}")
    if jobs is not None:
        flags.append(f"jobs={jobs}")
    if eval_limit is not None:
        flags.append(f"eval_limit={eval_limit}")
    if seeds is not None:
        flags.append(f"seeds={seeds}")
    if split is not None:
        flags.append(f"split={split}")
    if no_cache:
        flags.append("cache_base=false")
    if no_progress:
        flags.append("progress=false")
    cfg = load_config(QuickstartConfig, config, [*flags, *(overrides or []), *(sets or [])])
    if not quiet:
        print_config(cfg, "quickstart")
    path = run_quickstart(cfg)
    typer.echo(f"wrote {path}")
