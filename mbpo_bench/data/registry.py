"""The task registry: task YAML found on disk, resolved by name or suite, turned into items.

Tasks come from three places, in this order: the package's own `mbpo_bench.tasks` folder, folders
registered by third-party packages under the entry-point group `mbpo_bench.tasks` (the entry
point loads to a folder path, or to a module whose folder is used), and user folders passed as
`include_paths` (`--include-path DIR`) or listed in $MBPO_BENCH_INCLUDE_PATH (folders separated
by the OS path separator; `train`, `mine` and `ablate` pass their `--include-path` this way, so the
trainers' item loading sees the same catalogue as `eval`). A user task whose name clashes with an existing one is
refused (lmms-eval would silently let the built-in win). Items are `TaskItem`s with the task's
prompt applied, so evaluation probes and trainers see the same text; embedded tasks generate
their data on first use, real ones read it through `sources`.

Suites have one source: each task YAML's `metadata.suites` (ordered by `metadata.suite_order`,
then by name). There is no list here, so a new built-in task joins its suite by saying so, and a
user task may join a built-in suite as well as form its own.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.data.items import TaskItem
from mbpo_bench.data.task_spec import TaskSpec, spec_from_yaml
from mbpo_bench.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from mbpo_bench.data.embedded_config import EmbeddedConfig

__all__ = [
    "TaskSpec",
    "aggregate",
    "builtin_tasks_dir",
    "data_available",
    "get_task",
    "list_tasks",
    "load_items",
    "resolve_tasks",
    "suites",
    "training_items",
]

ENTRY_POINT_GROUP = "mbpo_bench.tasks"
EMBEDDED_CONFIG_ENV = "MBPO_BENCH_EMBEDDED_CONFIG"
INCLUDE_PATH_ENV = "MBPO_BENCH_INCLUDE_PATH"  # extra task folders, os.pathsep-separated
# its old name (once read only by the lmms-eval glue): still read, with a one-line warning
OLD_INCLUDE_PATH_ENV = "MBPO_BENCH_TASK_PATHS"


def builtin_tasks_dir() -> Path:
    """The installed `mbpo_bench.tasks` folder: lmms-eval's include path for our tasks."""
    import mbpo_bench.tasks

    return Path(mbpo_bench.tasks.__file__).parent


def _entry_point_dirs() -> list[tuple[str, Path]]:
    dirs = []
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        target = loaded() if callable(loaded) else loaded
        path = Path(getattr(target, "__file__", "") or str(target))
        dirs.append((f"plugin {getattr(ep, 'name', '?')}", path.parent if path.is_file() else path))
    return dirs


def _folders(include_paths: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(origin, folder) of every task folder, built-in first: what `tasks list` shows as 'from'."""
    user = [(str(Path(p)), Path(p)) for p in include_paths]
    return [("built-in", builtin_tasks_dir()), *_entry_point_dirs(), *user]


def _scan(folder: Path) -> list[TaskSpec]:
    if not folder.is_dir():
        raise UserError(f"task folder not found: {folder} — pass an existing --include-path")
    specs = []
    for path in sorted(folder.rglob("*.yaml")):
        if "__pycache__" in path.parts:
            continue
        spec = spec_from_yaml(path)
        if spec is not None:
            specs.append(spec)
    return specs


@functools.lru_cache(maxsize=16)
def _catalogue(include_paths: tuple[str, ...]) -> dict[str, TaskSpec]:
    found: dict[str, TaskSpec] = {}
    for origin, folder in _folders(include_paths):
        for spec in _scan(folder):
            if spec.name in found:
                raise UserError(
                    f"task name '{spec.name}' in {spec.yaml_path} clashes with the task of the "
                    f"same name in {found[spec.name].yaml_path} — rename your task"
                )
            found[spec.name] = dataclasses.replace(spec, origin=origin)
    return found


@functools.cache
def _warn_old_variable() -> None:
    print(
        f"warning: ${OLD_INCLUDE_PATH_ENV} is deprecated and will be removed in the next release "
        f"— use ${INCLUDE_PATH_ENV} (same format)",
        file=sys.stderr,
    )


def _env_folders() -> list[str]:
    """The folders of $MBPO_BENCH_INCLUDE_PATH, then of its deprecated old name."""
    folders = [p for p in os.environ.get(INCLUDE_PATH_ENV, "").split(os.pathsep) if p]
    old = [p for p in os.environ.get(OLD_INCLUDE_PATH_ENV, "").split(os.pathsep) if p]
    if old:
        _warn_old_variable()
    return [*folders, *old]


def _key(include_paths: Iterable[str | Path]) -> tuple[str, ...]:
    """The given folders, then those of $MBPO_BENCH_INCLUDE_PATH, resolved, each once."""
    env = _env_folders()
    return tuple(dict.fromkeys(str(Path(p).expanduser().resolve()) for p in [*include_paths, *env]))


def add_include_paths(folders: Iterable[str | Path]) -> None:
    """Put `folders` in $MBPO_BENCH_INCLUDE_PATH for this process (and its children, e.g.
    torchrun workers started after it), ahead of what was there."""
    given = [str(Path(f).expanduser().resolve()) for f in folders]
    if not given:
        return
    for folder in given:
        if not Path(folder).is_dir():
            raise UserError(f"task folder not found: {folder} — pass an existing --include-path")
    old = os.environ.get(INCLUDE_PATH_ENV, "")
    os.environ[INCLUDE_PATH_ENV] = os.pathsep.join([*given, *([old] if old else [])])


def list_tasks(include_paths: Sequence[str | Path] = ()) -> list[TaskSpec]:
    return sorted(_catalogue(_key(include_paths)).values(), key=lambda s: s.name)


def suites(include_paths: Sequence[str | Path] = ()) -> dict[str, list[str]]:
    """Suite name -> its task names, from every task's `metadata.suites` (the only source)."""
    members: dict[str, list[TaskSpec]] = {}
    for spec in _catalogue(_key(include_paths)).values():
        for suite in spec.suites:
            members.setdefault(suite, []).append(spec)
    last = float("inf")
    return {
        suite: [
            s.name
            for s in sorted(
                specs, key=lambda s: (s.suite_order if s.suite_order is not None else last, s.name)
            )
        ]
        for suite, specs in sorted(members.items())
    }


def get_task(name: str, include_paths: Sequence[str | Path] = ()) -> TaskSpec:
    catalogue = _catalogue(_key(include_paths))
    if name not in catalogue:
        raise UserError(
            f"unknown task '{name}'{did_you_mean(name, [*catalogue, *suites(include_paths)])} — "
            "run 'mbpo-bench tasks list' to see the tasks"
        )
    return catalogue[name]


def resolve_tasks(names_or_suites: str, include_paths: Sequence[str | Path] = ()) -> list[TaskSpec]:
    """'embedded,mbpo_mme' -> the specs of every named task and every task of a named suite.

    A suite is every task whose YAML lists it in `metadata.suites`, built-in or the user's own.
    """
    out: dict[str, TaskSpec] = {}
    declared: dict[str, list[str]] | None = None
    for token in (t.strip() for t in names_or_suites.split(",")):
        if not token:
            continue
        if declared is None:
            declared = suites(include_paths)
        for name in declared.get(token, [token]):
            out.setdefault(name, get_task(name, include_paths))
    if not out:
        raise UserError("no task given — pass task names or suites, e.g. 'embedded'")
    return list(out.values())


def _spec(spec_or_name: TaskSpec | str, include_paths: Sequence[str | Path]) -> TaskSpec:
    return (
        spec_or_name
        if isinstance(spec_or_name, TaskSpec)
        else get_task(spec_or_name, include_paths)
    )


# `eval` and `test` are the same (reported) split; `dev` (embedded only) is for choosing settings;
# `train_twins` (embedded only) holds the prior twins of counter-prior training items.
SPLITS = ("test", "eval", "dev", "train", "train_twins")


def embedded_config_from_env() -> Any:
    """The EmbeddedConfig named by $MBPO_BENCH_EMBEDDED_CONFIG, else the defaults."""
    from mbpo_bench.config import load_config
    from mbpo_bench.data.embedded import EmbeddedConfig

    path = os.environ.get(EMBEDDED_CONFIG_ENV)
    return load_config(EmbeddedConfig, Path(path) if path else None)


def data_available(spec: TaskSpec, data_root: Path | None = None) -> bool:
    """Whether items can be loaded here without a download (embedded: always)."""
    if spec.data["source"] == "embedded":
        return True
    from mbpo_bench.data.sources import locate

    return bool(locate(spec, data_root))


def render_prompt(spec: TaskSpec, question: str, options: Sequence[str]) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    fields = {
        "question": question,
        "options": ", ".join(options),
        "choices": "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(options)),
    }
    try:
        return spec.prompt.format_map(fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(
            f"task {spec.name}: prompt template has an unknown field ({exc}) — use only "
            f"{{question}}, {{options}}, {{choices}} in {spec.yaml_path}"
        ) from exc


def _embedded_rows(
    spec: TaskSpec, split: str, cache_dir: Path | None, config: Any
) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from mbpo_bench.data.embedded import generate_embedded

    root = generate_embedded(config or embedded_config_from_env(), cache_dir)
    split = "test" if split == "eval" else split  # `eval` is the reported split: `test`
    rows = pq.read_table(root / str(spec.data["kind"]) / f"{split}.parquet").to_pylist()
    for row in rows:
        row["image_path"] = root / row.pop("image")
        meta_keys = ("kind", "prior", "prior_answer", "negative_split", "shape", "query",
                     "n_objects", "scene_follows_prior", "pair_id", "pair_cell")  # fmt: skip
        row["meta"] = {k: row.pop(k) for k in meta_keys}
    return rows


def _rows(
    spec: TaskSpec, split: str, data_root: Path | None, cache_dir: Path | None, embedded: Any
) -> list[dict[str, Any]]:
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' — use one of {', '.join(SPLITS)}")
    if spec.data["source"] == "embedded":
        return _embedded_rows(spec, split, cache_dir, embedded)
    if split in ("dev", "train_twins"):
        raise UserError(
            f"task {spec.name} has no '{split}' split (only the embedded benchmark does) — "
            "use 'test' (or 'eval') or 'train'"
        )
    split = "eval" if split == "test" else split
    if spec.data["source"] != "local":
        raise UserError(
            f"task {spec.name}: unknown data.source '{spec.data['source']}' in {spec.yaml_path}"
        )
    if split == "train" and not spec.data.get("train_split"):
        raise UserError(
            f"task {spec.name} has no training split (its data is the benchmark's test set) — "
            "train on another task, or set metadata.data.train_split in a task of your own"
        )
    from mbpo_bench.data.sources import read_rows

    if split == "train":
        spec = _with_data(spec, split=spec.data["train_split"])
    return read_rows(spec, data_root)


def _with_data(spec: TaskSpec, **changes: Any) -> TaskSpec:
    return dataclasses.replace(spec, data={**spec.data, **changes})


def _first_groups(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The rows of the first `limit` items; rows sharing a `group` (the circular passes of one
    MMBench question) count as one item and are kept or dropped together."""
    kept: set[str] = set()
    out = []
    for row in rows:
        group = str(row.get("group", row["doc_id"]))
        if group not in kept:
            if len(kept) == limit:
                break
            kept.add(group)
        out.append(row)
    return out


def _data_where(spec: TaskSpec, data_root: Path | None) -> str:
    """Where a task's rows come from, for error messages."""
    if spec.data["source"] == "embedded":
        return "the embedded benchmark"
    from mbpo_bench.data.sources import locate

    files = locate(spec, data_root)
    if len(files) == 1:
        return str(files[0])
    return f"{files[0].parent} and {len(files) - 1} more files" if files else "no data files"


def load_items(
    spec_or_name: TaskSpec | str,
    *,
    split: str = "eval",
    limit: int | None = None,
    include_paths: Sequence[str | Path] = (),
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    embedded: EmbeddedConfig | None = None,
) -> list[TaskItem]:
    """The task's items with its prompt applied (`limit` keeps the first n, in file order).

    Embedded tasks use `embedded` (else $MBPO_BENCH_EMBEDDED_CONFIG, else the defaults) and
    generate into `cache_dir` (else the default cache) on first use.
    """
    from mbpo_bench.data.rows import check_rows

    spec = _spec(spec_or_name, include_paths)
    rows = _rows(spec, split, data_root, cache_dir, embedded)
    check_rows(
        spec.name, rows, split=split, where=lambda: _data_where(spec, data_root),
        close_ended=spec.close_ended,
    )  # fmt: skip
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit is {limit} — use a limit of 1 or more, or none for all items")
        rows = _first_groups(rows, limit)
    items = []
    for row in rows:
        options = tuple(str(o) for o in (row.get("options") or ()))
        question = str(row["question"])
        meta = {**(row.get("meta") or {}), "question_raw": question}
        items.append(
            TaskItem(
                task=spec.name,
                doc_id=str(row["doc_id"]),
                question=render_prompt(spec, question, options),
                target=str(row["answer"]),
                verifier=str(row.get("verifier") or spec.verifier or ""),
                image_path=row.get("image_path"),
                options=options,
                meta=meta,
            )
        )
    return items


def training_items(
    names_or_file: str | Path,
    split: str = "train",
    limit: int | None = None,
    include_paths: Sequence[str | Path] = (),
    *,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    embedded: EmbeddedConfig | None = None,
) -> list[TaskItem]:
    """Items of close-ended tasks for trainers: task names / suites, or a YAML file of one task."""
    path = Path(names_or_file)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        spec = spec_from_yaml(path)
        if spec is None:
            raise UserError(f"{path} defines no task (no 'task' key) — pass a task YAML")
        specs = [spec]
    else:
        specs = resolve_tasks(str(names_or_file), include_paths)
    items: list[TaskItem] = []
    for spec in specs:
        if not spec.close_ended:
            raise UserError(
                f"task {spec.name} is open-ended (no verifier) — pick a close-ended task"
            )
        items.extend(
            load_items(
                spec, split=split, limit=limit, include_paths=include_paths,
                data_root=data_root, cache_dir=cache_dir, embedded=embedded,
            )
        )  # fmt: skip
    return items


def aggregate(spec: TaskSpec, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The task's metrics from per-sample rows (what `tasks.common.process_results` returns)."""
    out = {}
    for metric in spec.metrics:
        dotted = spec.aggregations.get(metric, "")
        module, _, fn = dotted.rpartition(".")
        if not module:
            raise UserError(f"task {spec.name}: metric '{metric}' has no aggregation function")
        value = getattr(importlib.import_module(module), fn)(list(rows))
        if isinstance(value, dict):  # per-category scores: metric[label]
            out.update({f"{metric}[{k}]": float(v) for k, v in value.items()})
        else:
            out[metric] = float(value)
    return out


def _check_refs(spec: TaskSpec) -> list[str]:
    """Every `!function` target and the data adapter must import, and a `docs_for_<task>` must
    name this task (another name would silently feed lmms-eval that task's items)."""
    from mbpo_bench.data.task_spec import DOCS_PREFIX, FunctionRef

    named = [(k, v) for k, v in spec.raw.items() if isinstance(v, FunctionRef)]
    refs = [v for _, v in named]
    refs += [FunctionRef(a) for a in spec.aggregations.values() if a]
    if spec.data.get("adapter"):
        refs.append(FunctionRef(spec.data["adapter"]))
    problems = []
    for key, ref in named:
        fn = ref.rpartition(".")[2]
        if fn.startswith(DOCS_PREFIX) and fn[len(DOCS_PREFIX) :] != spec.name:
            problems.append(
                f"{spec.yaml_path}: {key} '{ref}' names task '{fn[len(DOCS_PREFIX) :]}', "
                f"not this task '{spec.name}' — use {DOCS_PREFIX}{spec.name}"
            )
    for ref in refs:
        module, _, fn = ref.rpartition(".")
        try:
            getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError, ValueError) as exc:
            problems.append(f"{spec.yaml_path}: '{ref}' cannot be imported ({exc})")
    return problems


def validate_tasks(include_paths: Sequence[str | Path] = ()) -> tuple[int, list[str]]:
    """(number of valid tasks, problems naming their files) over every task folder."""
    seen: dict[str, Path] = {}
    problems: list[str] = []
    for _, folder in _folders(include_paths):
        if not folder.is_dir():
            problems.append(f"{folder}: task folder not found")
            continue
        for path in sorted(folder.rglob("*.yaml")):
            try:
                spec = spec_from_yaml(path)
            except UserError as exc:
                problems.append(str(exc))
                continue
            if spec is None:
                continue
            if spec.name in seen:
                problems.append(f"{path}: task '{spec.name}' already defined in {seen[spec.name]}")
                continue
            seen[spec.name] = path
            problems.extend(_check_refs(spec))
    return len(seen), problems
