"""Hard-negative mining (MBPO stage 1): IIG selection, PGD, rejected answer, verifier filter.

For each candidate (I, q, y_gt) with an image (method.md):
  1. IIG of y_gt (I0 = text-only prompt by default); keep the top fraction / above a threshold
     (`iig_filter=false` keeps every candidate: the "no IIG filter" ablation).
  2. A perturbation that MINIMISES log p(y_gt | I + delta, q): PGD in [0,1] pixel space
     (eps 8/255, alpha 2/255, 10 steps, random start), batched. Ablation sources: `noise`
     (uniform noise of the same L-inf budget) and `blind` (the text-only answer, no image).
  3. The rejected answer is the model's own answer (greedy by default) on the perturbed image.
  4. The pair is kept only if the attack FLIPPED the answer: the model's greedy answer on the
     clean image is right (`require_clean_correct`, default on) and the task's verifier says the
     perturbed answer is wrong (a task without a verifier: it differs from y_gt after
     normalising case and whitespace). An item already answered wrong on the clean image is
     not a hard negative of the attack; it is counted apart (`clean_wrong`), and
     `flip_rate` = flips / attacked items answered right on the clean image. Option (ours,
     `keep="prior"`): also require that wrong answer to be the one the model gives WITHOUT the
     image (greedy, text-only prompt), i.e. the language prior's answer. This is method.md's
     premise for a hard negative made a check: on a prior-consistent item the prior IS the
     truth, so a wrong answer under attack is not a prior fallback and such pairs would train
     the prior in, not out (measured on the embedded benchmark; see the quickstart report).
chosen = y_gt and rejected are trained later with the CLEAN image; rows refer to it by path.

The model must be frozen here: PGD takes gradients w.r.t. the pixels only (`pgd.pgd_attack`), and
mining runs in eval mode without touching any weight. Everything random is seeded per batch from
`seed`, so mining is repeatable and a resumed MBPO run re-mines to the same pairs.

Under torchrun the ranks split the work and every rank ends with the one-process result:
- The unit of work is a whole one-process BATCH (batch b runs on rank b % world), not a single
  candidate (candidates[rank::world]): the PGD random start is seeded per batch and a batch's
  composition (padding, batched kernels) changes the numbers, so only the one-process batches
  make the N-process pairs.parquet equal the one-process file.
- IIG is split the same way and gathered before selection, so every rank selects the same
  candidates from the same numbers (independent recomputation on each GPU need not agree to the
  last bit). The `noise` null draws its images from one generator across batches, so there rank
  0 computes every IIG and shares them.
- Each rank's rows carry their candidate index; the gather is sorted back by it, so pairs and
  statistics come out in the one-process order. Rank 0 writes the files, then all ranks meet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mbpo_bench.trainers.data import PreferencePair, item_prompts

from mbpo_bench.config import RuntimeSection
from mbpo_bench.data.items import TaskItem
from mbpo_bench.models.protocol import Prompt

if TYPE_CHECKING:
    import torch

    from mbpo_bench.models.protocol import VisionLanguageModel

NegativeSource = Literal["pgd", "noise", "blind"]
KeepRule = Literal["wrong", "prior"]


@dataclass
class MiningConfig:
    source: NegativeSource = "pgd"
    iig_filter: bool = True
    iig_null: Literal["text", "black", "noise", "mismatched"] = "text"
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
    keep: KeepRule = "wrong"  # "prior": the wrong answer must also be the text-only answer
    # a hard negative needs the clean-image answer right (False: the pre-v3 rule, which kept
    # items the model already got wrong without any perturbation)
    require_clean_correct: bool = True
    seed: int = 0


@dataclass
class MiningStats:
    items: int = 0  # items given
    candidates: int = 0  # items with an image, after the `limit` subset
    selected: int = 0
    attacked: int = 0
    clean_right: int = 0  # attacked items answered right on the clean image
    clean_wrong: int = 0  # attacked items already wrong on the clean image (reported apart)
    flipped: int = 0  # clean right, perturbed wrong: what the attack did
    kept: int = 0
    iig_mean_all: float = float("nan")
    iig_mean_selected: float = float("nan")
    attack: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["flip_rate"] = self.flipped / self.clean_right if self.clean_right else None
        out["kept_rate"] = self.kept / self.attacked if self.attacked else None
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

    from mbpo_bench.modality import pgd

    prompts = item_prompts(items)
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


def _my_batches(n_batches: int) -> list[int]:
    """Batch numbers this process runs: all of them in one process, b % world == rank under
    torchrun (decided on an open process group, so a missing one degrades to one-process work)."""
    from mbpo_bench import parallel

    if not parallel.active():
        return list(range(n_batches))
    return list(range(parallel.rank(), n_batches, parallel.world_size()))


def _pool_iig(vlm: VisionLanguageModel, items: list[TaskItem], cfg: MiningConfig) -> torch.Tensor:
    """(N,) IIG of every item, the same tensor on every rank (see the module docstring)."""
    import torch

    from mbpo_bench import parallel
    from mbpo_bench.modality.iig import compute_iig

    def iig(part: list[TaskItem]) -> torch.Tensor:
        return compute_iig(
            vlm,
            item_prompts(part),
            [it.target for it in part],
            null=cfg.iig_null,
            reduce=cfg.iig_reduce,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )

    if not parallel.active():
        return iig(items)
    if cfg.iig_null in ("noise", "mismatched"):  # nulls drawn across the whole pool
        shared = parallel.gather(iig(items) if parallel.is_main() else None)[0]
        assert shared is not None
        return shared
    size = cfg.batch_size
    n_batches = -(-len(items) // size)
    mine = [(b, iig(items[b * size : (b + 1) * size])) for b in _my_batches(n_batches)]
    parts = sorted((pair for part in parallel.gather(mine) for pair in part), key=lambda x: x[0])
    return torch.cat([values for _, values in parts])


def select_candidates(
    vlm: VisionLanguageModel, items: list[TaskItem], cfg: MiningConfig
) -> tuple[list[int], list[float]]:
    """Indices of the items kept by the IIG filter, and every item's IIG."""
    from mbpo_bench.modality.iig import select_by_iig

    values = _pool_iig(vlm, items, cfg)
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


# one attacked candidate: (index in the pool, its pair if kept, log-prob drop if measured,
# clean-image answer right, attack flipped it to wrong)
_Row = tuple[int, PreferencePair | None, float | None, bool, bool]


def _attack_batch(
    vlm: VisionLanguageModel, pool: list[TaskItem], idx: list[int], iig: list[float],
    cfg: MiningConfig, b: int,
) -> list[_Row]:  # fmt: skip
    """Steps 2-4 on batch number `b` (pool indices `idx`), seeded by the batch number."""
    import math

    batch = [pool[i] for i in idx]
    rejected, attack = _negatives(vlm, batch, cfg, cfg.seed * 1_000_003 + b)
    priors = _prior_answers(vlm, batch, cfg) if cfg.keep == "prior" else None
    clean = _greedy_answers(vlm, item_prompts(batch), cfg)
    rows: list[_Row] = []
    for k, (i, item, answer) in enumerate(zip(idx, batch, rejected, strict=True)):
        wrong, parsed = is_wrong(item, answer, cfg.reward_max_words)
        clean_right = not is_wrong(item, clean[k], cfg.reward_max_words)[0]
        flipped = wrong and clean_right
        keep = flipped if cfg.require_clean_correct else wrong
        if keep and priors is not None:
            keep = parsed is not None and parsed == priors[k]
        before = attack["before"][k]
        drop = before - attack["after"][k] if math.isfinite(before) else None
        pair = _pair(item, answer, parsed, iig[i], cfg, attack, k) if keep else None
        rows.append((i, pair, drop, clean_right, flipped))
    return rows


def _greedy_answers(
    vlm: VisionLanguageModel, prompts: list[Prompt], cfg: MiningConfig
) -> list[str]:
    answers = vlm.generate(
        prompts, max_new_tokens=cfg.max_new_tokens, do_sample=False, batch_size=cfg.batch_size
    )
    return [a[0] for a in answers]


def _prior_answers(
    vlm: VisionLanguageModel, batch: list[TaskItem], cfg: MiningConfig
) -> list[str | None]:
    """The parsed greedy answer of each item's text-only prompt: the language prior's answer."""
    prompts = [Prompt(p.text, None) for p in item_prompts(batch)]
    answers = _greedy_answers(vlm, prompts, cfg)
    return [
        is_wrong(item, a, cfg.reward_max_words)[1] for item, a in zip(batch, answers, strict=True)
    ]


def mine_pairs(
    vlm: VisionLanguageModel,
    items: Sequence[TaskItem],
    cfg: MiningConfig,
    *,
    progress: bool = False,
) -> tuple[list[PreferencePair], MiningStats]:
    """Run the four steps above over `items`; the model is put in eval mode and left frozen.
    Under torchrun the ranks split the batches and all return the one-process result."""
    from mbpo_bench import parallel

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
    size = cfg.batch_size
    batches = [chosen_idx[start : start + size] for start in range(0, len(chosen_idx), size)]
    mine: list[_Row] = []
    from mbpo_bench.progress import stage_bar

    mine_batches = _my_batches(len(batches))
    title = f"mining ({cfg.source})"
    with stage_bar(title, len(mine_batches), unit="batches", enabled=progress) as advance:
        for b in mine_batches:
            mine += _attack_batch(vlm, pool, batches[b], iig, cfg, b)
            advance(1)
    rows = sorted((row for part in parallel.gather(mine) for row in part), key=lambda r: r[0])
    pairs = [row[1] for row in rows if row[1] is not None]
    drops = [row[2] for row in rows if row[2] is not None]
    stats.attacked = len(rows)
    stats.clean_right = sum(row[3] for row in rows)
    stats.clean_wrong = stats.attacked - stats.clean_right
    stats.flipped = sum(row[4] for row in rows)
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
    vlm: VisionLanguageModel,
    items: Sequence[TaskItem],
    cfg: MiningConfig,
    out: Path,
    *,
    progress: bool = False,
) -> tuple[list[PreferencePair], MiningStats]:
    """Mine and write `out` (parquet) plus `<out stem>.stats.json` beside it, atomically
    (rank 0 under torchrun)."""
    from mbpo_bench.trainers.data import write_pairs

    from mbpo_bench import parallel
    from mbpo_bench.runs import write_json_atomic

    pairs, stats = mine_pairs(vlm, items, cfg, progress=progress and parallel.is_main())
    if parallel.is_main():  # every rank holds the gathered pairs; one writes them
        write_pairs(out, pairs)
        write_json_atomic(out.with_suffix(".stats.json"), stats.as_dict())
    parallel.barrier()  # the file exists for every rank once this returns
    return pairs, stats


@dataclass
class MineConfig:
    """`mbpo-bench mine`: mining alone, into `<output>/pairs.parquet` (+ pairs.stats.json)."""

    model: str = ""
    data: str = "embedded"
    split: str = "train"
    limit: int | None = None  # first N items of each task
    # device, dtype, threads, input protocol and Qwen pixel limits: the section every command
    # shares (mbpo_bench.config.RuntimeSection); mining runs eager, so compile_layers is refused
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    trust_remote_code: bool = False
    skip_bad_items: bool = False  # drop items whose image is missing or broken (--skip-bad-items)
    progress: bool = True  # a bar over the attacked batches (stderr)
    mining: MiningConfig = field(default_factory=MiningConfig)
    # candidates: only the items that have a prior twin (what `train mbpo hybrid.twins=true`
    # mines; trainers/twins.py)
    twins_only: bool = False

    # the flat spellings before the shared runtime section: read for one release, with a warning
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        key: f"runtime.{key}"
        for key in ("device", "dtype", "threads", "protocol", "min_pixels", "max_pixels")
    }


PAIRS_FILE = "pairs.parquet"


def run_mine(
    config: MineConfig, output: Path, *, overwrite: bool = False
) -> tuple[list[PreferencePair], MiningStats]:
    import torch
    from mbpo_bench.trainers.data import load_items
    from mbpo_bench.trainers.policy import resolve_start

    from mbpo_bench import parallel
    from mbpo_bench.errors import UserError
    from mbpo_bench.models import load_model
    from mbpo_bench.runs import RunDir

    rt = config.runtime
    if rt.compile_layers:  # before the run folder exists
        raise UserError(
            "runtime.compile_layers does not apply to mine (PGD mining runs eager) — drop it"
        )
    run = RunDir.open(output, overwrite=overwrite, config=config)
    if rt.threads is not None:
        torch.set_num_threads(rt.threads)
    parallel.setup(rt.device)  # under torchrun: this rank's GPU and the process group
    items = load_items(
        config.data, split=config.split, limit=config.limit, skip_bad_items=config.skip_bad_items
    )
    if config.twins_only:
        from mbpo_bench.trainers.twins import twin_map, with_twin

        items = with_twin(items, twin_map(config.data))
    path, adapter = resolve_start(config.model)
    vlm = load_model(
        path, adapter=adapter, dtype=rt.dtype, device=rt.device,
        trust_remote_code=config.trust_remote_code, protocol=rt.protocol,
        min_pixels=rt.min_pixels, max_pixels=rt.max_pixels,
    )  # fmt: skip
    pairs, stats = mine_to_file(
        vlm, items, config.mining, run.path / PAIRS_FILE, progress=config.progress
    )
    run.finish(pairs=len(pairs), stats=stats.as_dict())
    return pairs, stats
