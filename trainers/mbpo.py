"""MBPO: adversarial hard-negative mining, then GRPO on hybrid offline-online batches.

Stage 1 (`trainers/mining.py`): the STARTING policy (LoRA: adapter disabled; full: the frozen
copy) mines {chosen = y_gt, rejected = its own answer on a PGD-perturbed image} pairs from the
high-IIG items of `--data`, into `<run>/pairs.parquet` (+ pairs.stats.json). A resumed run reuses
that file; `preference_data` skips mining and reads a given parquet (from `mbpo-bench mine`).
Stage 2 (`trainers/grpo.py`): each step has `optim.batch_size` groups, `hybrid.offline_ratio` of
them offline pairs with rewards {2, 0} (+ `hybrid.offline_extra_samples` online samples), the
rest online groups of G samples from the same items. Everything else is GRPO, so with no pairs
MBPO is exactly GRPO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mbpo_bench.trainers.grpo import GRPOSettings, make_step_fn
from mbpo_bench.trainers.hybrid import HybridSettings
from mbpo_bench.trainers.loop import (
    LoopResult,
    OptimConfig,
    RuntimeConfig,
    StepResult,
)
from mbpo_bench.trainers.mining import MiningConfig

from mbpo_bench.models.lora import LoraSettings

if TYPE_CHECKING:
    from mbpo_bench.trainers.data import PreferencePair
    from mbpo_bench.trainers.policy import Policy

    from mbpo_bench.data.items import TaskItem


@dataclass
class MBPOConfig:
    model: str = ""
    data: str = "embedded"  # online prompts AND mining candidates
    split: str = "train"
    limit: int | None = None
    preference_data: str | None = None  # a pairs .parquet: skip stage 1
    full_finetune: bool = False
    save_merged: bool = False
    trust_remote_code: bool = False
    skip_bad_items: bool = False  # drop items whose image is missing or broken (--skip-bad-items)
    mining: MiningConfig = field(default_factory=MiningConfig)
    hybrid: HybridSettings = field(default_factory=HybridSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    optim: OptimConfig = field(  # batch_size = groups per step (offline + online)
        default_factory=lambda: OptimConfig(lr=5e-5, steps=200, batch_size=8, warmup_ratio=0.05)
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)


Config = MBPOConfig  # the name every recipe exposes (trainers/table.py)


def run_mbpo(
    config: MBPOConfig, output: Path, *, resume: bool = False, overwrite: bool = False
) -> LoopResult:
    from mbpo_bench.trainers.dpo import load_or_mine_pairs
    from mbpo_bench.trainers.grpo import fsdp_conflicts
    from mbpo_bench.trainers.hybrid import online_items
    from mbpo_bench.trainers.recipe import save_merged_conflict, start, train

    conflicts = [
        *fsdp_conflicts(config.grpo),
        save_merged_conflict(config),
        (config.hybrid.twins, "hybrid.twins", "untested with FSDP: use runtime.strategy=ddp"),
    ]
    need_start = config.grpo.beta != 0.0 or config.preference_data is None
    s = start(config, output, resume=resume, overwrite=overwrite, need_reference=need_start,
              conflicts=conflicts)  # fmt: skip
    run, policy, items = s.run, s.policy, s.items
    source = config.preference_data or config.data
    twin_of = None
    candidates = items
    if config.hybrid.twins:  # trainers/twins.py: candidates are the items with a prior twin
        from mbpo_bench.trainers.twins import twin_map, with_twin

        twin_of = twin_map(config.data)
        candidates = with_twin(items, twin_of)
    pairs = load_or_mine_pairs(
        policy, source, config.split, config.limit, config.mining, run, items=candidates,
        progress=config.runtime.progress,
    )  # fmt: skip
    if config.hybrid.online_pool == "mined" and not pairs:
        run.log("hybrid.online_pool=mined, but mining kept no pairs: online prompts from all items")
    items = online_items(items, pairs, config.hybrid.online_pool)
    twins = None
    if twin_of is not None and pairs:
        from mbpo_bench.trainers.twins import twin_items, twin_pairs

        twins = twin_pairs(pairs, twin_of)
        if config.hybrid.online_pool == "mined":
            items = twin_items(pairs, twins)
    run.log(f"stage 2: {len(pairs)} offline pairs, {len(items)} online items, "
            f"twins: {twins is not None}")  # fmt: skip
    step, position = make_step(config, policy, items, pairs, twins)
    return train(s, config, step, position, title="mbpo", resume=resume)


run = run_mbpo


def make_step(
    config: MBPOConfig,
    policy: Policy,
    items: list[TaskItem],
    pairs: list[PreferencePair],
    twins: list[PreferencePair] | None = None,
) -> tuple[Callable[[int], StepResult], Callable[[int], dict[str, int]]]:
    """Stage 2's step: GRPO's over hybrid batches of online `items` and offline `pairs` (with
    `twins`, each drawn pair's twin too), and its data position."""
    return make_step_fn(
        policy, items, pairs, config.grpo, config.optim, config.runtime.seed, config.hybrid,
        twins=twins,
    )  # fmt: skip
