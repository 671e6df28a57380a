"""The embedded benchmark: generated from a seed, cached, no downloads.

`generate_embedded(config)` writes, under `<cache>/embedded/<config fingerprint>/`:

    config.json  world.json  stats.json  FINISHED
    images/train/000123.png             (training scenes, shared by the three tasks)
    images/train_twins/<kind>-000123.png (the prior twin of a counter-prior training item)
    images/{test,dev}/<kind>-000123.png (evaluation scenes, one per item)
    <kind>/train.parquet  <kind>/train_twins.parquet  <kind>/test.parquet  <kind>/dev.parquet
    for kind in existence, color, count.

`test` is for reports; `dev` (the same design from its own seed stream, `n_dev_per_cell` pairs)
is for choosing settings, so a setting chosen by looking at scores never touches `test`. Both
hold twin pairs (`embedded_scenes.eval_pair`), interleaved (twin, counter) so any even prefix
(`--limit`) holds whole pairs and stays balanced.

The cache is keyed by a hash of every config field (plus the generator version), so changing any
knob gives a new folder and an unchanged config is generated once. The whole folder is built in a
temporary sibling and renamed into place, and `FINISHED` is written last: a killed run leaves no
half dataset behind, and two processes generating at once both end with the same complete folder.
The cache root is `$MBPO_BENCH_CACHE`, else `~/.cache/mbpo-bench`.

Parquet columns: doc_id, question, answer, options (list), image (path relative to the dataset
folder), kind, prior ("consistent" | "counter"), prior_answer (what the prior says),
negative_split (existence "no" items: "random" | "popular" | "adversarial"; else null), shape,
query (existence: the asked-about shape), n_objects, scene_follows_prior (train only), pair_id
(both twins of a pair; in `train` only on counter-prior rows, whose twin is in `train_twins`),
pair_cell (the pair's cell, named by its counter-prior answer: "color", "count:3",
"existence:yes", ...).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from mbpo_bench.data.embedded_config import EmbeddedConfig
from mbpo_bench.data.embedded_draw import render_png
from mbpo_bench.data.embedded_scenes import (
    KINDS,
    Obj,
    World,
    color_options,
    eval_pair,
    pair_cell,
    train_rows,
    train_scene,
    twin_scene,
)
from mbpo_bench.data.sources import default_cache_dir

__all__ = ["KINDS", "EmbeddedConfig", "dataset_dir", "default_cache_dir", "generate_embedded"]

FINISHED = "FINISHED"
POOL_MIN_JOBS = 2000  # below this, forking workers costs more than it saves
EVAL_SPLITS = ("test", "dev")
COLUMNS = (
    "doc_id", "question", "answer", "options", "image", "kind", "prior", "prior_answer",
    "negative_split", "shape", "query", "n_objects", "scene_follows_prior", "pair_id",
    "pair_cell",
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
    twins = _train_twins(config, world, train, root, jobs)
    evals = {split: _eval_split(config, world, popularity, root, jobs, split)
             for split in EVAL_SPLITS}  # fmt: skip
    _render_all(jobs, config, root, workers)
    for kind in KINDS:
        _write_parquet(root / kind / "train.parquet", train[kind])
        _write_parquet(root / kind / "train_twins.parquet", twins[kind])
        for split in EVAL_SPLITS:
            _write_parquet(root / kind / f"{split}.parquet", evals[split][kind])
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
                       scene_follows_prior=follows, objs=objs)  # fmt: skip
            rows[kind].append(row)
    return rows, popularity, {s: dict(c) for s, c in pairs.items()}


def _train_twins(
    config: EmbeddedConfig,
    world: World,
    train: dict[str, list[dict[str, Any]]],
    root: Path,
    jobs: list[tuple[str, tuple[Obj, ...]]],
) -> dict[str, list[dict[str, Any]]]:
    """The prior twin of every counter-prior training row (own seed stream: the training split
    itself is what it would be without twins). Twin and original get the same `pair_id`."""
    from mbpo_bench.data.embedded_scenes import question_row

    rng = random.Random(f"train-twins-{config.seed}")
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    (root / "images" / "train_twins").mkdir(parents=True)
    for kind in KINDS:
        for row in train[kind]:
            objs = row.pop("objs")
            row["pair_id"] = row["pair_cell"] = None
            if row["prior"] != "counter":
                continue
            options = tuple(row["options"])
            if kind == "color" and row["prior_answer"] not in options:
                options = color_options(rng, config, row["answer"], row["prior_answer"])
                row["options"] = list(options)
            twin = twin_scene(kind, objs, row["shape"], row["query"], rng, config, world)
            twin_row = question_row(kind, rng, config, world, twin, row["shape"], row["query"],
                                    options)  # fmt: skip
            assert twin_row["prior"] == "consistent" and twin_row["question"] == row["question"]
            index = row["doc_id"].rsplit("-", 1)[1]
            image = f"images/train_twins/{kind}-{index}.png"
            jobs.append((image, twin))
            row["pair_id"] = row["doc_id"]
            row["pair_cell"] = twin_row["pair_cell"] = pair_cell(kind, row["answer"])
            twin_row.update(doc_id=f"{row['doc_id']}-twin", image=image, negative_split=None,
                            scene_follows_prior=False, pair_id=row["doc_id"])  # fmt: skip
            out[kind].append(twin_row)
    return out


def _eval_split(
    config: EmbeddedConfig,
    world: World,
    popularity: Counter[str],
    root: Path,
    jobs: list[tuple[str, tuple[Obj, ...]]],
    split: str,
) -> dict[str, list[dict[str, Any]]]:
    """Twin pairs of one evaluation split; `test` and `dev` draw from separate seed streams."""
    out: dict[str, list[dict[str, Any]]] = {}
    (root / "images" / split).mkdir(parents=True)
    n_pairs = config.n_eval_per_cell if split == "test" else config.n_dev_per_cell
    for kind in KINDS:
        rng = random.Random(f"{'eval' if split == 'test' else split}-{kind}-{config.seed}")
        rows: list[dict[str, Any]] = []
        for index in range(n_pairs):
            pair_id = f"{kind}-{split}-p{index:06d}"
            for objs, row in eval_pair(kind, index, rng, config, world, popularity):
                i = len(rows)
                image = f"images/{split}/{kind}-{i:06d}.png"
                jobs.append((image, objs))
                row.update(doc_id=f"{kind}-{split}-{i:06d}", image=image,
                           scene_follows_prior=None, pair_id=pair_id)  # fmt: skip
                rows.append(row)
        out[kind] = rows
    return out


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
