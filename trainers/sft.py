"""Supervised fine-tuning on task items: maximise log p(reference answer | image, question).

Used to make the biased base model on the embedded benchmark (field notes: lr 3e-4, 5% warmup,
linear decay, grad-clip 1, batch 16, ~1200 steps, full fine-tuning of a tiny random model: the
defaults below, except that LoRA stays the default as everywhere) and as the "continued SFT,
same data, same time" control of every comparison.

The loss is the token mean over the whole optimizer batch (answer tokens + EOS), so gradient
accumulation gives exactly the gradient of the full batch. Under torchrun the divisor is the
token count of the GLOBAL batch (`parallel.normaliser`), not this rank's: ranks hold answers
of different lengths, and only a shared divisor makes the rank-averaged gradient (and the
averaged loss) equal the one-process ones. Reads top to bottom: config, run (the shared setup of
`trainers/recipe.py`, the step, the loop), step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mbpo_bench.trainers.loop import (
    IndexStream,
    LoopResult,
    OptimConfig,
    RuntimeConfig,
    StepResult,
)

from mbpo_bench.data.items import TaskItem
from mbpo_bench.models.lora import LoraSettings

if TYPE_CHECKING:
    from mbpo_bench.trainers.policy import Policy


@dataclass
class SFTConfig:
    model: str = ""
    data: str = "embedded"
    split: str = "train"
    limit: int | None = None  # first N items of each task
    full_finetune: bool = False
    save_merged: bool = False  # LoRA: also write final/model (merged), loadable without the base
    trust_remote_code: bool = False
    skip_bad_items: bool = False  # drop items whose image is missing or broken (--skip-bad-items)
    # ours: this fraction of training samples is shown WITHOUT its image (text-only prompt, same
    # answer), as real LMMs see text-only data: the text-only prompt becomes in distribution and
    # the model's blind answer is its language prior (what IIG's default null and MBPO's premise
    # assume). Drawn per (step, item), so it is the same for any number of processes.
    blind_fraction: float = 0.0
    # the matched controls of MBPO (ours): SFT on the chosen answers of these mined pairs (a
    # pairs .parquet: "SFT on the same mined items"); with `twins`, each pair's prior twin too
    # (the control of the twin-pair variant, trainers/twins.py)
    preference_data: str | None = None
    twins: bool = False
    # with preference_data: add, per mined item, a prior-consistent training item with the same
    # question text (question-matched balanced data: half counter-prior, half consistent)
    balanced: bool = False
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=3e-4, steps=1200, batch_size=16, warmup_ratio=0.05)
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)


Config = SFTConfig  # the name every recipe exposes (trainers/table.py)


def run_sft(
    config: SFTConfig, output: Path, *, resume: bool = False, overwrite: bool = False
) -> LoopResult:
    from mbpo_bench.trainers.recipe import save_merged_conflict, start, train

    from mbpo_bench.errors import UserError

    if not 0.0 <= config.blind_fraction <= 1.0:  # before the run folder exists
        raise UserError(f"blind_fraction must be in [0, 1], got {config.blind_fraction}")
    conflicts = [
        (config.blind_fraction > 0, "blind_fraction",
         "set it to 0 (text-only rows make the ranks run different forwards)"),
        save_merged_conflict(config),
        (config.twins, "twins", "untested with FSDP: use runtime.strategy=ddp"),
    ]  # fmt: skip
    s = start(config, output, resume=resume, overwrite=overwrite, need_reference=False,
              conflicts=conflicts, items=_items)  # fmt: skip
    step, position = make_step(config, s.policy, s.items)
    return train(s, config, step, position, title="sft", resume=resume)


run = run_sft


def make_step(
    config: SFTConfig, policy: Policy, items: list[TaskItem]
) -> tuple[Callable[[int], StepResult], Callable[[int], dict[str, int]]]:
    """The step over `items` (the token-mean NLL of the whole optimizer batch) and its data
    position."""
    from mbpo_bench.trainers.data import item_prompts

    from mbpo_bench import parallel
    from mbpo_bench.models.protocol import Prompt

    vlm = policy.vlm
    stream = IndexStream(len(items), config.optim.batch_size, seed=config.runtime.seed)
    micro = config.optim.micro_batch_size

    def prompts_for(part: list[int], i: int) -> list[Prompt]:
        shown = item_prompts([items[j] for j in part])
        if config.blind_fraction == 0.0:
            return shown
        return [
            Prompt(p.text, None) if _is_blind(config.runtime.seed, i, j, config.blind_fraction)
            else p
            for p, j in zip(shown, part, strict=True)
        ]  # fmt: skip

    def step(i: int) -> StepResult:
        indices = parallel.shard(stream.batch(i))
        batch = [items[j] for j in indices]
        answers = [it.target for it in batch]
        n_tokens = sum(
            len(ids) + 1 for ids in vlm.tokenizer(answers, add_special_tokens=False)["input_ids"]
        )
        denom = parallel.normaliser(float(n_tokens))  # n_tokens in one process
        policy.train_mode(True)
        total, logp_sum = 0.0, 0.0
        with policy.compiled():  # runtime.compile_layers, as in DPO and GRPO
            for start in range(0, len(batch), micro):
                lp = vlm.answer_logprobs(
                    prompts_for(indices[start : start + micro], i),
                    answers[start : start + micro],
                    requires_grad=True,
                )
                summed = (lp.logps * lp.mask).sum()
                loss = -summed / denom
                loss.backward()
                total += float(loss.detach())
                logp_sum += float(summed.detach())
        return StepResult(
            loss=total,
            metrics={"nll": total, "answer_logp_mean": logp_sum / denom},
            samples=len(batch),
            tokens=n_tokens,
        )

    return step, stream.position


def _items(config: SFTConfig) -> list[TaskItem]:
    """The training items: a task's split, or the mined pairs' items (and their twins)."""
    from mbpo_bench.trainers.data import load_items, read_pairs

    from mbpo_bench.errors import UserError

    if config.preference_data is None:
        if config.twins:
            raise UserError("sft.twins needs sft.preference_data (the mined pairs) — set both")
        return load_items(
            config.data, split=config.split, limit=config.limit,
            skip_bad_items=config.skip_bad_items,
        )  # fmt: skip
    pairs = read_pairs(Path(config.preference_data))
    if not pairs:
        raise UserError(f"{config.preference_data} holds no pairs — mine more candidates")
    if config.balanced:
        return _balanced(config, [p.as_item() for p in pairs])
    if not config.twins:
        return [p.as_item() for p in pairs]
    from mbpo_bench.trainers.twins import twin_items, twin_map, twin_pairs

    return twin_items(pairs, twin_pairs(pairs, twin_map(config.data)))


def _balanced(config: SFTConfig, mined: list[TaskItem]) -> list[TaskItem]:
    """Each mined item, then a prior-consistent training item asking the same question (drawn
    by the run's seed; a question with no such item keeps its mined item alone)."""
    import random

    from mbpo_bench.trainers.data import load_items

    matches: dict[tuple[str, str], list[TaskItem]] = {}
    for it in load_items(config.data, split=config.split, limit=config.limit):
        if it.meta.get("prior") == "consistent":
            matches.setdefault((it.task, it.question), []).append(it)
    rng = random.Random(config.runtime.seed)
    out = []
    for it in mined:
        out.append(it)
        pool = matches.get((it.task, it.question))
        if pool:
            out.append(rng.choice(pool))
    return out


def _is_blind(seed: int, step: int, index: int, fraction: float) -> bool:
    """Whether item `index` is shown without its image at `step` (a stable hash, no RNG state)."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}:{step}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction
