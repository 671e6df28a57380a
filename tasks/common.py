"""Glue between our tasks and lmms-eval, and the per-sample row every metric reads.

Every task YAML loads a one-line stub file (its folder's README.md through the `text` builder)
and replaces it in `process_docs` with the items our registry loads: lmms-eval and our own
evaluation and trainers then read the same items, from the same data root, with the same prompt
and the same error messages. `process_docs: !function mbpo_bench.tasks.common.docs_for_<task>`
resolves through this module's `__getattr__`, so a task needs no Python of its own. User tasks
outside the package are found through $MBPO_BENCH_INCLUDE_PATH (os.pathsep-separated folders),
which the registry reads.

Standard library at import time; datasets and PIL are imported inside the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from mbpo_bench.tasks.verifiers import VERIFIERS, verify


def score_row(
    verifier: str,
    response: str,
    target: str,
    options: Sequence[str] = (),
    *,
    doc_id: str = "",
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One scored sample: what metrics aggregate (the target in its canonical form)."""
    verdict = verify(verifier, response, target, options)
    return {
        "doc_id": doc_id,
        "response": response,
        "parsed": verdict.parsed,
        "target": VERIFIERS[verifier].canonical(target, tuple(options)),
        "correct": verdict.correct,
        "score": verdict.score,
        "format": verdict.components["format"],
        "meta": dict(meta or {}),
    }


def item_to_doc(item: Any, metrics: Sequence[str]) -> dict[str, Any]:
    """A TaskItem as an lmms-eval doc (flat, arrow-friendly: meta travels as JSON)."""
    return {
        "task": item.task,
        "doc_id": item.doc_id,
        "prompt": item.question,
        "answer": item.target,
        "options": list(item.options),
        "image_path": str(item.image_path) if item.image_path is not None else "",
        "verifier": item.verifier,
        "metrics": list(metrics),
        "meta": json.dumps(item.meta, default=str, sort_keys=True),
    }


def process_docs(dataset: Any, *, task: str) -> Any:
    """Replace the stub dataset by the task's items (lmms-eval `process_docs`)."""
    import datasets

    from mbpo_bench.data.registry import get_task, load_items

    del dataset
    spec = get_task(task)  # user task folders: $MBPO_BENCH_INCLUDE_PATH, read by the registry
    docs = [item_to_doc(item, spec.metrics) for item in load_items(spec)]
    return datasets.Dataset.from_list(docs)


def __getattr__(name: str) -> Callable[[Any], Any]:
    from mbpo_bench.data.task_spec import DOCS_PREFIX  # the YAML format's name, below this glue

    if name.startswith(DOCS_PREFIX):
        return partial(process_docs, task=name[len(DOCS_PREFIX) :])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    from pathlib import Path

    from mbpo_bench.data.images import load_rgb

    if not doc.get("image_path"):
        return []
    return [load_rgb(Path(doc["image_path"]), item=f"{doc['task']}/{doc['doc_id']}")]


def doc_to_text(
    doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None
) -> str:
    del lmms_eval_specific_kwargs
    return str(doc["prompt"])


def doc_to_target(doc: dict[str, Any]) -> str:
    return str(doc["answer"])


def doc_meta(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("meta") or {}
    return json.loads(meta) if isinstance(meta, str) else dict(meta)


def process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, dict[str, Any]]:
    """lmms-eval `process_results`: one scored row, handed to every metric of the task."""
    response = results[0] if results else ""
    row = score_row(
        doc["verifier"], str(response), doc["answer"], doc.get("options") or (),
        doc_id=doc["doc_id"], meta=doc_meta(doc),
    )  # fmt: skip
    return {metric: row for metric in doc["metrics"]}
