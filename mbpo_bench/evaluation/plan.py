"""The evaluation plan: what a task contributes (`TaskInfo`), which doc ids each probe covers
(`TaskPlan`), and the fixed batches they are cut into (`Batch`).

The plan depends only on the items, the probes, the seed and the batch size, which is what makes
a resumed run identical to an uninterrupted one (runner.py). It sits below the runner, the batch
functions (`batches.py`) and scoring, which all read these types: the data path goes plan ->
batches -> scoring -> store, and the runner drives it, without any module importing its caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.probes import applicable
from mbpo_bench.evaluation.schema import GenerationSettings, SkippedItem
from mbpo_bench.modality.images import mismatched_images

if TYPE_CHECKING:
    from mbpo_bench.data.items import TaskItem

T = TypeVar("T")


@dataclass(frozen=True)
class TaskInfo:
    """What the runner needs of a task spec (and records in results.json)."""

    name: str
    version: str
    prompt_template: str
    verifier: str
    generation: GenerationSettings
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> aggregation, hib
    process_results: str | None = None  # dotted path of the task's lmms-eval process_results
    headline: str = "accuracy"  # the metric of the paper table and of gain / leakage
    judge: dict[str, Any] | None = None  # rubric, judge, prompt hash and source (judged tasks)
    cluster: str | None = None  # meta label of rows the bootstrap resamples together


@dataclass(frozen=True)
class Batch:
    task: str
    probe: str
    index: int
    doc_ids: tuple[str, ...]


@dataclass
class TaskPlan:
    info: TaskInfo
    items: dict[str, TaskItem]  # doc_id -> item (bad items removed)
    skipped: list[SkippedItem]
    probes: dict[str, list[str]]  # probe -> doc ids it covers
    mismatched: dict[str, Path]

    def meta(self) -> dict[str, Any]:
        return {
            "version": self.info.version,
            "prompt_template": self.info.prompt_template,
            "verifier": self.info.verifier,
            "metrics": self.info.metrics,
            "generation": asdict(self.info.generation),
            "n_items": len(self.items),
            "skipped": [asdict(s) for s in self.skipped],
            "probes": {p: sorted(ids) for p, ids in self.probes.items()},
            "headline": self.info.headline,
            "judge": self.info.judge,
            "cluster": self.info.cluster,
        }


def plan_task(
    info: TaskInfo,
    items: Sequence[TaskItem],
    skipped: list[SkippedItem],
    probes: Sequence[str],
    seed: int,
) -> TaskPlan:
    ids = [it.doc_id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(d for d in ids if ids.count(d) > 1)
        raise ValueError(f"task {info.name}: doc id {dup!r} occurs twice")
    mismatched = mismatched_images(sorted(items, key=lambda it: it.doc_id), seed)
    covered = {p: [it.doc_id for it in items if applicable(p, it, mismatched)] for p in probes}
    covered = {p: ids for p, ids in covered.items() if ids}
    return TaskPlan(info, {it.doc_id: it for it in items}, skipped, covered, mismatched)


def _why_uncovered(probe: str, items: Sequence[TaskItem]) -> str:
    from mbpo_bench.evaluation.probes import PROBE_TABLE

    if PROBE_TABLE[probe].needs_mismatched:
        n = len({it.image_path for it in items if it.image_path is not None})
        return f"it needs at least 2 distinct images, the task has {n}"
    return "every item is text-only"


def check_coverage(
    tasks: Sequence[tuple[TaskInfo, Sequence[TaskItem], list[SkippedItem]]],
    probes: Sequence[str],
    seed: int,
) -> None:
    """Refuse a run in which no requested probe applies to any item (it would finish with no
    samples), and say which probes a task leaves out, before the model loads. Why: `plan_task`
    drops a probe that covers no item of a task (`mismatched` with one image, an image probe on
    text-only items), and a run that silently measures nothing is worse than an error."""
    import sys

    missing: list[str] = []
    any_covered = False
    for info, items, skipped in tasks:
        plan = plan_task(info, items, skipped, probes, seed)
        any_covered = any_covered or bool(plan.probes)
        missing += [
            f"probe {p} applies to no item of {info.name} ({_why_uncovered(p, items)})"
            for p in probes
            if p not in plan.probes
        ]
    if not any_covered and missing:
        raise UserError(
            f"nothing to evaluate: {'; '.join(missing)} — raise --limit, or add the image probe"
        )
    for line in missing:
        print(f"warning: {line} — its metrics are absent from results.json", file=sys.stderr)


def batches(
    plan: TaskPlan,
    batch_size: int,
    *,
    cost: Callable[[str, TaskItem], tuple[int, int]] | None = None,
    max_tokens: int | None = None,
) -> list[Batch]:
    """Fixed batches per probe over doc ids bucketed by length.

    `cost(probe, item)` is the (image tokens, text tokens) of the item's prompt under the probe.
    Order: image tokens (with `cost`: a Qwen image's count follows its size), then question
    length, then doc id; with a constant image-token count (LLaVA, the embedded benchmark) this
    is the question-length order. A batch holds at most `batch_size` prompts and, with
    `max_tokens`, at most that many prompt tokens (image + text; one prompt at least), so a
    batch of large images is smaller than a batch of small ones. Deterministic: a resumed run
    gets the same batches.
    """
    out = []
    for probe, ids in plan.probes.items():

        def size(d: str, probe: str = probe) -> tuple[int, int]:
            return (0, 0) if cost is None else cost(probe, plan.items[d])

        sizes = {d: size(d) for d in ids}
        order = sorted(ids, key=lambda d: (sizes[d][0], len(plan.items[d].question), d))
        chunks = token_chunks(order, [sum(sizes[d]) for d in order], batch_size, max_tokens)
        out += [Batch(plan.info.name, probe, i, tuple(c)) for i, c in enumerate(chunks)]
    return out


def token_chunks(
    order: list[T], tokens: list[int], batch_size: int, max_tokens: int | None
) -> list[list[T]]:
    """`order` cut in turn into chunks of at most `batch_size` entries and, with `max_tokens`,
    at most that many `tokens` (one entry at least): the rule of `batches`, which the GPU
    benchmark also applies to show what a batch of large images becomes."""
    chunks: list[list[T]] = [[]]
    total = 0
    for d, n in zip(order, tokens, strict=True):
        full = len(chunks[-1]) == batch_size or (max_tokens is not None and total + n > max_tokens)
        if chunks[-1] and full:
            chunks.append([])
            total = 0
        chunks[-1].append(d)
        total += n
    return [c for c in chunks if c]
