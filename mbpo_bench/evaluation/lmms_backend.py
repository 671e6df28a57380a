"""`mbpo-bench eval --backend lmms-eval`: the image probe through lmms-eval's `simple_evaluate`.

For users who want lmms-eval's own request pipeline (its task construction, `process_results`,
filters) while keeping our results schema: the model is our batched `MbpoLmms` wrapper, the
tasks are ours (TaskManager over the installed `mbpo_bench.tasks` folder plus --include-path,
built-ins excluded so nothing shadows them), and every logged sample is re-scored by the same
verifier row function and written to the same samples.jsonl / results.json as the native runner.

Limits, by construction of lmms-eval: only the `image` probe (lmms-eval has no probes), no
resume (a rerun starts the lmms-eval pass over), and no --skip-bad-items (lmms-eval decodes images
inside its own loop). Requires lmms-eval (`pip install 'mbpo-bench[lmms]'`).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.config import EvalConfig
from mbpo_bench.evaluation.schema import ModelInfo, Results

if TYPE_CHECKING:
    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.evaluation.plan import TaskInfo
    from mbpo_bench.evaluation.schema import SkippedItem
    from mbpo_bench.models.protocol import VisionLanguageModel


def check_config(config: EvalConfig) -> None:
    """What this backend cannot do, refused before anything loads (one line each)."""
    if list(config.probes.names) != ["image"]:
        raise UserError(
            f"the lmms-eval backend runs the image probe only, got --probes "
            f"{','.join(config.probes.names)} — pass --probes image, or use --backend native"
        )
    if config.skip_bad_items:
        raise UserError(
            "--skip-bad-items needs the native backend (lmms-eval decodes images in its own loop) "
            "— drop --backend lmms-eval"
        )
    if importlib.util.find_spec("lmms_eval") is None:
        raise UserError(
            "lmms-eval is not installed — pip install 'mbpo-bench[lmms]', or use --backend native"
        )


def _simple_evaluate(lm: Any, names: list[str], config: EvalConfig) -> dict[str, Any]:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from mbpo_bench.data.registry import add_include_paths, builtin_tasks_dir
    from mbpo_bench.evaluation.lmms_compat import skip_incompatible_filelock_patch

    skip_incompatible_filelock_patch()
    add_include_paths(config.include_paths)  # process_docs inside lmms-eval reads them
    manager = TaskManager(
        include_path=[str(builtin_tasks_dir()), *config.include_paths], include_defaults=False
    )
    out = simple_evaluate(
        model=lm,
        tasks=names,
        task_manager=manager,
        limit=config.limit,
        batch_size=config.batch_size,
        log_samples=True,
        bootstrap_iters=0,
    )
    return dict(out or {})


def run_lmms_eval(
    config: EvalConfig,
    tasks: list[tuple[TaskInfo, list[TaskItem], list[SkippedItem]]],
    vlm: VisionLanguageModel,
    info: ModelInfo,
    *,
    overwrite: bool = False,
) -> Results:
    """Run the tasks' image probe through lmms-eval and write our results files.

    The caller (`api.run_eval`) checks the config (`check_config`) and loads the tasks and the
    model, as for the native runner's `evaluate`: this backend only executes and stores.
    """
    from mbpo_bench.evaluation.batches import generation_row, truncate_at
    from mbpo_bench.evaluation.lmms_plugin import MbpoLmms
    from mbpo_bench.evaluation.plan import plan_task
    from mbpo_bench.evaluation.probes import ProbeInput
    from mbpo_bench.evaluation.runner import write_meta
    from mbpo_bench.evaluation.scoring import recompute_results
    from mbpo_bench.evaluation.store import RESULTS, SampleStore
    from mbpo_bench.models.protocol import Prompt
    from mbpo_bench.runs import RunDir, write_atomic

    run = RunDir.open(Path(config.output), overwrite=overwrite, config=config)
    plans = [
        plan_task(task, items, skipped, ["image"], config.probes.seed)
        for task, items, skipped in tasks
    ]
    store = SampleStore.open(run.path)
    write_meta(store, plans, info, ["image"])
    lm = MbpoLmms(pretrained=config.model, vlm=vlm, batch_size=config.batch_size)
    start = time.perf_counter()
    out = _simple_evaluate(lm, [p.info.name for p in plans], config)
    elapsed = time.perf_counter() - start
    done = store.done()
    for plan in plans:
        rows = []
        for sample in out.get("samples", {}).get(plan.info.name, []):
            item = plan.items[str(sample["doc"]["doc_id"])]
            if (plan.info.name, "image", item.doc_id) in done:
                continue
            response = truncate_at(str(sample["resps"][0][0]), plan.info.generation.until).strip()
            inp = ProbeInput(Prompt(item.question, None), str(item.image_path))
            rows.append(generation_row(plan, "image", item, inp, response))
        store.append(rows)
        store.log_batch(f"lmms-eval-{start}", len(rows), elapsed / max(1, len(plans)), elapsed)
    results = recompute_results(run.path)
    write_atomic(run.path / RESULTS, results.to_json())
    run.finish(results=RESULTS, n_samples=results.n_samples, backend="lmms-eval")
    return results
