"""`mbpo-bench tasks new`: a user's task from an existing one, as one self-contained YAML.

Why not copy the built-in file: it `include:`s `../_template.yaml` relative to the package, so a
copy fails to load anywhere else, and its `process_docs` names the built-in task. Here the
source is read with its includes merged (the `!function` tags kept as tags), renamed, its
`docs_for_` function pointed at the new name, taken out of the built-in suites and lmms-eval
tags, and (for a real benchmark) pointed at a data folder of its own. A README.md beside it
says where the data goes and which columns the row adapter reads; it is also the stub dataset
the template's `dataset_kwargs` name, so lmms-eval loads the task from that folder as is.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import yaml

from mbpo_bench.errors import UserError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Dumper(yaml.SafeDumper):
    pass


def _function(dumper: yaml.SafeDumper, ref: Any) -> yaml.Node:
    return dumper.represent_scalar("!function", str(ref))


def task_yaml(name: str, source: Any) -> dict[str, Any]:
    """The mapping of the new task `name` from the TaskSpec `source` (includes merged)."""
    from mbpo_bench.data.task_spec import DOCS_PREFIX, FunctionRef, read_yaml

    data = {"task": name, **{k: v for k, v in read_yaml(source.yaml_path).items() if k != "task"}}
    data.pop("tag", None)  # lmms-eval groups of the built-in tasks
    for key, value in list(data.items()):
        if isinstance(value, FunctionRef) and value.rpartition(".")[2].startswith(DOCS_PREFIX):
            data[key] = FunctionRef(f"{value.rpartition('.')[0]}.{DOCS_PREFIX}{name}")
    meta = dict(data.get("metadata") or {})
    meta["suites"] = []
    meta.pop("suite_order", None)
    data_cfg = dict(meta.get("data") or {})
    if data_cfg.get("source") == "local":
        data_cfg["dir"] = name  # its own folder under the data root, not the benchmark's
        data_cfg.pop("hub_id", None)  # never fetched from the benchmark's hub dataset
    meta["data"] = data_cfg
    data["metadata"] = meta
    return data


def _adapter_doc(dotted: str) -> str:
    module, _, fn = dotted.rpartition(".")
    try:
        return inspect.getdoc(getattr(importlib.import_module(module), fn)) or ""
    except (ImportError, AttributeError, ValueError):
        return ""


def readme(name: str, source: Any, data_cfg: dict[str, Any]) -> str:
    lines = [
        f"# {name}",
        "",
        f"A task of your own, made with `mbpo-bench tasks new {name} --from {source.name}`.",
        f"`{name}.yaml` is self-contained (no `include:`): edit the prompt, metrics and data",
        "fields there, then check it with `mbpo-bench tasks validate --include-path <this folder>`.",
        "",
        "## Data",
        "",
    ]
    if data_cfg.get("source") == "embedded":
        lines += [
            "The items are generated (the embedded benchmark); nothing to download.",
        ]
    else:
        split = data_cfg.get("split") or "test"
        lines += [
            f"Put parquet files under `$MBPO_BENCH_DATA/{name}/` (or `--data-root DIR` holding "
            f"`{name}/`), named like `data/{split}-00000-of-00001.parquet`. Rows are read by "
            f"the adapter `{data_cfg.get('adapter')}`:",
            "",
            *(
                f"> {line}" if line else ">"
                for line in _adapter_doc(str(data_cfg.get("adapter"))).splitlines()
            ),
            "",
            "Every row needs a unique id, a question and an answer; a bad row stops the run with "
            "one line naming it.",
        ]
        if data_cfg.get("where"):
            lines += ["", f"Only rows matching `where: {data_cfg['where']}` are used."]
        lines += [
            "",
            "To train on this task (`mbpo-bench train ... --data <this folder>/"
            f"{name}.yaml`), add `train_split: <split name>` under `metadata.data`.",
        ]
    lines += [
        "",
        "This file is also the stub dataset the YAML's `dataset_kwargs` name (lmms-eval loads it,",
        "then `process_docs` replaces it with the items): keep it beside the YAML.",
    ]
    return "\n".join(lines) + "\n"


def new_task(name: str, source_name: str, out: Path, include_paths: list[Path]) -> Path:
    """Write `out/<name>.yaml` and `out/README.md`; return the YAML's path."""
    from mbpo_bench.data.registry import get_task, list_tasks, validate_tasks

    if not NAME.match(name):
        raise UserError(
            f"task name '{name}' is not a valid identifier — use letters, digits and _ "
            "(prefix it, e.g. my_pope)"
        )
    if any(spec.name == name for spec in list_tasks(include_paths)):
        raise UserError(f"a task named '{name}' already exists — choose another name")
    source = get_task(source_name, include_paths)
    target, doc = out / f"{name}.yaml", out / "README.md"
    for path in (target, doc):
        if path.exists():
            raise UserError(f"{path} already exists — choose another --out, or move that file")
    data = task_yaml(name, source)
    from mbpo_bench.data.task_spec import FunctionRef

    _Dumper.add_representer(FunctionRef, _function)
    header = (
        f"# {name}: made by `mbpo-bench tasks new {name} --from {source.name}` (self-contained;"
        " see README.md)\n"
    )
    text = header + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    from mbpo_bench.runs import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    write_atomic(doc, readme(name, source, data["metadata"]["data"]))
    _, problems = validate_tasks([*include_paths, out])
    mine = [p for p in problems if str(out) in p]
    if mine:
        raise UserError(f"the new task does not validate: {mine[0]} — please report this")
    return target
