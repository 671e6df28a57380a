"""Supervised fine-tuning on task items: maximise log p(reference answer | image, question).

Used to make the biased base model on the embedded benchmark (field notes: lr 3e-4, 5% warmup,
linear decay, grad-clip 1, batch 16, ~1200 steps, full fine-tuning of a tiny random model: the
defaults below, except that LoRA stays the default as everywhere) and as the "continued SFT,
same data, same time" control of every comparison.

The loss is the token mean over the whole optimizer batch (answer tokens + EOS), so gradient
accumulation gives exactly the gradient of the full batch. Under torchrun the divisor is the
token count of the GLOBAL batch (`distributed.normaliser`), not this rank's: ranks hold answers
of different lengths, and only a shared divisor makes the rank-averaged gradient (and the
averaged loss) equal the one-process ones. Reads top to bottom: config, setup, step, loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mbpo_bench.trainers.loop import (
    IndexStream,
    LoopResult,
    OptimConfig,
    RuntimeConfig,
    StepResult,
    setup_runtime,
    train_loop,
)

from mbpo_bench.models.lora import LoraSettings
from mbpo_bench.runs import RunDir


@dataclass
class SFTConfig:
    model: str = ""
    data: str = "embedded"
    split: str = "train"
    limit: int | None = None  # first N items of each task
    full_finetune: bool = False
    save_merged: bool = False  # LoRA: also write final/model (merged), loadable without the base
    trust_remote_code: bool = False
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=3e-4, steps=1200, batch_size=16, warmup_ratio=0.05)
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)


def run_sft(
    config: SFTConfig, output: Path, *, resume: bool = False, overwrite: bool = False
) -> LoopResult:
    from mbpo_bench.trainers import distributed
    from mbpo_bench.trainers.data import item_prompts, load_items
    from mbpo_bench.trainers.policy import load_policy

    run = RunDir.open(output, overwrite=overwrite, config=config)
    setup_runtime(config.runtime)
    items = load_items(config.data, split=config.split, limit=config.limit)
    policy = load_policy(
        config.model,
        lora=config.lora,
        full_finetune=config.full_finetune,
        runtime=config.runtime,
        need_reference=False,
        trust_remote_code=config.trust_remote_code,
    )
    vlm = policy.vlm
    stream = IndexStream(len(items), config.optim.batch_size, seed=config.runtime.seed)
    micro = config.optim.micro_batch_size

    def step(i: int) -> StepResult:
        batch = [items[j] for j in distributed.shard(stream.batch(i))]
        answers = [it.target for it in batch]
        n_tokens = sum(
            len(ids) + 1 for ids in vlm.tokenizer(answers, add_special_tokens=False)["input_ids"]
        )
        denom = distributed.normaliser(float(n_tokens))  # n_tokens in one process
        policy.train_mode(True)
        total, logp_sum = 0.0, 0.0
        for start in range(0, len(batch), micro):
            part = batch[start : start + micro]
            lp = vlm.answer_logprobs(
                item_prompts(part, vlm.image_size),
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

    return train_loop(
        run=run,
        model=policy.module,
        optim=config.optim,
        runtime=config.runtime,
        step_fn=step,
        save_final=lambda folder: policy.save_final(folder, merged=config.save_merged),
        resume=resume,
        title="sft",
        data_position=stream.position,
    )
