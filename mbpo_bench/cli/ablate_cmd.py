"""`mbpo-bench ablate`: the factorial ablation of method.md, plus the baselines, in one command.

    mbpo-bench ablate --model runs/base --data embedded --output runs/ablation \\
        --seeds 0,1,2 --steps 200 --eval-limit 200 runtime.threads=2 grpo.num_generations=8

Negatives {pgd, noise, blind} x IIG filter {on, off} x online data {on, off} (MBPO arms), plus
continued SFT, DPO on PGD pairs and plain GRPO; every arm from the same start, with the same
budget, at every seed; evaluated with the image, blind and mismatched probes; one report
(`<output>/report.md`) with mean and spread per arm. `--dry-run` prints the plan and trains
nothing; rerunning the same command skips what finished and resumes what was interrupted.
`--jobs N` runs N groups of runs at once in worker processes (`mbpo_bench.ablation.jobs`), for
a small model that leaves the GPU idle; it is not a setting of the ablation (not saved in
`ablation.yaml`), since it changes no result.

Settings: defaults, then `--config FILE` (an `ablation.yaml`), then the options given here,
then `key=value` training overrides (appended to the file's); the resolved config is printed
(stderr) unless `--quiet`, as for every command, once the plan and the output folder have passed
their checks (a refused run prints its one-line error alone). The command only builds the
`AblationConfig` and calls `run_ablation`; everything heavy is imported inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mbpo_bench.cli.options import ConfigFile, Quiet, Sets
from mbpo_bench.errors import UserError


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; '0-4' -> [0, 1, 2, 3, 4]."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            low, sep, high = part.partition("-")
            seeds += list(range(int(low), int(high) + 1)) if sep and low else [int(part)]
    except ValueError:
        raise UserError(f"--seeds '{text}' is not a list of integers — write e.g. 0,1,2") from None
    if not seeds:
        raise UserError("--seeds names no seed — write e.g. 0,1,2")
    return seeds


def build_config(
    *,
    config_file: Path | None = None,
    model: str | None = None,
    data: str | None = None,
    seeds: str | None = None,
    arms: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    eval_tasks: str | None = None,
    eval_limit: int | None = None,
    probes: str | None = None,
    no_base: bool = False,
    overrides: list[str] | None = None,
    lrs: str | None = None,
    lr_from: str | None = None,
) -> Any:
    """Defaults -> config file -> options given -> overrides appended; `model` must end set."""
    from mbpo_bench.ablation.config import AblationConfig
    from mbpo_bench.config import from_dict, load_config, to_dict

    config = load_config(AblationConfig, config_file)
    data_ = to_dict(config)
    given: dict[str, Any] = {
        "model": model, "data": data, "steps": steps, "batch_size": batch_size,
        "eval_tasks": eval_tasks, "eval_limit": eval_limit,
    }  # fmt: skip
    data_.update({k: v for k, v in given.items() if v is not None})
    if seeds is not None:
        data_["seeds"] = parse_seeds(seeds)
    if arms is not None:
        data_["arms"] = [a.strip() for a in arms.split(",") if a.strip()]
    if probes is not None:
        data_["probes"] = [p.strip() for p in probes.split(",") if p.strip()]
    if no_base:
        data_["eval_base"] = False
    if lrs is not None:
        try:
            data_["lrs"] = [float(x) for x in lrs.split(",") if x.strip()]
        except ValueError:
            raise UserError(
                f"--lrs '{lrs}' is not a list of numbers — write e.g. 2e-5,5e-5"
            ) from None
    if lr_from is not None:
        data_["lr_from"] = lr_from
    data_["overrides"] = [*data_["overrides"], *(overrides or [])]
    result = from_dict(AblationConfig, data_, where="ablation")
    if not result.model:
        raise UserError("no starting model — pass --model PATH (or set model in --config)")
    return result


def ablate_command(
    overrides: list[str] = typer.Argument(
        None, help="Training overrides: key=value, METHOD:key=value, eval:key=value."
    ),
    model: str | None = typer.Option(None, "--model", help="Start: checkpoint or run folder."),
    data: str | None = typer.Option(
        None, "--data", help="Training tasks, names or suite (default: embedded)."
    ),
    output: Path = typer.Option(..., "--output", help="Folder of the ablation (resumable)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Seeds, e.g. 0,1,2 (default 0,1,2)."),
    arms: str | None = typer.Option(
        None, "--arms", help="Arms to run: names or patterns, comma-separated (default: all)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps per arm (200)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch per step (8)."),
    eval_tasks: str | None = typer.Option(
        None, "--eval-tasks", help="Evaluation tasks or suite (default: the --data tasks)."
    ),
    eval_limit: int | None = typer.Option(None, "--eval-limit", help="First N items per task."),
    probes: str | None = typer.Option(
        None, "--probes", help="Evaluation probes (default image,blind,mismatched)."
    ),
    no_base: bool = typer.Option(False, "--no-base", help="Do not evaluate the start model."),
    lrs: str | None = typer.Option(
        None,
        "--lrs",
        help="Learning-rate grid, e.g. 2e-5,5e-5,2e-4: every arm once per lr (with "
        "eval:split=dev; writes lr_choice.json).",
    ),
    lr_from: str | None = typer.Option(
        None,
        "--lr-from",
        help="A dev ablation run with --lrs: train each arm it tuned at its choice.",
    ),
    config_file: ConfigFile = None,
    sets: Sets = None,
    quiet: Quiet = False,
    include_path: list[Path] = typer.Option(
        [], "--include-path", help="Extra folder of task YAML (repeatable), as for eval."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; run nothing."),
    report_only: bool = typer.Option(
        False,
        "--report-only",
        help="Write the report from the runs that finished; run nothing (e.g. after a time limit).",
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No evaluation progress bars."),
    jobs: int = typer.Option(
        1,
        "--jobs",
        help="Runs at once (default 1), each group in its own process; runs that share mined "
        "pairs share one. Results do not change. On CPU, jobs x runtime.threads should not "
        "exceed the cores.",
    ),
) -> None:
    """Factorial MBPO ablation + SFT/DPO/GRPO baselines over seeds; one report with mean/spread."""
    from mbpo_bench.ablation.jobs import check_jobs
    from mbpo_bench.data.registry import add_include_paths

    check_jobs(jobs)
    add_include_paths(include_path)  # via the environment, so --jobs workers see them too
    from mbpo_bench.ablation import build_plan, format_plan, run_ablation

    config = build_config(
        config_file=config_file, model=model, data=data, seeds=seeds, arms=arms, steps=steps,
        batch_size=batch_size, eval_tasks=eval_tasks, eval_limit=eval_limit, probes=probes,
        no_base=no_base, overrides=[*(overrides or []), *(sets or [])], lrs=lrs,
        lr_from=lr_from,
    )  # fmt: skip
    if dry_run:
        plan = build_plan(config, output)  # refuses unknown arms and keys before anything prints
        if not quiet:
            from mbpo_bench.config import print_config

            print_config(config, "ablate")
        typer.echo(format_plan(plan), nl=False)
        if jobs > 1:
            from mbpo_bench.ablation.jobs import format_groups, group_runs

            typer.echo(format_groups(group_runs(plan), jobs), nl=False)
        return
    if report_only:
        from mbpo_bench.ablation.driver import report_ablation

        result = report_ablation(config, output)
        missing = len(result.failures)
        typer.echo(f"ablation report ({missing} of {len(result.plan.runs)} runs missing): "
                   f"{result.report}")  # fmt: skip
        return
    result = run_ablation(
        config, output, progress=not no_progress, jobs=jobs, show_config=not quiet
    )
    if result.failures:
        first, message = next(iter(result.failures.items()))
        raise UserError(
            f"{len(result.failures)} of {len(result.plan.runs)} runs did not finish "
            f"(first: {first}: {message}) — see {result.report}; fix and rerun the same command "
            "to resume",
            exit_code=3,
        )
    typer.echo(f"ablation: {len(result.plan.runs)} runs; report: {result.report}")
