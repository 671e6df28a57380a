"""DPO on preference pairs, with mDPO's optional conditional and anchor terms.

Pairs come from a preference parquet (`--data pairs.parquet`, e.g. written by `mbpo-bench mine`)
or, given task names, are mined first into `<run>/pairs.parquet` with `mining.source` as the
source of rejected answers: `pgd` (adversarial, MBPO's offline data), `noise` (POVID-style random
noise of the same budget) or `blind` (the text-only answer). Chosen and rejected are both scored
with the CLEAN image.

mDPO's conditional term (`mdpo_weight` > 0) is DPO between the chosen answer on the clean image
and the same answer on a corrupted image (`mdpo_corruption`: a random crop keeping
`mdpo_crop_keep` of the area, resized back, as in mDPO; or noise / black), so the model cannot
prefer the answer without looking. The anchor term (`anchor_weight` > 0) keeps the chosen
reward above `anchor_delta`. Sequence log-probs are sums over answer tokens (+ EOS), as in TRL.
One forward per micro-batch scores chosen, rejected (and corrupted) rows together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mbpo_bench.trainers.loop import (
    IndexStream,
    LoopResult,
    OptimConfig,
    RuntimeConfig,
    StepResult,
)
from mbpo_bench.trainers.mining import MiningConfig

from mbpo_bench.models.lora import LoraSettings
from mbpo_bench.runs import RunDir

if TYPE_CHECKING:
    import torch
    from mbpo_bench.trainers.data import PreferencePair
    from mbpo_bench.trainers.policy import Policy

    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.models.protocol import VisionLanguageModel


@dataclass
class DPOConfig:
    model: str = ""
    data: str = "embedded"  # task names (mined first) or a preference .parquet
    split: str = "train"
    limit: int | None = None
    beta: float = 0.1
    mdpo_weight: float = 0.0  # 0 = plain DPO; 1.0 = mDPO's conditional term at full weight
    mdpo_corruption: Literal["crop", "noise", "black"] = "crop"
    mdpo_crop_keep: float = 0.2  # area fraction kept by the crop corruption
    mdpo_noise_std: float = 0.5  # std of the Gaussian noise corruption (on [0,1] pixels)
    anchor_weight: float = 0.0
    anchor_delta: float = 0.0
    # score a pair's chosen and rejected answers in one sequence behind one copy of the prompt
    # and image (`models.packing`): the same log-probs and gradients, the prompt run once per
    # pair instead of twice in the policy and reference passes; needs SDPA or eager attention
    packed_scoring: bool = False
    full_finetune: bool = False
    save_merged: bool = False
    trust_remote_code: bool = False
    skip_bad_items: bool = False  # drop items whose image is missing or broken (--skip-bad-items)
    mining: MiningConfig = field(default_factory=MiningConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=5e-5, steps=200, batch_size=8, warmup_ratio=0.05)
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)


Config = DPOConfig  # the name every recipe exposes (trainers/table.py)


def corrupt_images(
    pixels: torch.Tensor, cfg: DPOConfig, generator: torch.Generator
) -> torch.Tensor:
    """mDPO's corrupted image, per image: random crop (resized back), noise or black."""
    import torch
    import torch.nn.functional as F

    if cfg.mdpo_corruption == "black":
        return torch.zeros_like(pixels)
    if cfg.mdpo_corruption == "noise":
        noise = torch.randn(pixels.shape, generator=generator).to(pixels)
        return (pixels + cfg.mdpo_noise_std * noise).clamp(0.0, 1.0)
    b, _, h, w = pixels.shape
    side_h = max(1, round(h * cfg.mdpo_crop_keep**0.5))
    side_w = max(1, round(w * cfg.mdpo_crop_keep**0.5))
    out = []
    for i in range(b):
        top = int(torch.randint(0, h - side_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - side_w + 1, (1,), generator=generator))
        crop = pixels[i : i + 1, :, top : top + side_h, left : left + side_w]
        out.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False))
    return torch.cat(out).clamp(0.0, 1.0)


def load_or_mine_pairs(
    policy: Policy,
    data: str,
    split: str,
    limit: int | None,
    mining: MiningConfig,
    run: RunDir,
    items: list[TaskItem] | None = None,
    *,
    progress: bool = False,
    skip_bad_items: bool = False,
) -> list[PreferencePair]:
    """Pairs from a parquet, from this run's earlier mining (resume), or mined now."""
    from mbpo_bench.trainers.data import load_items, read_pairs
    from mbpo_bench.trainers.mining import PAIRS_FILE, mine_to_file

    if data.endswith(".parquet"):
        return read_pairs(Path(data))
    out = run.path / PAIRS_FILE
    if out.is_file():
        return read_pairs(out)
    if items is None:
        items = load_items(data, split=split, limit=limit, skip_bad_items=skip_bad_items)
    with policy.reference() as start, policy.whole(start):  # the starting policy mines
        pairs, stats = mine_to_file(start, items, mining, out, progress=progress)
    run.log(f"mined {len(pairs)} pairs: {stats.as_dict()}")
    return pairs


def _score(
    v: VisionLanguageModel, pairs: list[PreferencePair], cfg: DPOConfig, generator: torch.Generator | None,
    requires_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Summed log-probs of chosen, rejected (and chosen on the corrupted image), one forward."""
    import torch
    from mbpo_bench.trainers.data import item_prompts

    from mbpo_bench.models.protocol import Prompt

    prompts = item_prompts([p.as_item() for p in pairs])
    chosen = [p.chosen for p in pairs]
    rejected = [p.rejected for p in pairs]
    n = len(pairs)
    pairs_keys = list(range(n)) * 2 if cfg.packed_scoring else None  # chosen i, rejected i
    if cfg.mdpo_weight == 0.0:
        lp = v.answer_logprobs(
            prompts + prompts, chosen + rejected, requires_grad=requires_grad, shared=pairs_keys
        )
        seq = lp.sum()
        return seq[:n], seq[n:], None
    pixels = v.images_to_tensor([p.image for p in prompts])  # type: ignore[misc]
    assert generator is not None
    bad = corrupt_images(pixels, cfg, generator)
    texts = [Prompt(p.text) for p in prompts] * 3
    corrupted = [*pairs_keys, *range(n, 2 * n)] if pairs_keys else None  # its own prompt copy
    lp = v.answer_logprobs(
        texts, chosen + rejected + chosen, pixel_images=torch.cat([pixels, pixels, bad]),
        requires_grad=requires_grad, shared=corrupted,
    )  # fmt: skip
    seq = lp.sum()
    return seq[:n], seq[n : 2 * n], seq[2 * n :]


def _micro_loss(
    policy: Policy, pairs: list[PreferencePair], cfg: DPOConfig, seed: int, n_global: int
) -> tuple[torch.Tensor, dict[str, float]]:
    import torch
    from mbpo_bench.trainers import losses

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed)  # the same corruption for policy and reference

    with torch.no_grad(), policy.reference() as ref:
        r_c, r_r, r_x = _score(ref, pairs, cfg, gen(), requires_grad=False)
    p_c, p_r, p_x = _score(policy.vlm, pairs, cfg, gen(), requires_grad=True)
    dpo = losses.dpo_loss(p_c, p_r, r_c, r_r, beta=cfg.beta)
    total = dpo.losses.sum()
    stats = {k: v * len(pairs) for k, v in dpo.stats().items()}
    stats["dpo_loss"] = float(dpo.losses.detach().sum())
    if p_x is not None and r_x is not None:
        cond = losses.mdpo_conditional_loss(p_c, p_x, r_c, r_x, beta=cfg.beta)
        total = total + cfg.mdpo_weight * cond.losses.sum()
        stats["mdpo_conditional_loss"] = float(cond.losses.detach().sum())
    if cfg.anchor_weight:
        anchor = losses.anchor_loss(p_c, r_c, beta=cfg.beta, delta=cfg.anchor_delta)
        total = total + cfg.anchor_weight * anchor.sum()
        stats["anchor_loss"] = float(anchor.detach().sum())
    return total / n_global, stats


def run_dpo(
    config: DPOConfig, output: Path, *, resume: bool = False, overwrite: bool = False
) -> LoopResult:
    from mbpo_bench.trainers.recipe import save_merged_conflict, start, train

    from mbpo_bench.errors import UserError

    s = start(
        config,
        output,
        resume=resume,
        overwrite=overwrite,
        need_reference=True,
        conflicts=[save_merged_conflict(config)],
        items=None,
    )  # items: mined below
    pairs = load_or_mine_pairs(
        s.policy, config.data, config.split, config.limit, config.mining, s.run,
        progress=config.runtime.progress, skip_bad_items=config.skip_bad_items,
    )  # fmt: skip
    if not pairs:
        raise UserError(
            "no preference pairs to train on (mining kept none) — mine more candidates "
            "(raise mining.limit, mining.iig_top_fraction or mining.eps) or pass a pairs .parquet"
        )
    if config.mdpo_weight and any(p.image_path is None for p in pairs):
        raise UserError("mdpo_weight > 0 needs an image for every pair — drop text-only pairs")
    step, position = make_step(config, s.policy, pairs)
    return train(s, config, step, position, title="dpo", resume=resume)


run = run_dpo


def make_step(
    config: DPOConfig, policy: Policy, pairs: list[PreferencePair]
) -> tuple[Callable[[int], StepResult], Callable[[int], dict[str, int]]]:
    """The step over `pairs` (DPO + the optional mDPO and anchor terms) and its data position."""
    from mbpo_bench import parallel

    stream = IndexStream(len(pairs), config.optim.batch_size, seed=config.runtime.seed)
    micro = config.optim.micro_batch_size

    def step(i: int) -> StepResult:
        batch = [pairs[j] for j in parallel.shard(stream.batch(i))]
        policy.train_mode(True)
        # dividing by this rank's pair count is exact under torchrun: batches are always full and
        # batch_size % world == 0, so every rank holds the same count and the rank mean of the
        # gradients is the whole batch's (SFT divides by tokens, which differ: it needs the
        # global `parallel.normaliser`)
        total, sums = 0.0, dict[str, float]()
        with policy.compiled():  # runtime.compile_layers; mining (PGD) above stays eager
            for k, start in enumerate(range(0, len(batch), micro)):
                seed = config.runtime.seed * 1_000_003 + i * 1_009 + k
                loss, stats = _micro_loss(
                    policy, batch[start : start + micro], config, seed, len(batch)
                )
                loss.backward()
                total += float(loss.detach())
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
        metrics = {key: value / len(batch) for key, value in sums.items()}
        texts = [p.chosen for p in batch] + [p.rejected for p in batch]
        ids = policy.vlm.tokenizer(texts, add_special_tokens=False)["input_ids"]
        tokens = sum(len(t) + 1 for t in ids)
        return StepResult(loss=total, metrics=metrics, samples=len(batch), tokens=tokens)

    return step, stream.position
