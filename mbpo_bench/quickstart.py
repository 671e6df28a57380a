"""`mbpo-bench quickstart`: the whole pipeline, offline, on the embedded benchmark.

Stages, each a run folder under `output` (`output/seed<k>/` with `--seeds N` > 1), so every
number in the report can be re-derived:
1. `base/`: a tiny LLaVA built offline and fine-tuned (SFT, full) on the biased training split
   (prior strength 0.9): a model that leans on the language prior. Cached under the mbpo-bench
   cache keyed by everything that shapes it (including the benchmark's generator version).
2. the arms (`arms`), each from the base:
   - `mbpo`: MBPO (IIG selection + PGD hard negatives, then hybrid GRPO);
   - `sft_mined`: SFT on the SAME mined items (mbpo/pairs.parquet), matched to `mbpo` on
     optimizer steps, prompts per step and learning-rate schedule (same OptimConfig);
   - `mbpo_twins`: the twin-pair variant (trainers/twins.py): mines from every counter-prior
     training item that has a prior twin and trains each mined item with its twin;
   - `sft_twins`: SFT on the same twins (mbpo_twins/pairs.parquet + twins), matched likewise;
   - not defaults, matched to `mbpo` the same way: `grpo_mined` (GRPO on the same online prompts,
     no offline negatives), `dpo` and `dpo_mdpo` (DPO, and DPO + mDPO's conditional term, on
     the same pairs; a step = as many pairs as MBPO has prompts), `sft_balanced` (SFT on the
     mined items plus as many question-matched prior-consistent training items);
   - `sft_time` (not a default): the old control, continued SFT on the full biased split for
     MBPO's wall time with the base's lr and a restarted warm-up: NOT matched, kept to compare.
3. `eval_<arm>/`: `mbpo-bench eval` on the embedded suite's `split` (`test` for reports, `dev`
   for choosing settings) with the probes.
4. The report (`quickstart_report`): findings over seeds (the unit of inference), then the
   tables of `mbpo-bench report` for the first seed.
   The report goes to `output/report.md` (beside its figures) unless `report` names another
   file, so a quickstart run inside the checkout never rewrites the committed
   `reports/quickstart.md`.

Every long stage shows a progress bar (rate, ETA), and a one-line plan at the start gives the
expected duration on this machine (`plan.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.config import dump_yaml, to_dict
from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.config import EvalConfig, ProbeConfig
from mbpo_bench.quickstart_config import (
    ARMS,
    MATCHED,
    QuickstartConfig,
    seed_dirs,
)
from mbpo_bench.runs import write_atomic, write_json_atomic

if TYPE_CHECKING:
    from mbpo_bench.trainers.loop import RuntimeConfig
    from mbpo_bench.trainers.mbpo import MBPOConfig


def base_fingerprint(config: QuickstartConfig) -> str:
    """Everything that shapes the base model: family, size, seed, SFT config, package version,
    the embedded benchmark (its config and generator version, via the data fingerprint), and
    the torch CPU thread count it trains with. Why threads: a CPU matmul's summation order
    depends on them (1 vs 2 threads give gradients that differ in the last bits), so over a few
    hundred steps the base's weights do too, and a cached base from another thread count would
    not reproduce a report made with `--threads N`."""
    import torch

    from mbpo_bench import __version__
    from mbpo_bench.data.registry import embedded_config_from_env

    threads = config.threads if config.threads is not None else torch.get_num_threads()
    text = json.dumps(
        {
            "family": config.family,
            "size": config.size,
            "seed": config.seed,
            "threads": threads,
            "sft": to_dict(config.base),
            "v": __version__,
            "data": embedded_config_from_env().fingerprint(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]quickstart[/] {message}")


def report_path(config: QuickstartConfig) -> Path:
    """Where the report goes: `report` when given, else inside the quickstart's own folder."""
    return config.report if config.report is not None else config.output / "report.md"


def _runtime(runtime: RuntimeConfig, config: QuickstartConfig) -> RuntimeConfig:
    """A copy of a stage's runtime with the quickstart's seed, thread count and progress (the
    thread count is part of the base's fingerprint: see `base_fingerprint`)."""
    return dataclasses.replace(
        runtime, seed=config.seed, threads=config.threads, progress=config.progress
    )


def base_cache_dir(config: QuickstartConfig) -> Path:
    from mbpo_bench.data.sources import default_cache_dir

    return default_cache_dir() / "quickstart" / f"base-{base_fingerprint(config)}"


def base_is_cached(config: QuickstartConfig) -> bool:
    return config.cache_base and (base_cache_dir(config) / "status.json").is_file()


def train(method: str, config: Any, output: Path) -> None:
    """Run `method`'s recipe on `config` into `output`, found in the trainer table
    (`trainers/table.py`) as `mbpo-bench train` and `ablate` find it."""
    from mbpo_bench.trainers.table import load_trainer

    _, run = load_trainer(method)
    run(config, output, overwrite=True)


def build_base(config: QuickstartConfig, out: Path) -> tuple[Path, dict[str, Any]]:
    """The biased base: from the cache when present, else built and (if asked) cached."""
    from mbpo_bench.models import build_tiny_model

    cached = base_cache_dir(config)
    if base_is_cached(config):
        _say(f"base model from the cache: {cached}")
        return cached, {"cached": True, "seconds": 0.0}
    start = time.perf_counter()
    work = out / "base"
    tiny = build_tiny_model(config.family, out / "tiny", size=config.size, seed=config.seed)
    sft = dataclasses.replace(
        config.base, model=str(tiny), runtime=_runtime(config.base.runtime, config)
    )
    _say(f"SFT of a {config.size} {config.family} on the biased split ({sft.optim.steps} steps)")
    train("sft", sft, work)
    seconds = time.perf_counter() - start
    if not config.cache_base:
        return work, {"cached": False, "seconds": seconds}
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(work, tmp)
    shutil.copytree(out / "tiny", tmp / "tiny")
    _point_base_at(tmp, cached / "tiny")
    tmp.rename(cached)
    return cached, {"cached": False, "seconds": seconds}


def _point_base_at(run: Path, tiny: Path) -> None:
    """Record the cached copy of the tiny model as the run's starting model (the one in the
    run folder is gone with it); a full-FT run loads from final/model and needs no base."""
    info_path = run / "final" / "info.json"
    info = json.loads(info_path.read_text())
    info["base"] = str(tiny)
    info_path.write_text(json.dumps(info, indent=2) + "\n")


def sft_seconds_per_step(run: Path) -> float:
    """Median seconds per SFT step measured in a training run's metrics.jsonl."""
    import statistics

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    times = [r["step_time_s"] for r in rows if "step_time_s" in r]
    if not times:
        raise UserError(f"{run}/metrics.jsonl has no step times — rebuild the base (--no-cache)")
    return float(statistics.median(times))


def train_mbpo(config: QuickstartConfig, base: Path, out: Path, arm: str = "mbpo") -> float:
    source = config.mbpo_twins if arm == "mbpo_twins" else config.mbpo
    cfg = dataclasses.replace(source, model=str(base), runtime=_runtime(source.runtime, config))
    _say(f"{arm} from the base ({cfg.optim.steps} steps, hybrid offline ratio "
         f"{cfg.hybrid.offline_ratio}, twins {cfg.hybrid.twins})")  # fmt: skip
    start = time.perf_counter()
    train("mbpo", cfg, out / arm)
    return time.perf_counter() - start


def _matched_source(config: QuickstartConfig, out: Path, arm: str) -> tuple[MBPOConfig, Path]:
    from mbpo_bench.trainers.mining import PAIRS_FILE

    source = MATCHED[arm]
    pairs = out / source / PAIRS_FILE
    if not pairs.is_file():
        raise UserError(f"arm {arm} needs arm {source} first (its {pairs}) — add it to arms")
    return (config.mbpo_twins if source == "mbpo_twins" else config.mbpo), pairs


def _control_optim(config: QuickstartConfig, mbpo: MBPOConfig) -> Any:
    """The matched MBPO arm's optimizer settings (steps, batch, warm-up, schedule), at
    `control_lr` when one was chosen (on dev), else at MBPO's own lr."""
    if config.control_lr is None:
        return dataclasses.replace(mbpo.optim)
    return dataclasses.replace(mbpo.optim, lr=config.control_lr)


def train_matched(config: QuickstartConfig, base: Path, out: Path, arm: str) -> tuple[float, Path]:
    """A control on the items / pairs the matched MBPO arm mined, with that arm's optimizer
    settings (the same steps, prompts or pairs per step, lr, warm-up and decay). Returns
    (seconds, the model to evaluate): the base itself when mining kept no pair (nothing to
    train on; the report's mining table shows it)."""
    import copy

    from mbpo_bench.trainers.data import read_pairs

    mbpo, pairs = _matched_source(config, out, arm)
    if not read_pairs(pairs):
        _say(f"{arm}: {MATCHED[arm]} mined no pair, so there is nothing to train on: the base "
             "stands in")  # fmt: skip
        return 0.0, base
    start = time.perf_counter()
    runtime = _runtime(mbpo.runtime, config)
    if arm == "grpo_mined":  # MBPO with no offline groups: GRPO on the mined items as prompts
        cfg = copy.deepcopy(mbpo)
        cfg.model, cfg.preference_data, cfg.runtime = str(base), str(pairs), runtime
        cfg.hybrid.offline_ratio, cfg.hybrid.online_pool = 0.0, "mined"
        cfg.optim = _control_optim(config, mbpo)
        _say(f"{arm}: GRPO on {MATCHED[arm]}'s mined prompts, {cfg.optim.steps} steps")
        train("mbpo", cfg, out / arm)
    elif arm in ("dpo", "dpo_mdpo"):
        from mbpo_bench.trainers.table import get_trainer

        dpo_config, _ = get_trainer("dpo").load()
        dpo = dpo_config(
            model=str(base), data=str(pairs), full_finetune=mbpo.full_finetune,
            mdpo_weight=1.0 if arm == "dpo_mdpo" else 0.0, optim=_control_optim(config, mbpo),
            runtime=runtime,
        )  # fmt: skip
        _say(f"{arm}: DPO on {MATCHED[arm]}'s pairs, {dpo.optim.steps} steps")
        train("dpo", dpo, out / arm)
    else:
        cfg_sft = copy.deepcopy(config.base)
        cfg_sft.model = str(base)
        cfg_sft.blind_fraction = 0.0
        cfg_sft.preference_data = str(pairs)
        cfg_sft.twins = arm == "sft_twins"
        cfg_sft.balanced = arm == "sft_balanced"
        cfg_sft.optim = _control_optim(config, mbpo)
        cfg_sft.runtime = _runtime(cfg_sft.runtime, config)
        _say(f"{arm}: SFT on {MATCHED[arm]}'s mined items, {cfg_sft.optim.steps} steps")
        train("sft", cfg_sft, out / arm)
    return time.perf_counter() - start, out / arm


def train_control(config: QuickstartConfig, base: Path, out: Path, budget_s: float) -> float:
    """Continued SFT on the same data for the same wall time as MBPO."""
    import copy

    per_step = sft_seconds_per_step(base)
    steps = max(1, round(budget_s * config.control_time_factor / per_step))
    if config.control_steps is not None:  # checked by run_quickstart before any stage ran
        steps = config.control_steps
    cfg = copy.deepcopy(config.base)
    cfg.model = str(base)
    # The base's own optimizer settings (warmup, decay) over the control's steps: the plain
    # "just train longer" a skeptic would run, not a handicapped variant.
    cfg.optim = dataclasses.replace(config.base.optim, steps=steps)
    cfg.runtime = _runtime(cfg.runtime, config)
    _say(f"sft_time: continued SFT, {steps} steps (~{budget_s:.0f} s at {per_step:.3f} s/step)")
    start = time.perf_counter()
    train("sft", cfg, out / "sft_time")
    return time.perf_counter() - start


def evaluate(config: QuickstartConfig, model: Path, out: Path) -> float:
    from mbpo_bench.evaluation.api import run_eval

    eval_cfg = EvalConfig(
        model=str(model), tasks="embedded", output=str(out), limit=config.eval_limit,
        split=config.split,
        batch_size=config.eval_batch_size, probes=ProbeConfig(names=list(config.probes)),
    )  # fmt: skip
    start = time.perf_counter()
    run_eval(eval_cfg, overwrite=True, progress=config.progress, show_config=False)
    return time.perf_counter() - start


def check_config(config: QuickstartConfig) -> None:
    """Every setting the stages need, checked before anything is written."""
    if config.control_steps is not None and config.control_steps < 1:
        raise UserError(
            f"control_steps must be at least 1, got {config.control_steps} — "
            "or null for the time-matched control"
        )
    if config.control_lr is not None and config.control_lr <= 0:
        raise UserError(f"control_lr must be positive, got {config.control_lr} — or null (MBPO's)")
    if config.jobs < 1:
        raise UserError(f"jobs must be at least 1, got {config.jobs} — pass --jobs 1 or more")
    if config.seeds < 1:
        raise UserError(f"seeds must be at least 1, got {config.seeds} — pass --seeds 3")
    unknown = [a for a in config.arms if a not in ARMS]
    if unknown or not config.arms:
        raise UserError(f"unknown arms {unknown or '[]'} — choose from {', '.join(ARMS)}")
    for arm, source in MATCHED.items():
        if arm in config.arms and source not in config.arms:
            raise UserError(f"arm {arm} is matched to {source} — add {source} to arms")
    if "sft_time" in config.arms and "mbpo" not in config.arms:
        raise UserError("arm sft_time takes mbpo's wall time — add mbpo to arms")


def run_seed(
    config: QuickstartConfig, out: Path, expected: dict[str, float] | None = None
) -> dict[str, float]:
    """Every stage of one seed into `out`; returns the stage timings."""
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    base, base_info = build_base(config, out)
    timings["base"] = base_info["seconds"]
    ordered = [a for a in ARMS if a in config.arms]  # MBPO arms before their controls
    models = {"base": base, **{arm: out / arm for arm in ordered}}
    for arm in ordered:
        if arm in ("mbpo", "mbpo_twins"):
            timings[arm] = train_mbpo(config, base, out, arm)
        elif arm in MATCHED:
            timings[arm], models[arm] = train_matched(config, base, out, arm)
        else:
            timings[arm] = train_control(config, base, out, timings["mbpo"])
    for name in ["base", *ordered]:
        _say(f"evaluating {name} on split {config.split} with probes {', '.join(config.probes)}")
        timings[f"eval_{name}"] = evaluate(config, models[name], out / f"eval_{name}")
    timings["total_before_report"] = time.perf_counter() - start
    write_json_atomic(
        out / "timings.json",
        {"base_cached": base_info["cached"], **timings, "expected_s": expected or {}},
    )
    return timings


def run_quickstart(config: QuickstartConfig) -> Path:
    """Run every stage of every seed; return the report's path."""
    from mbpo_bench.plan import quickstart_plan
    from mbpo_bench.quickstart_report import write_report

    check_config(config)
    if config.report_only:
        return _report_only(config)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    config.output.mkdir(parents=True, exist_ok=True)
    write_atomic(config.output / "quickstart_config.yaml", dump_yaml(config))
    if config.progress:  # our bars replace transformers' per-file "Loading weights" bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    plan = quickstart_plan(config, base_cached=base_is_cached(config))
    _say(plan.line())
    timings: dict[int, dict[str, float]] = {}
    if config.jobs > 1 and config.seeds > 1:
        timings = run_seeds_parallel(config, plan.stages)
    else:
        for seed, folder in seed_dirs(config):
            if config.seeds > 1:
                _say(f"seed {seed} -> {folder}")
            timings[seed] = run_seed(dataclasses.replace(config, seed=seed), folder, plan.stages)
    report = write_report(config, timings, path=report_path(config))
    _say(f"report: {report}")
    return report


def _seed_worker(
    config: QuickstartConfig, folder: Path, expected: dict[str, float]
) -> dict[str, float]:
    """One seed in a spawned process (`--jobs`): torch threads and progress set as the parent
    would, then `run_seed`."""
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    if config.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return run_seed(config, folder, expected)


def run_seeds_parallel(
    config: QuickstartConfig, expected: dict[str, float]
) -> dict[int, dict[str, float]]:
    """Every seed in its own spawned process, `jobs` at once (a small model leaves a GPU idle).

    The embedded benchmark is generated once here first, so the seeds do not each draw it. A
    seed that fails is reported (one line) and left out; the report covers the seeds that
    finished, and says which did not. Results do not depend on `jobs`: each seed seeds itself.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from mbpo_bench.data.embedded import generate_embedded
    from mbpo_bench.data.registry import embedded_config_from_env

    generate_embedded(embedded_config_from_env(), workers=min(8, os.cpu_count() or 1))
    dirs = seed_dirs(config)
    timings: dict[int, dict[str, float]] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(config.jobs, len(dirs)), mp_context=context) as pool:
        futures = {
            pool.submit(_seed_worker, dataclasses.replace(config, seed=seed), folder, expected): (
                seed
            )
            for seed, folder in dirs
        }
        _say(f"{len(dirs)} seeds, {min(config.jobs, len(dirs))} at once (--jobs {config.jobs})")
        for future in as_completed(futures):
            seed = futures[future]
            try:
                timings[seed] = future.result()
                _say(f"seed {seed} finished")
            except Exception as exc:  # a UserError, a crash or a dead worker: that seed only
                _say(f"[red]seed {seed} failed[/]: {type(exc).__name__}: {exc}")
    if not timings:
        raise UserError("no seed finished — see the messages above, fix and rerun")
    return dict(sorted(timings.items()))


def _report_only(config: QuickstartConfig) -> Path:
    """The report from the seed folders already there (`report_only`)."""
    import json

    from mbpo_bench.quickstart_report import write_report

    timings: dict[int, dict[str, float]] = {}
    for seed, folder in seed_dirs(config):
        path = folder / "timings.json"
        if not path.is_file():
            _say(f"seed {seed} has no finished run in {folder} (no timings.json): left out")
            continue
        try:
            data = json.loads(path.read_text())
            wrong = None if isinstance(data, dict) else "expected a JSON object"
        except json.JSONDecodeError as exc:
            wrong = f"not valid JSON ({exc.msg} at line {exc.lineno})"
        if wrong:
            raise UserError(f"{path}: {wrong} — delete it to report without seed {seed}, or run "
                            "the quickstart again into a new --output")  # fmt: skip
        timings[seed] = {k: float(v) for k, v in data.items() if isinstance(v, int | float)
                         and not isinstance(v, bool)}  # fmt: skip
    if not timings:
        raise UserError(
            f"no seed has a finished run under {config.output} (no timings.json) — run it first"
        )
    report = write_report(config, timings, path=report_path(config))
    _say(f"report: {report}")
    return report
