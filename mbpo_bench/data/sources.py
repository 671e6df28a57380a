"""Where task items come from: the embedded generator, or a real benchmark's own files.

A real benchmark is read from `<data root>/<data.dir>/` (any `*.parquet` below it, e.g. a
Hugging Face dataset snapshot copied there), else from the Hugging Face cache for its
`data.hub_id`, else, only when the user asks for it with `MBPO_BENCH_ONLINE=1`, downloaded from
the Hub. The data root is `$MBPO_BENCH_DATA`, else `<cache>/data` (cache: `$MBPO_BENCH_CACHE`,
else ~/.cache/mbpo-bench). Rows are read with pyarrow and turned into canonical rows by the
task's `data.adapter` (a stdlib function in mbpo_bench.tasks.adapters), which keeps each
benchmark's schema knowledge in one place. Images stored as bytes inside parquet are written once
to `<cache>/images/<dir>-<source hash>/` so that every item has a file path (TaskItem contract).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mbpo_bench.data.task_spec import TaskSpec
from mbpo_bench.errors import UserError

Row = dict[str, Any]


def default_cache_dir() -> Path:
    env = os.environ.get("MBPO_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mbpo-bench"


def data_root(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("MBPO_BENCH_DATA")
    return Path(env).expanduser() if env else default_cache_dir() / "data"


def _is_split(path: Path, folder: Path, split: str) -> bool:
    """HF layouts: data/<split>-00000-of-00001.parquet, <config>/<split>/0000.parquet."""
    rel = path.relative_to(folder)
    return path.name.startswith((f"{split}-", f"{split}.")) or split in rel.parts[:-1]


def _parquet_files(folder: Path, split: str | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    if split:
        matching = [p for p in files if _is_split(p, folder, split)]
        files = matching or files
    return files


def _hub_snapshot(hub_id: str) -> Path | None:
    """The HF-cache snapshot of `hub_id` (downloaded only with MBPO_BENCH_ONLINE=1)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    online = os.environ.get("MBPO_BENCH_ONLINE") == "1"
    try:
        path = snapshot_download(hub_id, repo_type="dataset", local_files_only=not online)
    except Exception:
        return None
    return Path(path)


def locate(spec: TaskSpec, root: Path | None = None, *, use_hub: bool = True) -> list[Path]:
    """The parquet files holding `spec`'s split, or [] when none are found."""
    split = spec.data.get("split")
    folder = data_root(root) / str(spec.data.get("dir", spec.name))
    if folder.is_dir() and (files := _parquet_files(folder, split)):
        return files
    hub_id = spec.data.get("hub_id")
    if use_hub and hub_id:
        snap = _hub_snapshot(str(hub_id))
        if snap is not None:
            config = spec.data.get("config")  # a multi-config repo: <config>/<split>-*.parquet
            if config and (snap / str(config)).is_dir():
                snap = snap / str(config)
            return _parquet_files(snap, split)
    return []


def missing_data_error(spec: TaskSpec, root: Path | None = None) -> UserError:
    folder = data_root(root) / str(spec.data.get("dir", spec.name))
    hub = spec.data.get("hub_id")
    hint = f" or run once online with MBPO_BENCH_ONLINE=1 (downloads {hub})" if hub else ""
    return UserError(
        f"no data for task {spec.name}: no parquet files under {folder} — put the benchmark's "
        f"parquet files there, or set MBPO_BENCH_DATA to the folder holding '{folder.name}/'{hint}"
    )


def _adapter(spec: TaskSpec) -> Callable[[Row, int], Row | list[Row]]:
    dotted = str(spec.data.get("adapter", ""))
    module, _, fn = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), fn)  # type: ignore[no-any-return]
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(
            f"task {spec.name}: data.adapter '{dotted}' cannot be imported ({exc}) — "
            f"fix metadata.data.adapter in {spec.yaml_path}"
        ) from exc


def _matches(row: Row, where: dict[str, Any]) -> bool:
    return all(str(row.get(k)) == str(v) for k, v in where.items())


def read_rows(spec: TaskSpec, root: Path | None = None) -> list[Row]:
    """Canonical rows (doc_id, question, answer, options, image_path, meta) of a real task."""
    import pyarrow.parquet as pq

    files = locate(spec, root)
    if not files:
        raise missing_data_error(spec, root)
    adapt = _adapter(spec)
    where = dict(spec.data.get("where") or {})
    out: list[Row] = []
    for path in files:
        try:
            raw_rows = pq.read_table(path).to_pylist()
        except Exception as exc:
            raise UserError(
                f"task {spec.name}: cannot read {path} ({exc}) — replace the file"
            ) from exc
        image_dir = _image_cache(spec, path)
        for index, raw in enumerate(raw_rows):
            if where and not _matches(raw, where):
                continue
            try:
                adapted = adapt(raw, index)  # one row, or several (MMBench's circular passes)
                for row in adapted if isinstance(adapted, list) else [adapted]:
                    row["image_path"] = _image_file(row.pop("image", None), image_dir, path, row)
                    out.append(row)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise UserError(
                    f"task {spec.name}: malformed row {index} in {path} "
                    f"({exc.__class__.__name__}: {exc}) — fix or drop that row"
                ) from exc
    return out


def _image_cache(spec: TaskSpec, source: Path) -> Path:
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    name = f"{spec.data.get('dir', spec.name)}-{key.hexdigest()[:10]}"
    return default_cache_dir() / "images" / name


def _suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    return ".img"


def _image_file(image: Any, image_dir: Path, source: Path, row: Row) -> Path | None:
    """A file path for the row's image: given as bytes, {'bytes','path'} or a relative path."""
    if image is None:
        return None
    if isinstance(image, dict):
        data, rel = image.get("bytes"), image.get("path")
        image = data if data else rel
    if isinstance(image, bytes | bytearray):
        from mbpo_bench.runs import write_atomic

        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(row["doc_id"]))
        target = image_dir / f"{safe}{_suffix(bytes(image))}"
        if not target.is_file():
            write_atomic(target, bytes(image))
        return target
    if isinstance(image, str) and image:
        candidate = Path(image)
        return candidate if candidate.is_absolute() else source.parent / candidate
    raise ValueError(f"image field of type {type(image).__name__} is neither bytes nor a path")
