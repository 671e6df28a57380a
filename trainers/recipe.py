"""The setup every recipe (sft, dpo, grpo, mbpo) shares: refuse what cannot run, open the run
folder, set up the runtime, load the items, load the policy, in that order (`start`); and the
loop they end with (`train`).

The order is part of the behaviour: nothing is written before the options are checked, and the
runtime's seed is set before the items and the policy (whose LoRA initialisation draws from
torch's generator) are made, so a recipe's golden losses (tests/test_trainers_golden.py) do not
depend on which module did the setup. What differs per method stays in its module: its extra
checks, where its items come from (SFT: mined pairs; DPO: mined after the policy, so none here),
whether it needs the reference policy, and its step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from mbpo_bench.trainers.loop import (
    LoopResult,
    OptimConfig,
    RuntimeConfig,
    StepResult,
    setup_runtime,
    train_loop,
)

from mbpo_bench.models.lora import LoraSettings
from mbpo_bench.runs import RunDir

if TYPE_CHECKING:
    from mbpo_bench.trainers.policy import Policy

    from mbpo_bench.data.items import TaskItem


class RecipeConfig(Protocol):
    """The fields every recipe's `Config` has (each declares them itself, in its own order, so
    its saved config.yaml keeps its key order)."""

    model: str
    data: str
    split: str
    limit: int | None
    full_finetune: bool
    save_merged: bool
    trust_remote_code: bool
    skip_bad_items: bool
    optim: OptimConfig
    runtime: RuntimeConfig
    lora: LoraSettings


C = TypeVar("C", bound=RecipeConfig)


@dataclass
class Start:
    """What a recipe's step and loop are built from."""

    run: RunDir
    policy: Policy
    items: list[TaskItem]


def task_items(config: RecipeConfig) -> list[TaskItem]:
    """The split of `config.data` (the default item source of a recipe)."""
    from mbpo_bench.trainers.data import load_items

    items: list[TaskItem] = load_items(
        config.data, split=config.split, limit=config.limit, skip_bad_items=config.skip_bad_items
    )
    return items


def save_merged_conflict(config: RecipeConfig) -> tuple[bool, str, str]:
    """`save_merged` under FSDP (a `check_options` conflict every recipe lists)."""
    return (config.save_merged, "save_merged", "drop it and merge the saved adapter afterwards")


def start(
    config: C,
    output: Path,
    *,
    resume: bool,
    overwrite: bool,
    need_reference: bool,
    conflicts: Sequence[tuple[bool, str, str]] = (),
    items: Callable[[C], list[TaskItem]] | None = task_items,
) -> Start:
    """Check the options (`conflicts`: what FSDP refuses), open the run folder, set up the
    runtime, load the items (`items(config)`; None: none yet) and the policy."""
    from mbpo_bench.trainers.policy import load_policy
    from mbpo_bench.trainers.sharding import check_options

    check_options(config.runtime, conflicts)
    run = RunDir.open(output, overwrite=overwrite, config=config, resume=resume)
    setup_runtime(config.runtime)
    loaded = items(config) if items is not None else []
    policy = load_policy(
        config.model, lora=config.lora, full_finetune=config.full_finetune,
        runtime=config.runtime, need_reference=need_reference,
        trust_remote_code=config.trust_remote_code,
    )  # fmt: skip
    return Start(run=run, policy=policy, items=loaded)


def train(
    s: Start,
    config: RecipeConfig,
    step: Callable[[int], StepResult],
    position: Callable[[int], dict[str, int]],
    *,
    title: str,
    resume: bool,
) -> LoopResult:
    """The training loop (`trainers/loop.py`) over `step`; `final/` as `config.save_merged` says."""
    return train_loop(
        run=s.run, model=s.policy.module, optim=config.optim, runtime=config.runtime,
        step_fn=step, resume=resume, title=title, data_position=position,
        save_final=lambda folder: s.policy.save_final(folder, merged=config.save_merged),
    )  # fmt: skip
