"""`mbpo-bench mine`: adversarial hard-negative mining alone (MBPO stage 1).

    mbpo-bench mine --model runs/sft --data embedded --output runs/mined mining.source=noise

Writes `<output>/pairs.parquet` (image reference, question, chosen, rejected, IIG, attack
statistics) and `pairs.stats.json`; `mbpo-bench train dpo --data <output>/pairs.parquet` and
`train mbpo preference_data=<output>/pairs.parquet` train on it. Under torchrun the ranks split
the mining and only rank 0 prints and writes.
"""

from __future__ import annotations

from pathlib import Path

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


def mine_command(
    overrides: Overrides = None,
    model: str | None = typer.Option(
        None, "--model", help="Checkpoint folder, hub id or run folder."
    ),
    data: str | None = typer.Option(None, "--data", help="Task names/suites or a task YAML."),
    output: Path = typer.Option(..., "--output", help="Run folder for pairs.parquet."),
    config_file: ConfigFile = None,
    overwrite: Overwrite = False,
    sets: Sets = None,
    include_path: IncludePaths = None,
    quiet: Quiet = False,
    skip_bad_items: SkipBadItems = False,
) -> None:
    """Mine adversarial hard negatives into a preference dataset (pairs.parquet)."""
    from mbpo_bench.data.registry import add_include_paths

    add_include_paths(include_path or [])
    from mbpo_bench import parallel
    from mbpo_bench.cli.train_cmd import resolve_config
    from mbpo_bench.trainers.mining import PAIRS_FILE, MineConfig, run_mine

    config = resolve_config(
        MineConfig, "mine", model=model, data=data, config_file=config_file,
        overrides=overrides, sets=sets, skip_bad_items=skip_bad_items, quiet=quiet,
    )  # fmt: skip
    pairs, stats = run_mine(config, output, overwrite=overwrite)
    if not parallel.is_main():
        return
    info = stats.as_dict()
    flips = info["flip_rate"]  # None when no clean answer was right (nothing could flip)
    rate = "n/a (no clean answer right)" if flips is None else f"{flips:.2f}"
    typer.echo(
        f"mined {len(pairs)} pairs from {info['candidates']} candidates "
        f"({info['selected']} selected by IIG, flip rate {rate}): {output / PAIRS_FILE}"
    )
