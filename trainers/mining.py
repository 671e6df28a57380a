"""Hard-negative mining (MBPO stage 1): IIG selection, PGD, rejected answer, verifier filter.

For each candidate (I, q, y_gt) with an image (method.md):
  1. IIG of y_gt (I0 = text-only prompt by default); keep the top fraction / above a threshold
     (`iig_filter=false` keeps every candidate: the "no IIG filter" ablation).
  2. A perturbation that MINIMISES log p(y_gt | I + delta, q): PGD in [0,1] pixel space
     (eps 8/255, alpha 2/255, 10 steps, random start), batched. Ablation sources: `noise`
     (uniform noise of the same L-inf budget) and `blind` (the text-only answer, no image).
  3. The rejected answer is the model's own answer (greedy by default) on the perturbed image.
  4. The pair is kept only if the task's verifier says that answer is wrong (a task without a
     verifier: if it differs from y_gt after normalising case and whitespace).
chosen = y_gt and rejected are trained later with the CLEAN image; rows refer to it by path.

The model must be frozen here: PGD takes gradients w.r.t. the pixels only (`pgd.pgd_attack`), and
mining runs in eval mode without touching any weight. Everything random is seeded per batch from
`seed`, so mining is repeatable and a resumed MBPO run re-mines to the same pairs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mbpo_bench.trainers.data import PreferencePair, item_prompts

from mbpo_bench.data.items import TaskItem
from mbpo_bench.models.protocol import Prompt

if TYPE_CHECKING:
    import torch

    from mbpo_bench.models.protocol import VisionLanguageModel

NegativeSource = Literal["pgd", "noise", "blind"]


@dataclass
class MiningConfig:
    source: NegativeSource = "pgd"
    iig_filter: bool = True
    iig_null: Literal["text", "black", "noise"] = "text"
    iig_reduce: Literal["mean", "sum"] = "mean"
    iig_top_fraction: float | None = 0.5  # ours: the paper keeps "high-IIG" samples
    iig_threshold: float | None = None
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    random_start: bool = True
    objective: Literal["mean", "sum"] = "mean"  # log p(y_gt | I + delta): token mean or sum
    do_sample: bool = False  # greedy rejected answers (method.md default)
    temperature: float = 1.0
    max_new_tokens: int = 16
    batch_size: int = 16
    limit: int | None = 2000  # candidates: a seeded random subset of the items (None = all)
    reward_max_words: int = 10  # the verifier's length limit
    seed: int = 0


@dataclass
class MiningStats:
    items: int = 0  # items given
    candidates: int = 0  # items with an image, after the `limit` subset
    selected: int = 0
    attacked: int = 0
    kept: int = 0
    iig_mean_all: float = float("nan")
    iig_mean_selected: float = float("nan")
    attack: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["flip_rate"] = self.kept / self.attacked if self.attacked else 0.0
        return out


def is_wrong(item: TaskItem, response: str, max_words: int) -> tuple[bool, str | None]:
    """(the response is a wrong answer, its parsed form) by the item's verifier."""
    if not item.verifier:
        norm = " ".join(response.lower().split())
        return norm != " ".join(item.target.lower().split()), norm
    from mbpo_bench.tasks.verifiers import verify

    verdict = verify(item.verifier, response, item.target, item.options, max_words=max_words)
    return not verdict.correct, verdict.parsed


def _objective(
    vlm: VisionLanguageModel, prompts: list[Prompt], answers: list[str], reduce: str
) -> Any:
    def objective(pixels: torch.Tensor) -> torch.Tensor:
        lp = vlm.answer_logprobs(prompts, answers, pixel_images=pixels, requires_grad=True)
        return lp.sum() if reduce == "sum" else lp.mean()

    return objective


def _negatives(
    vlm: VisionLanguageModel, items: list[TaskItem], cfg: MiningConfig, batch_seed: int
) -> tuple[list[str], dict[str, list[float]]]:
    """Rejected answers for one batch of items, and the per-item attack statistics."""
    import torch
    from mbpo_bench.trainers import pgd

    prompts = item_prompts(items, vlm.image_size)
    gen: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.do_sample,
           "temperature": cfg.temperature, "batch_size": cfg.batch_size}  # fmt: skip
    n = len(items)
    if cfg.source == "blind":
        answers = vlm.generate([Prompt(p.text, None) for p in prompts], **gen)
        nan = [float("nan")] * n
        return [a[0] for a in answers], {"before": nan, "after": nan, "linf": [0.0] * n}
    generator = torch.Generator().manual_seed(batch_seed)
    images = vlm.images_to_tensor([p.image for p in prompts])  # type: ignore[misc]
    objective = _objective(vlm, prompts, [it.target for it in items], cfg.objective)
    if cfg.source == "pgd":
        result = pgd.pgd_attack(
            objective, images, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
            random_start=cfg.random_start, generator=generator,
        )  # fmt: skip
    else:
        result = pgd.noise_attack(objective, images, eps=cfg.eps, generator=generator)
    answers = vlm.generate(prompts, pixel_images=result.images, **gen)
    stats = {
        "before": result.objective_before.tolist(),
        "after": result.objective_after.tolist(),
        "linf": result.linf.tolist(),
    }
    return [a[0] for a in answers], stats


def select_candidates(
    vlm: VisionLanguageModel, items: list[TaskItem], cfg: MiningConfig
) -> tuple[list[int], list[float]]:
    """Indices of the items kept by the IIG filter, and every item's IIG."""
    from mbpo_bench.trainers.iig import compute_iig, select_by_iig

    values = compute_iig(
        vlm,
        item_prompts(items, vlm.image_size),
        [it.target for it in items],
        null=cfg.iig_null,
        reduce=cfg.iig_reduce,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    if not cfg.iig_filter:
        return list(range(len(items))), values.tolist()
    keep = select_by_iig(values, top_fraction=cfg.iig_top_fraction, threshold=cfg.iig_threshold)
    return keep.tolist(), values.tolist()


def candidate_pool(items: Sequence[TaskItem], limit: int | None, seed: int) -> list[TaskItem]:
    """Items with an image; at most `limit` of them, a seeded random subset kept in item order
    (so a limit samples every task of a mixed list, not just the first one)."""
    import torch

    pool = [it for it in items if it.image_path is not None]
    if limit is None or limit >= len(pool):
        return pool
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:limit]
    return [pool[i] for i in sorted(pick.tolist())]


def mine_pairs(
    vlm: VisionLanguageModel,
    items: Sequence[TaskItem],
    cfg: MiningConfig,
    *,
    progress: bool = False,
) -> tuple[list[PreferencePair], MiningStats]:
    """Run the four steps above over `items`; the model is put in eval mode and left frozen."""
    import math

    vlm.model.eval()
    stats = MiningStats(items=len(items))
    pool = candidate_pool(items, cfg.limit, cfg.seed)
    stats.candidates = len(pool)
    if not pool:
        return [], stats
    chosen_idx, iig = select_candidates(vlm, pool, cfg)
    stats.selected = len(chosen_idx)
    stats.iig_mean_all = sum(iig) / len(iig)
    stats.iig_mean_selected = sum(iig[i] for i in chosen_idx) / max(len(chosen_idx), 1)
    pairs: list[PreferencePair] = []
    drops: list[float] = []
    for b, start in enumerate(range(0, len(chosen_idx), cfg.batch_size)):
        idx = chosen_idx[start : start + cfg.batch_size]
        batch = [pool[i] for i in idx]
        rejected, attack = _negatives(vlm, batch, cfg, cfg.seed * 1_000_003 + b)
        stats.attacked += len(batch)
        for k, (item, answer) in enumerate(zip(batch, rejected, strict=True)):
            wrong, parsed = is_wrong(item, answer, cfg.reward_max_words)
            if math.isfinite(attack["before"][k]):
                drops.append(attack["before"][k] - attack["after"][k])
            if not wrong:
                continue
            pairs.append(_pair(item, answer, parsed, iig[idx[k]], cfg, attack, k))
    stats.kept = len(pairs)
    stats.attack = {"logp_drop_mean": sum(drops) / len(drops)} if drops else {}
    return pairs, stats


def _pair(
    item: TaskItem, rejected: str, parsed: str | None, iig: float, cfg: MiningConfig,
    attack: dict[str, list[float]], k: int,
) -> PreferencePair:  # fmt: skip
    return PreferencePair(
        task=item.task,
        doc_id=item.doc_id,
        image_path=str(item.image_path) if item.image_path else None,
        question=item.question,
        target=item.target,
        verifier=item.verifier,
        options=tuple(item.options),
        chosen=item.target,
        rejected=rejected,
        iig=float(iig),
        source=cfg.source,
        rejected_parsed=parsed,
        attack_logp_before=attack["before"][k],
        attack_logp_after=attack["after"][k],
        attack_linf=attack["linf"][k],
        attack_steps=cfg.steps if cfg.source == "pgd" else 0,
    )


def mine_to_file(
    vlm: VisionLanguageModel, items: Sequence[TaskItem], cfg: MiningConfig, out: Path
) -> tuple[list[PreferencePair], MiningStats]:
    """Mine and write `out` (parquet) plus `<out stem>.stats.json` beside it, atomically."""
    from mbpo_bench.trainers.data import write_pairs

    from mbpo_bench.runs import write_json_atomic

    pairs, stats = mine_pairs(vlm, items, cfg)
    write_pairs(out, pairs)
    write_json_atomic(out.with_suffix(".stats.json"), stats.as_dict())
    return pairs, stats


@dataclass
class MineConfig:
    """`mbpo-bench mine`: mining alone, into `<output>/pairs.parquet` (+ pairs.stats.json)."""

    model: str = ""
    data: str = "embedded"
    split: str = "train"
    limit: int | None = None  # first N items of each task
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    trust_remote_code: bool = False
    mining: MiningConfig = field(default_factory=MiningConfig)


PAIRS_FILE = "pairs.parquet"


def run_mine(
    config: MineConfig, output: Path, *, overwrite: bool = False
) -> tuple[list[PreferencePair], MiningStats]:
    import torch
    from mbpo_bench.trainers.data import load_items
    from mbpo_bench.trainers.policy import resolve_start

    from mbpo_bench.models import load_model
    from mbpo_bench.runs import RunDir

    run = RunDir.open(output, overwrite=overwrite, config=config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    items = load_items(config.data, split=config.split, limit=config.limit)
    path, adapter = resolve_start(config.model)
    vlm = load_model(
        path, adapter=adapter, dtype=config.dtype, device=config.device,
        trust_remote_code=config.trust_remote_code,
    )  # fmt: skip
    pairs, stats = mine_to_file(vlm, items, config.mining, run.path / PAIRS_FILE)
    run.finish(pairs=len(pairs), stats=stats.as_dict())
    return pairs, stats
