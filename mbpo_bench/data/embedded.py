"""The embedded benchmark: generated from a seed, cached, no downloads.

`generate_embedded(config)` writes, under `<cache>/embedded/<config fingerprint>/`:

    config.json  world.json  stats.json  FINISHED
    images/train/000123.png            (training scenes, shared by the three tasks)
    images/eval/<kind>-000123.png      (evaluation scenes, one per item)
    <kind>/train.parquet  <kind>/eval.parquet   for kind in existence, color, count

The cache is keyed by a hash of every config field (plus the generator version), so changing any
knob gives a new folder and an unchanged config is generated once. The whole folder is built in a
temporary sibling and renamed into place, and `FINISHED` is written last: a killed run leaves no
half dataset behind, and two processes generating at once both end with the same complete folder.
The cache root is `$MBPO_BENCH_CACHE`, else `~/.cache/mbpo-bench`.

Parquet columns: doc_id, question, answer, options (list), image (path relative to the dataset
folder), kind, prior ("consistent" | "counter"), prior_answer (what the prior says),
negative_split (existence "no" items: "random" | "popular" | "adversarial"; else null), shape,
query (existence: the asked-about shape), n_objects, scene_follows_prior (train only).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mbpo_bench.data.embedded_config import EmbeddedConfig
from mbpo_bench.data.embedded_draw import render_png
from mbpo_bench.data.embedded_scenes import KINDS, Obj, World, eval_item, train_rows, train_scene
from mbpo_bench.data.sources import default_cache_dir

__all__ = ["KINDS", "EmbeddedConfig", "dataset_dir", "default_cache_dir", "generate_embedded"]

FINISHED = "FINISHED"
POOL_MIN_JOBS = 2000  # below this, forking workers costs more than it saves
CELLS = ("consistent", "counter")
COLUMNS = (
    "doc_id", "question", "answer", "options", "image", "kind", "prior", "prior_answer",
    "negative_split", "shape", "query", "n_objects", "scene_follows_prior",
)  # fmt: skip


def dataset_dir(config: EmbeddedConfig, cache_dir: Path | None = None) -> Path:
    """Where `config`'s dataset lives (whether or not it has been generated yet)."""
    return (cache_dir or default_cache_dir()) / "embedded" / config.fingerprint()


def generate_embedded(
    config: EmbeddedConfig | None = None,
    cache_dir: Path | None = None,
    *,
    workers: int | None = None,
) -> Path:
    """Generate (or find cached) the embedded benchmark for `config`; return its folder.

    `workers` processes draw and write the PNGs (default: min(2, CPUs)); the output does not
    depend on it, because every scene is sampled in this process before any is drawn.
    """
    config = config or EmbeddedConfig()
    final = dataset_dir(config, cache_dir)
    if (final / FINISHED).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        _build(config, tmp, workers or min(2, os.cpu_count() or 1))
        if final.exists() and not (final / FINISHED).is_file():
            shutil.rmtree(final)  # left by something other than this generator
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / FINISHED).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _build(config: EmbeddedConfig, root: Path, workers: int) -> None:
    from mbpo_bench.config import to_dict

    world = World.from_config(config)
    jobs: list[tuple[str, tuple[Obj, ...]]] = []
    train, popularity, cooccur = _train_split(config, world, root, jobs)
    evals = _eval_split(config, world, popularity, root, jobs)
    _render_all(jobs, config, root, workers)
    for kind in KINDS:
        _write_parquet(root / kind / "train.parquet", train[kind])
        _write_parquet(root / kind / "eval.parquet", evals[kind])
    stats = {"shape_frequency": dict(popularity), "cooccurrence": cooccur}
    (root / "config.json").write_text(json.dumps(to_dict(config), indent=2))
    (root / "world.json").write_text(json.dumps(world.to_dict(), indent=2))
    (root / "stats.json").write_text(json.dumps(stats, indent=2))
    (root / FINISHED).write_text("ok\n")


def _train_split(
    config: EmbeddedConfig, world: World, root: Path, jobs: list[tuple[str, tuple[Obj, ...]]]
) -> tuple[dict[str, list[dict[str, Any]]], Counter[str], dict[str, dict[str, int]]]:
    rng = random.Random(f"train-{config.seed}")
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    popularity: Counter[str] = Counter()
    pairs: dict[str, Counter[str]] = {s: Counter() for s in config.shapes}
    images = root / "images" / "train"
    images.mkdir(parents=True)
    for i in range(config.n_train):
        objs, anchor, follows = train_scene(rng, config, world)
        present = {o.shape for o in objs}
        popularity.update(present)
        for s in present:
            pairs[s].update(present - {s})
        image = f"images/train/{i:06d}.png"
        jobs.append((image, objs))
        for kind, row in train_rows(rng, config, world, objs, anchor).items():
            row.update(doc_id=f"{kind}-train-{i:06d}", image=image, negative_split=None,
                       scene_follows_prior=follows)  # fmt: skip
            rows[kind].append(row)
    return rows, popularity, {s: dict(c) for s, c in pairs.items()}


def _eval_split(
    config: EmbeddedConfig,
    world: World,
    popularity: Counter[str],
    root: Path,
    jobs: list[tuple[str, tuple[Obj, ...]]],
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    (root / "images" / "eval").mkdir(parents=True)
    for kind in KINDS:
        rng = random.Random(f"eval-{kind}-{config.seed}")
        rows = []
        for i, (cell, index) in enumerate(_cells(config.n_eval_per_cell)):
            objs, row = eval_item(kind, cell, index, rng, config, world, popularity)
            image = f"images/eval/{kind}-{i:06d}.png"
            jobs.append((image, objs))
            row.update(doc_id=f"{kind}-eval-{i:06d}", image=image, scene_follows_prior=None)
            rows.append(row)
        out[kind] = rows
    return out


def _cells(per_cell: int) -> Iterator[tuple[str, int]]:
    """Interleave the two cells so that any prefix (`--limit`) stays balanced."""
    for index in range(per_cell):
        for cell in CELLS:
            yield cell, index


def _write_pngs(jobs: list[tuple[str, tuple[Obj, ...]]], config: EmbeddedConfig, root: str) -> int:
    for rel, objs in jobs:
        Path(root, rel).write_bytes(render_png(objs, config))
    return len(jobs)


def _render_all(
    jobs: list[tuple[str, tuple[Obj, ...]]], config: EmbeddedConfig, root: Path, workers: int
) -> None:
    """Draw and write every PNG; in `workers` forked processes when there are many."""
    import multiprocessing

    if (
        workers <= 1
        or len(jobs) < POOL_MIN_JOBS
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        _write_pngs(jobs, config, str(root))
        return
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(jobs) // (workers * 4))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        done = sum(pool.map(_write_pngs, chunks, [config] * len(chunks), [str(root)] * len(chunks)))
    if done != len(jobs):  # pragma: no cover - a worker that died raises in map already
        raise RuntimeError(f"wrote {done} of {len(jobs)} images")


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [(name, pa.list_(pa.string())) if name == "options" else
         (name, pa.int32()) if name == "n_objects" else
         (name, pa.bool_()) if name == "scene_follows_prior" else (name, pa.string())
         for name in COLUMNS]
    )  # fmt: skip
    table = pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in rows], schema)
    pq.write_table(table, path)
