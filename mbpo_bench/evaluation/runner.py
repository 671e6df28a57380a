"""The batched, resumable evaluation loop behind `mbpo-bench eval`.

Design decision: our own runner, with lmms-eval as a two-way integration. The GPU machine has no
lmms-eval, and lmms-eval has neither modality probes nor resume after a crash, so `mbpo-bench
eval` runs this loop over `TaskItem`s from our registry (which reads the same lmms-eval-format
task YAML) and scores them with the same verifiers that `process_results` calls inside lmms-eval.
The other direction: `lmms_plugin.py` is an lmms-eval model (entry point `mbpo`), so the plain
`lmms-eval --model mbpo ...` command runs our batched wrapper, and `--backend lmms-eval`
(`lmms_backend.py`) sends the image probe through lmms-eval's `simple_evaluate` where installed.

How a run goes (`evaluate`):
1. Plan (`plan.py`, below this module and `batches.py`, which both read its types): per task and probe, the applicable doc ids, cut into fixed batches of prompts sorted by
   length (less padding). The plan depends only on the items, probes and batch size.
2. Execute: each batch not fully in `samples.jsonl` runs IN FULL (same composition as in an
   uninterrupted run, so padding and hence every number is identical) and appends only its
   missing rows. A kill -9 loses at most the batch in flight.
3. Score: `recompute_results` rebuilds the results from the files; results.json is written
   atomically and status.json marked finished only after every planned sample exists.
Generation is seeded per batch (stable crc32 seeds), so sampling settings resume identically too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.evaluation.config import EvalConfig
from mbpo_bench.evaluation.plan import TaskInfo, TaskPlan, batches, plan_task
from mbpo_bench.evaluation.probes import BACKBONE, run_probes
from mbpo_bench.evaluation.schema import ModelInfo, Results, SkippedItem
from mbpo_bench.evaluation.store import RESULTS, SampleStore

if TYPE_CHECKING:
    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.models.protocol import VisionLanguageModel
    from mbpo_bench.runs import RunDir


def check_images(
    items: Sequence[TaskItem], *, skip: bool
) -> tuple[list[TaskItem], list[SkippedItem]]:
    """Decode every distinct image once; a bad one fails the run unless `skip` (then dropped)."""
    from mbpo_bench.data.images import BadImageError, load_rgb

    bad: dict[Path, str] = {}
    checked: set[Path] = set()
    for it in items:
        if it.image_path is None or it.image_path in checked:
            continue
        checked.add(it.image_path)
        try:
            load_rgb(it.image_path, item=f"{it.task}/{it.doc_id}")
        except BadImageError as exc:
            if not skip:
                raise
            bad[it.image_path] = str(exc)
    good = [it for it in items if it.image_path not in bad]
    skipped = [SkippedItem(it.doc_id, bad[it.image_path]) for it in items if it.image_path in bad]
    return good, skipped


def write_meta(
    store: SampleStore, plans: Sequence[TaskPlan], model: ModelInfo, probes: Sequence[str]
) -> None:
    store.write_meta(
        {
            "model": asdict(model),
            "probes": list(probes),
            "tasks": {p.info.name: p.meta() for p in plans},
        }
    )


def prompt_cost(vlm: Any) -> Callable[[str, TaskItem], tuple[int, int]] | None:
    """(image tokens, question tokens) of an item's prompt for `plan.batches`' buckets.

    Image tokens come from the image file's header (no decode) and the model's input protocol
    (a Qwen image's count follows its size); prompts without an image (blind, backbone) have
    none. None for a model that cannot say (test doubles): question-length order only.
    """
    if not hasattr(vlm, "processed_size"):
        return None
    from PIL import Image

    images: dict[Path, int] = {}
    tok = getattr(vlm, "tokenizer", None)

    def cost(probe: str, item: TaskItem) -> tuple[int, int]:
        text = len(tok(item.question, add_special_tokens=False)["input_ids"]) if tok else 0
        if probe in ("blind", BACKBONE) or item.image_path is None:
            return 0, text
        path = item.image_path
        if path not in images:
            with Image.open(path) as img:  # reads the header: the size, not the pixels
                images[path] = vlm.num_image_tokens(vlm.processed_size(img))
        return images[path], text

    return cost


def execute(
    store: SampleStore,
    plans: Sequence[TaskPlan],
    vlm: VisionLanguageModel,
    config: EvalConfig,
    *,
    progress: bool = True,
    backbone: Callable[[], Any] | None = None,
) -> int:
    """Run every batch that still misses rows; return the number of rows appended.

    Batches of the `backbone` probe go to the text-only LM that `backbone()` loads (once, and
    only when such a batch is still to do, so a resumed run does not reload it for nothing).

    Under torchrun the batches are dealt round-robin over the ranks; after each round rank 0
    gathers the rows in rank order (= the one-process order) and alone appends them.
    """
    from mbpo_bench import parallel
    from mbpo_bench.evaluation.batches import run_batch
    from mbpo_bench.evaluation.loader import batch_inputs, default_workers
    from mbpo_bench.evaluation.progress import eval_progress

    done = store.done()
    work = [
        (plan, b, [d for d in b.doc_ids if (b.task, b.probe, d) not in done])
        for plan in plans
        for b in batches(
            plan, config.batch_size, cost=prompt_cost(vlm), max_tokens=config.max_batch_tokens
        )
    ]
    work = [(plan, b, todo) for plan, b, todo in work if todo]
    session = f"{datetime.now(UTC).isoformat(timespec='seconds')}-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    appended = 0
    main = parallel.is_main()
    models: dict[str, Any] = {}

    def model_for(probe: str) -> Any:
        if probe != BACKBONE:
            return vlm
        if BACKBONE not in models:
            if backbone is None:
                raise ValueError("backbone batches planned without a backbone model")
            models[BACKBONE] = backbone()
        return models[BACKBONE]

    rounds = parallel.round_robin(len(work))
    ours = [work[m] for m in rounds if m is not None]
    # batch k+1's images prepared in worker processes while the model runs batch k (loader.py);
    # 0 workers: every batch prepares its own inputs, as it always did
    workers = default_workers(str(getattr(vlm, "device", "cpu")), config.input_workers)
    workers = workers if hasattr(vlm, "geometry") else 0  # test doubles have no image step
    inputs = batch_inputs(
        vlm,
        [(plan, b) for plan, b, _ in ours if b.probe != BACKBONE],
        config,
        workers=workers,
    )
    with eval_progress(sum(len(t) for _, _, t in work), enabled=progress and main) as advance:
        for mine in rounds:
            new: list[dict[str, Any]] = []
            compute = 0.0
            if mine is not None:
                plan, batch, todo = work[mine]
                t0 = time.perf_counter()
                prompts = None if batch.probe == BACKBONE else next(inputs)
                rows = run_batch(model_for(batch.probe), plan, batch, config, prompts)
                compute = time.perf_counter() - t0
                wanted = set(todo)
                new = [r for r in rows if r["doc_id"] in wanted]
            for index, (rows_k, compute_k) in parallel.gather_round(mine, (new, compute)):
                if main:
                    store.append(rows_k)
                    store.log_batch(session, len(rows_k), compute_k, time.perf_counter() - start)
                appended += len(rows_k)
                advance(f"{work[index][1].task} · {work[index][1].probe}", len(rows_k))
    return appended


def evaluate(
    run: RunDir,
    tasks: Sequence[tuple[TaskInfo, Sequence[TaskItem], list[SkippedItem]]],
    vlm: VisionLanguageModel,
    model: ModelInfo,
    config: EvalConfig,
    *,
    progress: bool = True,
    backbone: Callable[[], Any] | None = None,
) -> Results:
    """Plan, execute (resuming), judge (judge-scored tasks) and score; write results.json and
    mark the run finished.

    Under torchrun every rank plans the same batches and runs its share; rank 0 alone touches
    the run folder, and the other ranks read the results it wrote.
    """
    from mbpo_bench import parallel
    from mbpo_bench.evaluation.schema import Results
    from mbpo_bench.evaluation.scoring import recompute_results
    from mbpo_bench.runs import write_atomic

    probes = run_probes(config.probes.names, bool(config.backbone))
    plans = [
        plan_task(info, items, skipped, probes, config.probes.seed)
        for info, items, skipped in tasks
    ]
    main = parallel.is_main()
    store = SampleStore.open(run.path) if main else SampleStore(run.path)
    if main:
        write_meta(store, plans, model, probes)
    parallel.barrier()  # the others read samples.jsonl only after rank 0 cut a torn tail
    n = execute(store, plans, vlm, config, progress=progress, backbone=backbone)
    run.log(f"appended {n} samples")
    judged = {p.info.name: p.info.judge for p in plans if p.info.judge}
    if main and judged:
        from mbpo_bench.judges import make_judge
        from mbpo_bench.judges.stage import run_stage

        judge = make_judge(config.judge, device=config.runtime.device, dtype=config.runtime.dtype,
                           online=config.online)  # fmt: skip
        sent = run_stage(run.path, store.rows(), judged, judge, config.judge)
        run.log(f"judge {config.judge.spec}: {sent} requests")
    if main:
        results = recompute_results(run.path)
        write_atomic(run.path / RESULTS, results.to_json())
        run.finish(
            results=RESULTS, n_samples=results.n_samples, items_skipped=results.items_skipped
        )
    parallel.barrier()
    return results if main else Results.read(run.path / RESULTS)
