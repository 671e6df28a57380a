"""Task YAML in lmms-eval's format, parsed without lmms-eval: `TaskSpec` and its loader.

The same file serves two readers. lmms-eval's TaskManager (include_path = the installed tasks
folder) builds a task from the standard keys; our registry reads the standard keys it needs
(`task`, `generation_kwargs`, `metric_list`, `output_type`) plus our own fields under
`metadata:` (lmms-eval ignores them):

    metadata:
      version: 1
      verifier: yesno            # a name in mbpo_bench.tasks.verifiers.VERIFIERS, or null
      prompt: "{question}\\nAnswer with yes or no."   # fields: question, options, choices
      suites: [hallucination]    # the only source of suites (the registry has no list)
      suite_order: 1             # optional: position within its suites (unset: after, by name)
      judge: mmvet               # optional: graded by a judge with this rubric (open-ended tasks)
      headline: mmvet_score      # optional: the paper table's metric (default: accuracy)
      cluster: question_index    # optional: rows sharing this meta label (or, for a list of
                                 # labels, these values together) are resampled together
      data: {source: local | embedded, ...}   # where the items come from (see sources.py)

`!function a.b.c` tags are kept as `FunctionRef("a.b.c")` strings: parsing never imports
anything, so `tasks list` stays fast and a broken YAML is reported by file name. `include:` is
honoured like lmms-eval does (relative to the including file, later keys win).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mbpo_bench.errors import UserError

# `process_docs: !function mbpo_bench.tasks.common.docs_for_<task>` loads <task>'s items; the
# registry's `tasks validate` checks that <task> is the YAML's own task.
DOCS_PREFIX = "docs_for_"


class FunctionRef(str):
    """The dotted path of a `!function` tag, unresolved."""


class _Loader(yaml.SafeLoader):
    pass


def _function(loader: yaml.SafeLoader, node: yaml.Node) -> FunctionRef:
    return FunctionRef(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("!function", _function)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: str
    verifier: str | None  # None for open-ended tasks (CHAIR)
    prompt: str
    generation: dict[str, Any]
    data: dict[str, Any]
    metrics: tuple[str, ...]
    aggregations: dict[str, str]  # metric name -> dotted path of its aggregation function
    suites: tuple[str, ...]
    yaml_path: Path
    output_type: str = "generate_until"
    description: str = ""
    suite_order: int | None = None  # position within its suites; None: after the ordered ones
    judge: str | None = None  # a rubric in mbpo_bench.judges.rubrics.RUBRICS (MM-Vet, MMHal)
    headline: str | None = None  # the metric the paper table and gain / leakage use
    # item meta label(s) whose rows the bootstrap resamples together; several joined by ","
    cluster: str | None = None
    origin: str = field(default="", compare=False)  # "built-in", "plugin NAME" or the folder
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def close_ended(self) -> bool:
        return self.verifier is not None

    @property
    def max_new_tokens(self) -> int:
        return int(self.generation.get("max_new_tokens", 16))


def read_yaml(path: Path) -> dict[str, Any]:
    """A task YAML as a mapping, with `include:` merged; errors name the file."""
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise UserError(
            f"task YAML {path} cannot be read: {first} — fix or remove the file"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"task YAML {path} must hold a mapping — fix the file")
    includes = data.pop("include", None)
    if includes is None:
        return data
    merged: dict[str, Any] = {}
    for inc in [includes] if isinstance(includes, str) else list(includes):
        target = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        if not target.is_file():
            raise UserError(
                f"task YAML {path} includes {inc}, which does not exist — fix 'include'"
            )
        merged.update(read_yaml(target))
    merged.update(data)
    return merged


def spec_from_yaml(path: Path) -> TaskSpec | None:
    """The TaskSpec of a task YAML, or None for a YAML that defines no task (a template)."""
    data = read_yaml(path)
    name = data.get("task")
    if name is None:
        return None
    meta = data.get("metadata") or {}
    where = f"task YAML {path}"
    if not isinstance(name, str) or not isinstance(meta, dict):
        raise UserError(f"{where}: 'task' must be a string and 'metadata' a mapping — fix the file")
    metric_list = data.get("metric_list") or []
    try:
        metrics = tuple(str(m["metric"]) for m in metric_list)
        aggregations = {str(m["metric"]): str(m.get("aggregation", "")) for m in metric_list}
    except (TypeError, KeyError) as exc:
        raise UserError(
            f"{where}: every metric_list entry needs a 'metric' — fix the file"
        ) from exc
    verifier = meta.get("verifier")
    if verifier is not None:
        from mbpo_bench.tasks.verifiers import get_verifier

        get_verifier(str(verifier))
    judge = meta.get("judge")
    if judge is not None:
        from mbpo_bench.judges.rubrics import RUBRICS

        if str(judge) not in RUBRICS:
            raise UserError(
                f"{where}: unknown judge rubric '{judge}' — use one of {', '.join(RUBRICS)}"
            )
    data_cfg = meta.get("data")
    if not isinstance(data_cfg, dict) or "source" not in data_cfg:
        raise UserError(f"{where}: metadata.data must be a mapping with 'source' — fix the file")
    suites = meta.get("suites") or []
    suite_order = meta.get("suite_order")
    if suite_order is not None and (
        isinstance(suite_order, bool) or not isinstance(suite_order, int)
    ):
        raise UserError(f"{where}: metadata.suite_order must be an integer — fix the file")
    return TaskSpec(
        name=name,
        version=str(meta.get("version", "0")),
        verifier=None if verifier is None else str(verifier),
        prompt=str(meta.get("prompt", "{question}")),
        generation=dict(data.get("generation_kwargs") or {}),
        data=dict(data_cfg),
        metrics=metrics,
        aggregations=aggregations,
        suites=tuple(str(s) for s in ([suites] if isinstance(suites, str) else suites)),
        yaml_path=path,
        output_type=str(data.get("output_type", "generate_until")),
        description=str(meta.get("description", "")),
        suite_order=suite_order,
        judge=None if judge is None else str(judge),
        headline=None if meta.get("headline") is None else str(meta["headline"]),
        cluster=_cluster(meta.get("cluster"), where),
        raw=data,
    )


def _cluster(value: Any, where: str) -> str | None:
    """`metadata.cluster`: one meta label or a list of them, kept as one string joined by ","
    (the form results files record). Why a list: a group can be named by several labels
    together, as HallusionBench's question sets are by category, subcategory and set id."""
    if value is None:
        return None
    labels = [value] if isinstance(value, str) else value
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(v, str) and v and "," not in v for v in labels)
    ):
        raise UserError(
            f"{where}: metadata.cluster must be a meta label or a list of them — fix the file"
        )
    return ",".join(labels)
