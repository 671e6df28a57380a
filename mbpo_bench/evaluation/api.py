"""`run_eval(config)`: what `mbpo-bench eval` calls. Resolve, load, check, then run.

Order matters for the user: everything that can fail fast and cheaply (unknown task, missing data,
a bad image, a finished run folder) fails BEFORE the model is loaded, each as one line. Model
loading errors become one line too, and the model loads before the run folder is created, so a
typo in --model leaves no half-made folder whose saved config would block the corrected command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError, exception_line
from mbpo_bench.evaluation.config import EvalConfig
from mbpo_bench.evaluation.hashing import content_hash
from mbpo_bench.evaluation.probes import parse_probes, run_probes
from mbpo_bench.evaluation.schema import GenerationSettings, ModelInfo, Results
from mbpo_bench.judges.config import JudgeConfig

if TYPE_CHECKING:
    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.data.task_spec import TaskSpec
    from mbpo_bench.evaluation.plan import TaskInfo
    from mbpo_bench.evaluation.schema import SkippedItem
    from mbpo_bench.models.protocol import VisionLanguageModel

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
ONLINE_VARIABLE = "MBPO_BENCH_ONLINE"


def set_offline(online: bool) -> None:
    """Nothing touches a hub unless the user asked (`--online`); set before hub imports.

    `--online` also sets MBPO_BENCH_ONLINE=1, the registry's switch for downloading task data.
    """
    if online:
        os.environ[ONLINE_VARIABLE] = "1"
        return
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"


def task_info(spec: TaskSpec, judge: JudgeConfig | None = None) -> TaskInfo:
    """Our record of a registry TaskSpec: version, prompt template, verifier, generation, metrics,
    headline metric and, for a judge-scored task, how it is judged (rubric, judge, prompt hash)."""
    from mbpo_bench.evaluation.plan import TaskInfo

    gen = spec.generation
    temperature = float(gen.get("temperature") or 0.0)
    do_sample = bool(gen.get("do_sample", False)) and temperature > 0
    until = gen.get("until") or []
    metrics: dict[str, dict[str, Any]] = {}
    for entry in spec.raw.get("metric_list") or []:
        name = str(entry["metric"])
        hib = entry.get("higher_is_better", True)
        metrics[name] = {
            "aggregation": spec.aggregations.get(name) or None,
            "higher_is_better": None if hib is None else bool(hib),
        }
    process = spec.raw.get("process_results")
    return TaskInfo(
        name=spec.name,
        version=spec.version,
        prompt_template=spec.prompt,
        verifier=spec.verifier or "",
        generation=GenerationSettings(
            max_new_tokens=spec.max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_p=float(gen.get("top_p") or 1.0),
            until=[until] if isinstance(until, str) else [str(u) for u in until],
        ),
        metrics=metrics,
        process_results=str(process) if process else None,
        headline=spec.headline or "accuracy",
        cluster=spec.cluster,
        judge=_judging(spec, judge),
    )


def _judging(spec: TaskSpec, judge: JudgeConfig | None) -> dict[str, Any] | None:
    if spec.judge is None:
        return None
    from mbpo_bench.judges.stage import task_judging

    return task_judging(spec.name, spec.judge, judge or JudgeConfig())


def load_tasks(config: EvalConfig) -> list[tuple[TaskInfo, list[TaskItem], list[SkippedItem]]]:
    """Resolve names or a suite, load items (limit, include paths, data root), check images."""
    from mbpo_bench.data import registry
    from mbpo_bench.evaluation.runner import check_images

    include = tuple(Path(p) for p in config.include_paths)
    data_root = Path(config.data_root) if config.data_root else None
    out = []
    for spec in registry.resolve_tasks(config.tasks, include):
        items = registry.load_items(
            spec, split=config.split, limit=config.limit, include_paths=include,
            data_root=data_root,
        )  # fmt: skip
        good, skipped = check_images(items, skip=config.skip_bad_items)
        if not good:  # an evaluation of nothing must not finish as if it measured something
            raise UserError(
                f"task {spec.name}: all {len(skipped)} items were skipped as bad (first: "
                f"{skipped[0].doc_id}: {skipped[0].reason}) — fix the images, or drop the task"
            )
        out.append((task_info(spec, config.judge), good, skipped))
    return out


def load_vlm(config: EvalConfig) -> VisionLanguageModel:
    """Load the model (and adapter); any failure becomes one line naming the model.

    Errors the model layer already words (UserError) pass through; anything else is summarised
    in one line and chained, so `--debug`-style tracebacks remain available to Python callers.
    """
    from mbpo_bench.models import load_model

    try:
        return load_model(
            config.model,
            adapter=config.adapter,
            dtype=config.runtime.dtype,
            device=config.runtime.device,
            trust_remote_code=config.trust_remote_code,
            local_files_only=not config.online,
            protocol=config.runtime.protocol,
            min_pixels=config.runtime.min_pixels,
            max_pixels=config.runtime.max_pixels,
        )
    except UserError:
        raise
    except Exception as exc:
        hint = "" if config.online else "; it is not fetched from a hub without --online"
        raise UserError(
            f"model '{config.model}' failed to load ({exception_line(exc, 200)}) — check the "
            f"path or hub id{hint}"
        ) from exc


def _hash(path_or_id: str | None) -> str | None:
    """Content hash of a folder, or of a hub id's cached snapshot (never downloads)."""
    if path_or_id is None:
        return None
    from mbpo_bench.models.loading import resolve_folder

    try:
        return content_hash(resolve_folder(path_or_id, local_files_only=True))
    except UserError:
        return None


def model_info(config: EvalConfig, vlm: VisionLanguageModel) -> ModelInfo:
    dtype = getattr(getattr(vlm, "model", None), "dtype", None)
    return ModelInfo(
        id=config.model,
        family=getattr(vlm, "family", None),
        content_hash=_hash(config.model),
        adapter_id=config.adapter,
        adapter_hash=_hash(config.adapter),
        dtype=str(dtype).replace("torch.", "") if dtype is not None else None,
        device=str(vlm.device),
    )


def check_run_protocol(config: EvalConfig) -> None:
    """Refuse a protocol the model's family does not define, before any run folder exists.

    A model that cannot be resolved is left to `load_vlm`, which words that error.
    """
    from mbpo_bench.models.families import check_protocol
    from mbpo_bench.models.loading import validate_model

    try:
        family = validate_model(config.model)
    except UserError:
        return
    check_protocol(family, config.runtime.protocol)


def run_eval(
    config: EvalConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    show_config: bool | None = None,
) -> Results:
    """Evaluate `config.model` on `config.tasks` with the probes; returns the written results.

    With `progress`, a progress bar runs on stderr and (unless `show_config` is False) the
    resolved config is printed once the tasks are known to be valid.
    """
    set_offline(config.online)
    parse_probes(config.probes.names)  # unknown probe names fail first
    if not config.model:
        raise UserError("no model given — pass --model PATH_OR_HUB_ID")
    check_run_protocol(config)
    from mbpo_bench import parallel

    if config.backend == "lmms-eval":
        from mbpo_bench.evaluation.lmms_backend import check_config, run_lmms_eval

        if config.answer_mode != "generate":
            raise UserError(
                f"--backend lmms-eval generates every answer, it has no answer mode "
                f"'{config.answer_mode}' — drop --answer-mode, or use the native backend"
            )
        if config.split == "dev":
            raise UserError(
                "--backend lmms-eval evaluates the reported (test) split only — use the native "
                "backend for split=dev"
            )
        if config.runtime.compile_layers:
            raise UserError(
                "--compile applies to the native backend's prefill and scoring passes, not to "
                "--backend lmms-eval — drop --compile, or use the native backend"
            )
        if config.backbone or config.judge.spec:
            raise UserError(
                "--backend lmms-eval runs neither a judge nor the --backbone probe — drop "
                "--judge / --backbone, or use the native backend"
            )
        if parallel.world_size() > 1:
            raise UserError(
                "--backend lmms-eval runs in one process — launch it without torchrun, or use "
                "the native backend for data-parallel evaluation"
            )

        check_config(config)
        tasks = load_tasks(config)
        judged = [info.name for info, _, _ in tasks if info.judge]
        if judged:
            raise UserError(
                f"task {judged[0]} is scored by a judge, which --backend lmms-eval does not run "
                "— use the native backend with --judge"
            )
        vlm = load_vlm(config)
        return run_lmms_eval(config, tasks, vlm, model_info(config, vlm), overwrite=overwrite)
    from mbpo_bench.evaluation.plan import check_coverage
    from mbpo_bench.evaluation.runner import evaluate
    from mbpo_bench.runs import RunDir

    tasks = load_tasks(config)
    check_judged(config, tasks)
    check_backbone(config)
    check_coverage(
        tasks, run_probes(config.probes.names, bool(config.backbone)), config.probes.seed
    )
    progress = progress and parallel.is_main()  # one config print and progress bar, rank 0's
    if progress if show_config is None else (show_config and parallel.is_main()):
        from mbpo_bench.config import print_config

        print_config(config, "eval")
    import torch  # also so that env.json records the device

    output = Path(config.output)
    if RunDir(output).finished and not overwrite:
        RunDir.open(output, overwrite=False, config=config)  # raises: a finished run is kept
    if config.runtime.threads is not None:
        torch.set_num_threads(config.runtime.threads)
    parallel.setup(config.runtime.device)  # under torchrun: this rank's GPU and the process group
    vlm = load_vlm(config)  # before the folder exists: a typo in --model leaves nothing behind
    run = RunDir.open(output, overwrite=overwrite, config=config)
    # only rank 0 writes the model info: the other ranks skip hashing the model folder
    info = model_info(config, vlm) if parallel.is_main() else ModelInfo(id=config.model)
    backbone = None
    if config.backbone:
        from mbpo_bench.models.text_lm import load_text_lm

        name = config.backbone

        def backbone() -> Any:
            return load_text_lm(name, device=config.runtime.device, dtype=config.runtime.dtype,
                                local_files_only=not config.online,
                                trust_remote_code=config.trust_remote_code)  # fmt: skip

    return evaluate(run, tasks, vlm, info, config, progress=progress, backbone=backbone)


def check_judged(config: EvalConfig, tasks: list[Any]) -> None:
    """Judge-scored tasks need a judge that can answer: checked before the model loads."""
    judged = [info.name for info, _, _ in tasks if info.judge]
    if not judged:
        return
    from mbpo_bench.judges import check_judge

    check_judge(config.judge, judged, online=config.online)


def check_backbone(config: EvalConfig) -> None:
    """A `--backbone` that is neither a folder nor a cached hub id fails before anything loads."""
    if config.backbone:
        from mbpo_bench.models.loading import resolve_folder

        resolve_folder(config.backbone, local_files_only=not config.online)
