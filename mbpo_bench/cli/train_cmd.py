"""`mbpo-bench train METHOD`: SFT, DPO, GRPO and MBPO training plugins.

    mbpo-bench train mbpo --model runs/sft --data embedded --output runs/mbpo \\
        optim.steps=300 grpo.num_generations=8 hybrid.offline_ratio=0.5

The command only resolves the method's typed config (defaults, then `--config FILE`, then
`--model/--data`, then `key=value` overrides, given positionally or with `--set`), prints it, and
calls the method's `run_*` function, found in the trainer table (`mbpo_bench.trainers.table`);
trainers (torch) are imported only then. `--resume`
continues an unfinished run from its last checkpoint (the config must be the same). Under
torchrun only rank 0 prints (the config and the summary); every rank trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mbpo_bench.cli.options import (
    ConfigFile,
    IncludePaths,
    Overrides,
    Overwrite,
    Quiet,
    Sets,
    SkipBadItems,
)
from mbpo_bench.errors import UserError
from mbpo_bench.trainers.table import TRAINERS

# the trainer table's rows, as the METHOD argument's help
METHOD_HELP = "; ".join(f"{name}: {spec.summary}" for name, spec in TRAINERS.items())


def build_config(
    config_cls: type,
    *,
    model: str | None,
    data: str | None,
    config_file: Path | None,
    overrides: list[str],
) -> Any:
    """Defaults -> config file -> --model/--data -> key=value overrides; `model` must end set."""
    from mbpo_bench.config import load_config

    given = [f"model={model}"] if model is not None else []
    given += [f"data={data}"] if data is not None else []
    for item in overrides:
        if "=" not in item:
            raise UserError(
                f"'{item}' is not a key=value override — write e.g. optim.lr=1e-4 "
                "(options such as --resume go before them)"
            )
    config: Any = load_config(config_cls, config_file, [*given, *overrides])
    if not getattr(config, "model", ""):
        raise UserError("no model to train — pass --model PATH_OR_ID (or set model in --config)")
    return config


def resolve_config(
    config_cls: type,
    title: str,
    *,
    model: str | None,
    data: str | None,
    config_file: Path | None,
    overrides: list[str] | None,
    sets: list[str] | None,
    skip_bad_items: bool,
    quiet: bool,
) -> Any:
    """`train`'s and `mine`'s config (`build_config`, `--skip-bad-items` first), printed once
    (rank 0 under torchrun) unless `quiet`; then the model and its input protocol are checked
    before the run folder exists, so a typo leaves nothing behind."""
    from mbpo_bench import parallel
    from mbpo_bench.config import print_config
    from mbpo_bench.models.families import check_protocol
    from mbpo_bench.models.loading import validate_model

    config = build_config(
        config_cls, model=model, data=data, config_file=config_file,
        overrides=[*(["skip_bad_items=true"] if skip_bad_items else []), *(overrides or []), *(sets or [])],
    )  # fmt: skip
    if not quiet and parallel.is_main():
        print_config(config, title)
    check_protocol(validate_model(config.model), config.runtime.protocol)
    return config


def train_command(
    method: str = typer.Argument(..., help=METHOD_HELP),
    overrides: Overrides = None,
    model: str | None = typer.Option(
        None, "--model", help="Checkpoint folder, hub id or run folder."
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Task names/suites (comma-separated), a task YAML, or a pairs .parquet.",
    ),
    output: Path = typer.Option(..., "--output", help="Run folder (checkpoints, metrics, final)."),
    config_file: ConfigFile = None,
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished run."),
    overwrite: Overwrite = False,
    sets: Sets = None,
    include_path: IncludePaths = None,
    quiet: Quiet = False,
    skip_bad_items: SkipBadItems = False,
) -> None:
    """Train with a method of the trainer table (METHOD below); writes checkpoints,
    metrics.jsonl and final/ weights."""
    from mbpo_bench.data.registry import add_include_paths

    add_include_paths(include_path or [])
    from mbpo_bench import parallel
    from mbpo_bench.trainers.table import load_trainer

    config_cls, run = load_trainer(method)
    config = resolve_config(
        config_cls, f"train {method}", model=model, data=data, config_file=config_file,
        overrides=overrides, sets=sets, skip_bad_items=skip_bad_items, quiet=quiet,
    )  # fmt: skip
    from mbpo_bench.trainers.loop import TrainingDiverged

    try:
        result = run(config, output, resume=resume, overwrite=overwrite)
    except TrainingDiverged as exc:
        fix = f"resume with a lower learning rate: {resume_command(config_cls, config)}"
        raise TrainingDiverged(exc.problem, fix) from exc
    if not parallel.is_main():
        return
    last = result.last
    shown = ", ".join(
        f"{k} {last[k]:.4g}" for k in ("loss", "reward_mean", "accuracy") if k in last
    )
    typer.echo(f"{method}: {result.steps} steps, {shown}; weights: {output / 'final'}")


def resume_command(config_cls: type, config: Any, argv: list[str] | None = None) -> str:
    """This command again with `--resume` and a lower learning rate: the fix a divergence prints.

    The lr is a tenth of this run's, capped at the method's default (a run at lr 1e30 is told
    to use the default, not 1e29); `--overwrite` is dropped, since it would delete the kept
    checkpoint. `--resume` may change the lr (`runs.SAFE_ON_RESUME`), so it works as printed."""
    import shlex

    from mbpo_bench.cli.invocation import current_argv

    args = current_argv() if argv is None else list(argv)
    args = [a for a in args if a not in ("--overwrite", "--resume")]
    lr = min(config.optim.lr / 10, config_cls().optim.lr)
    return shlex.join(["mbpo-bench", *args, "--resume", f"optim.lr={lr:.3g}"])
