"""`mbpo-bench models`: build tiny offline models and list families.

torch/transformers are imported inside the commands so `mbpo-bench --help` stays fast.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from mbpo_bench.errors import UserError

app = typer.Typer(help="Build tiny offline models; list families and sizes.", no_args_is_help=True)


# Parameter counts of `models init` models at their default image size, as count_parameters
# computes them on the meta device. Listed here so `models list` imports neither torch nor
# transformers (it took 5 s and 870 MB); tests/test_first_hour_inputs.py checks every entry
# against count_parameters, so a change in the model code cannot leave a stale number.
PARAMETER_COUNTS: dict[tuple[str, str], int] = {
    ("llava", "tiny"): 2_936_192,
    ("llava", "small"): 62_930_688,
    ("llava_siglip_qwen2", "tiny"): 3_135_488,
    ("llava_siglip_qwen2", "small"): 64_713_856,
    ("qwen2_vl", "tiny"): 3_182_080,
    ("qwen2_vl", "small"): 65_383_168,
    ("qwen2_5_vl", "tiny"): 3_313_536,
    ("qwen2_5_vl", "small"): 68_926_336,
}


@app.command("list")
def list_models() -> None:
    """List model families and tiny-model sizes with their parameter counts."""
    from rich.console import Console
    from rich.table import Table

    from mbpo_bench.models.families import FAMILIES, LOADABLE_MODEL_TYPES, SIZES

    def count(family: str, size: str) -> int:
        if (family, size) in PARAMETER_COUNTS:
            return PARAMETER_COUNTS[(family, size)]
        from mbpo_bench.models.tiny import count_parameters  # a family or size added later

        return count_parameters(family, size)

    table = Table(title="mbpo-bench model families (models init --family F --size S)")
    table.add_column("family")
    table.add_column("architecture")
    for size, spec in SIZES.items():
        table.add_column(f"{size} ({spec.image_size} px)", justify="right")
    for family, row in FAMILIES.items():
        counts = [f"{count(family, size) / 1e6:.1f}M" for size in SIZES]
        table.add_row(family, row.summary, *counts)
    Console().print(table)
    *first, last = LOADABLE_MODEL_TYPES
    typer.echo(f"Loadable checkpoints: config.json model_type {', '.join(first)} or {last}.")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file — pass a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                f"--out {out} exists and is not empty — pass --overwrite or another folder"
            )
        if not (out / "config.json").is_file():
            raise UserError(
                f"--out {out} is not a model folder (no config.json); refusing to delete it — "
                "choose an empty or new folder"
            )
        shutil.rmtree(out)


@app.command("init")
def init(
    family: str = typer.Option(
        ..., "--family", help="A family of `models list` (llava, qwen2_vl, ...)."
    ),
    size: str = typer.Option("tiny", "--size", help="tiny | small (see `models list`)"),
    out: Path = typer.Option(..., "--out", help="Folder to write the checkpoint into."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initialisation."),
    image_size: int | None = typer.Option(None, "--image-size", help="Square image side in px."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model folder."),
) -> None:
    """Build a random model of a real architecture class offline and save it to --out."""
    from mbpo_bench.models.families import check_family, check_size

    check_family(family)
    check_size(size)
    _prepare_out(out, overwrite)
    from transformers.utils import logging as hf_logging

    from mbpo_bench.models.tiny import build_tiny_model

    hf_logging.disable_progress_bar()
    folder = build_tiny_model(family, out, size=size, seed=seed, image_size=image_size)
    typer.echo(f"wrote {family} ({size}) to {folder}")
