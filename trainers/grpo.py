"""GRPO with verified rewards on close-ended task items; also MBPO's stage-2 engine.

One step (method.md): sample G responses per prompt (temperature 1.0), reward each with the
task's verifier (correctness + format, max 2), compute group-relative advantages (scaling by
group / batch / none), and minimise the clipped surrogate with the k3 KL to the reference
(adapter disabled with LoRA, a frozen copy under full fine-tuning), aggregated as grpo /
dr_grpo / dapo. One policy update per batch, so pi_old is the policy at batch time (ratio 1 on
the first and only pass) and needs no extra forward.

`make_step_fn` also takes offline pairs and `HybridSettings`: MBPO's hybrid batches are the same
code with some groups replaced by {chosen: 2, rejected: 0} (+ optional online samples). With no
pairs every group is online, so MBPO reduces exactly to GRPO (a test checks it).

Micro-batches (`optim.grad_accum`) split the step's samples after the rollout; the loss
normalisers are those of the whole step, so accumulation changes nothing but memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mbpo_bench.trainers.advantages import STD_EPS, Advantages, Scaling
from mbpo_bench.trainers.hybrid import FlatBatch, Group, HybridSettings, Sample
from mbpo_bench.trainers.loop import (
    IndexStream,
    LoopResult,
    OptimConfig,
    RuntimeConfig,
    StepResult,
)
from mbpo_bench.trainers.losses import Aggregation

from mbpo_bench.models.lora import LoraSettings
from mbpo_bench.models.rollout_speed import GenerationSpeed, RolloutCache

if TYPE_CHECKING:
    import torch
    from mbpo_bench.trainers.data import PreferencePair
    from mbpo_bench.trainers.policy import Policy

    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.models.protocol import Answer, PreparedAnswers, Prompt


@dataclass
class GRPOSettings:
    num_generations: int = 8  # G
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    # TRL's default: no repetition penalty while sampling (a checkpoint's own, e.g. Qwen's 1.05,
    # would sample from a distribution other than the one whose log-probs are optimised)
    repetition_penalty: float = 1.0
    generation_batch_size: int = 64  # prompts per generate call
    beta: float = 0.04  # KL weight (k3 estimator); 0 skips the reference forward
    eps_low: float = 0.2
    eps_high: float = 0.2
    scaling: Scaling = "group"
    aggregation: Aggregation = "grpo"
    adv_eps: float = STD_EPS
    skip_zero_variance: bool = False  # drop groups whose rewards are all equal from the loss
    # DAPO's dynamic sampling: roll out `oversample` x the step's online prompts and keep the
    # groups whose rewards vary (topped up with the others in order); 1 = off
    oversample: int = 1
    reward_max_words: int = 10  # the format reward's length limit
    max_length: int | None = None  # dr_grpo normaliser; None = max_new_tokens (TRL's)
    # sample each prompt in its own generate call seeded by (seed, step, position in the global
    # batch): the same rollouts for any number of processes (slower: G rows per generate call)
    seed_per_prompt: bool = False
    # rollout speed (`models.rollout_speed`): the same samples, faster; all off = plain generate.
    # merged: sample with LoRA folded into fresh copies of the base weights (the originals are
    # never written, so the reference policy stays bit-exact; +1 copy of the LM linears meanwhile)
    merge_lora_for_rollout: bool = False
    rollout_cache: RolloutCache = "dynamic"  # "static": StaticCache (compiled decode on CUDA)
    rollout_compile: bool = True  # with the static cache: let transformers compile the decode
    shared_prefill: bool = False  # one prefill per prompt, its KV cache repeated G times
    # score each micro-batch's answers to one prompt in one sequence behind one copy of the
    # prompt (`models.packing`): the same log-probs and gradients, the prompt's tokens (and its
    # image) run once per group and micro-batch instead of once per answer in the reference and
    # update passes; needs SDPA or eager attention
    packed_scoring: bool = False

    def generation_speed(self) -> GenerationSpeed:
        return GenerationSpeed(
            merge_lora=self.merge_lora_for_rollout,
            cache=self.rollout_cache,
            compile=self.rollout_compile,
            shared_prefill=self.shared_prefill,
        )


@dataclass
class GRPOConfig:
    model: str = ""
    data: str = "embedded"
    split: str = "train"
    limit: int | None = None
    full_finetune: bool = False
    save_merged: bool = False
    trust_remote_code: bool = False
    skip_bad_items: bool = False  # drop items whose image is missing or broken (--skip-bad-items)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    optim: OptimConfig = field(  # batch_size = prompts (groups) per step
        default_factory=lambda: OptimConfig(lr=5e-5, steps=200, batch_size=8, warmup_ratio=0.05)
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)


Config = GRPOConfig  # the name every recipe exposes (trainers/table.py)


@dataclass
class Rollout:
    """A step's groups with, per group, its prompt and the item that verifies its responses."""

    groups: list[Group]
    prompts: list[Prompt]
    items: list[TaskItem]


def score(
    item: TaskItem, responses: Sequence[str], max_words: int
) -> tuple[list[float], list[bool]]:
    """Rewards (correctness + format) and correctness of each response by the item's verifier."""
    from mbpo_bench.tasks.verifiers import verify

    verdicts = [
        verify(item.verifier, r, item.target, item.options, max_words=max_words) for r in responses
    ]
    return [sum(v.components.values()) for v in verdicts], [v.correct for v in verdicts]


def sample(
    policy: Policy,
    prompts: list[Prompt],
    items: list[TaskItem],
    s: GRPOSettings,
    n: int,
    seeds: Sequence[int] | None = None,
) -> list[list[Sample]]:
    """`n` sampled responses per prompt with reward, correctness and their token ids, in one
    batched generate (or, with `seeds`, one generate per prompt after seeding torch)."""
    from mbpo_bench.trainers.hybrid import Sample

    if not prompts or n == 0:
        return [[] for _ in prompts]
    policy.train_mode(False)
    kw = {"max_new_tokens": s.max_new_tokens, "do_sample": True, "temperature": s.temperature,
          "top_p": s.top_p, "num_samples": n, "speed": s.generation_speed(),
          "repetition_penalty": s.repetition_penalty}  # fmt: skip
    gen = policy.vlm.generate_completions
    with policy.sampling():  # runtime.fsdp_rollout=gathered: whole weights for the rollout
        if seeds is None:
            done = gen(prompts, batch_size=s.generation_batch_size, **kw)
        else:
            import torch

            done = []
            for prompt, seed in zip(prompts, seeds, strict=True):
                torch.manual_seed(seed)
                done += gen([prompt], batch_size=1, **kw)
    out = []
    for item, completions in zip(items, done, strict=True):
        rewards, correct = score(item, [c.text for c in completions], s.reward_max_words)
        out.append([
            Sample(c.text, w, ok, "online", c.ids)
            for c, w, ok in zip(completions, rewards, correct, strict=True)
        ])  # fmt: skip
    return out


def rollout(
    policy: Policy,
    online: list[TaskItem],
    offline: list[PreferencePair],
    s: GRPOSettings,
    hybrid: HybridSettings | None,
    seeds: Sequence[int] | None = None,
) -> Rollout:
    """Online groups for `online` items, then offline groups for `offline` pairs; `seeds` (one
    per online item, then one per pair) makes sampling per prompt (`seed_per_prompt`)."""
    from mbpo_bench.trainers import hybrid as hy
    from mbpo_bench.trainers.data import item_prompts

    off_items = [p.as_item() for p in offline]
    prompts = item_prompts(online) + item_prompts(off_items)
    n_on = len(online)
    groups: list[Group] = []
    on_seeds = None if seeds is None else seeds[:n_on]
    off_seeds = None if seeds is None else seeds[n_on:]
    on_samples = sample(policy, prompts[:n_on], online, s, s.num_generations, on_seeds)
    if s.oversample > 1:
        keep = keep_varied(on_samples, n_on // s.oversample)
        online = [online[j] for j in keep]
        on_samples = [on_samples[j] for j in keep]
        prompts = [prompts[j] for j in keep] + prompts[n_on:]
        n_on = len(online)
    for k, samples in enumerate(on_samples):
        groups.append(hy.Group(k, "online", tuple(samples)))
    extra_n = hybrid.offline_extra_samples if hybrid else 0
    extras = sample(policy, prompts[n_on:], off_items, s, extra_n, off_seeds)
    for k, (pair, more) in enumerate(zip(offline, extras, strict=True)):
        groups.append(
            hy.offline_group(
                n_on + k, pair.chosen, pair.rejected,
                chosen_reward=hybrid.chosen_reward if hybrid else 2.0,
                rejected_reward=hybrid.rejected_reward if hybrid else 0.0,
                extra=more,
            )
        )  # fmt: skip
    return Rollout(groups=groups, prompts=prompts, items=[*online, *off_items])


def keep_varied(samples: Sequence[Sequence[Sample]], n: int) -> list[int]:
    """Indices of `n` groups: those whose rewards vary first, then the rest, each in order."""
    varied = [j for j, g in enumerate(samples) if len({x.reward for x in g}) > 1]
    flat = sorted(set(range(len(samples))) - set(varied))
    return sorted((varied + flat)[:n])


def _reward_metrics(ro: Rollout, adv_stats: dict[str, float]) -> dict[str, float]:
    rewards = [s.reward for g in ro.groups for s in g.samples]
    online = [s for g in ro.groups for s in g.samples if s.source == "online"]
    mean = sum(rewards) / max(len(rewards), 1)
    var = sum((r - mean) ** 2 for r in rewards) / max(len(rewards) - 1, 1)
    out = {
        "reward_mean": mean,
        "reward_std": var**0.5,
        "groups_online": float(sum(g.kind == "online" for g in ro.groups)),
        "groups_offline": float(sum(g.kind == "offline" for g in ro.groups)),
        **adv_stats,
    }
    if online:
        out["accuracy"] = sum(bool(s.correct) for s in online) / len(online)
        out["reward_online_mean"] = sum(s.reward for s in online) / len(online)
    return out


def _chunk_loss(
    policy: Policy,
    batch: PreparedAnswers,
    advantages: torch.Tensor,
    s: GRPOSettings,
    norms: dict[str, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The chunk's loss on the sampled token ids (mined texts: their tokens + EOS), with the
    log-probs of the sampling distribution: logits / temperature, for policy and reference.

    `batch` (`prepare_chunks`) is scored twice, reference then policy; diagnostics stay on
    the device (no host sync between micro-batches)."""
    from mbpo_bench.trainers.losses import grpo_loss

    t = s.temperature
    vlm = policy.vlm
    ref = None
    if s.beta != 0.0:
        import torch

        with torch.no_grad(), policy.reference() as reference:
            ref = reference.prepared_logprobs(batch, temperature=t).logps
    lp = vlm.prepared_logprobs(batch, requires_grad=True, temperature=t)
    out = grpo_loss(
        lp.logps, lp.logps.detach(), advantages.to(lp.logps.device, non_blocking=True), lp.mask,
        ref_logps=ref, beta=s.beta, eps_low=s.eps_low, eps_high=s.eps_high,
        aggregation=s.aggregation, max_length=s.max_length or s.max_new_tokens,
        num_sequences=norms["sequences"], num_tokens=norms["tokens"],
    )  # fmt: skip
    # the diagnostics are token means: each chunk's mean weighted by its share of the step's
    # scored tokens (over the world size, like the loss), so the step's value is the token mean
    # of the whole batch whatever the micro-batch split or the number of processes
    share = lp.mask.sum() / norms["tokens"]
    parts = {
        "policy_loss": out.policy_loss.detach(),
        "kl": out.kl.detach() * share,
        "clip_fraction": out.clip_fraction.detach() * share,
        "ratio_mean": out.ratio_mean.detach() * share,
    }
    return out.loss, parts


def _step_pixels(policy: Policy, ro: Rollout) -> torch.Tensor | None:
    """The step's prompt images at the processed geometry, one row per prompt (group), made
    once per step instead of once per micro-batch and pass; None when a prompt has no image
    (each micro-batch then prepares its own, image and text-only prompts apart)."""
    if not ro.prompts or any(p.image is None for p in ro.prompts):
        return None
    return policy.vlm.images_to_tensor([p.image for p in ro.prompts])  # type: ignore[misc]


def prepare_chunks(
    policy: Policy,
    ro: Rollout,
    group_ids: list[int],
    responses: list[Answer],
    size: int,
    packed: bool = False,
) -> list[PreparedAnswers]:
    """Every micro-batch's inputs (template, tokens, pixels, copies), prepared before the first
    forward: each is scored twice (reference, policy) and the loop over them then has nothing
    that waits for the device, so the CPU queues micro-batch k+1 while k runs. Compiled passes
    get one extra pad token per row, so every micro-batch carries a padding mask and reuses
    the graphs of the first step (a batch without padding would compile new ones). `packed`:
    a micro-batch's answers of one group share one copy of their prompt (`grpo.packed_scoring`;
    a packed batch always carries its mask)."""
    import torch

    pixels = _step_pixels(policy, ro)
    pad = 1 if policy.compile_layers else 0
    out = []
    with torch.no_grad():
        for start in range(0, len(group_ids), size):
            ids = group_ids[start : start + size]
            out.append(policy.vlm.prepare_answers(
                [ro.prompts[g] for g in ids], responses[start : start + size],
                pixel_images=None if pixels is None else pixels[ids], extra_pad=pad,
                shared=ids if packed else None,
            ))  # fmt: skip
    return out


def _advantages(flat: FlatBatch, s: GRPOSettings) -> Advantages:
    """Group-relative advantages; "batch" scaling divides by the std of the GLOBAL batch's
    rewards when several processes each hold part of it (groups never straddle ranks)."""
    from mbpo_bench.trainers.advantages import compute_advantages

    from mbpo_bench import parallel

    if s.scaling != "batch" or parallel.world_size() <= 1:
        return compute_advantages(flat.rewards, flat.group_ids, scaling=s.scaling, eps=s.adv_eps)
    import dataclasses

    import torch

    base = compute_advantages(flat.rewards, flat.group_ids, scaling="none", eps=s.adv_eps)
    parts = parallel.gather([float(r) for r in flat.rewards.tolist()])
    rewards = torch.tensor([r for part in parts for r in part], dtype=torch.float32)
    std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
    return dataclasses.replace(base, advantages=base.advantages / (std + s.adv_eps))


def policy_update(policy: Policy, ro: Rollout, s: GRPOSettings, grad_accum: int) -> StepResult:
    """Advantages, then backward over `grad_accum` micro-batches of the step's samples.

    The loss normalisers (sequences, tokens) are those of the global batch over the world size
    (`parallel.normaliser`), so the rank-averaged gradient is the whole batch's gradient.
    """
    from mbpo_bench.trainers.hybrid import flatten

    from mbpo_bench import parallel

    flat = flatten(ro.groups)
    adv = _advantages(flat, s)
    metrics = _reward_metrics(ro, adv.stats())
    keep = [
        i for i in range(len(flat.responses)) if not (s.skip_zero_variance and adv.zero_variance[i])
    ]
    # what is trained on: the sampled token ids; a mined pair's texts (no ids) + EOS
    responses: list[Answer] = [
        flat.token_ids[i] if flat.token_ids[i] is not None else flat.responses[i] for i in keep
    ]
    ids, _ = policy.vlm.answer_token_ids(responses) if keep else ([], [])
    lengths = [len(t) for t in ids]
    norms = {  # collectives: every rank computes them, even one with nothing to train on
        "sequences": parallel.normaliser(float(len(keep))),
        "tokens": parallel.normaliser(float(sum(lengths))),
    }
    if not keep:
        return StepResult(loss=0.0, metrics={**metrics, "policy_loss": 0.0}, samples=0)
    group_ids = [int(flat.group_ids[i]) for i in keep]
    size = -(-len(keep) // grad_accum)
    batches = prepare_chunks(policy, ro, group_ids, responses, size, s.packed_scoring)
    total = None
    sums: dict[str, torch.Tensor] = {}
    policy.train_mode(True)  # the reference passes too: one mode, one compiled graph
    with policy.compiled():  # reference + policy forward and backward; the rollout stays eager
        for k, batch in enumerate(batches):
            sl = slice(k * size, (k + 1) * size)
            with policy.mixed_precision():  # runtime.autocast: forwards only, as torch advises
                loss, parts = _chunk_loss(policy, batch, adv.advantages[keep][sl], s, norms)
            loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
            for name, v in parts.items():
                sums[name] = sums[name] + v if name in sums else v
    metrics.update({k: float(v) for k, v in sums.items()})
    metrics["response_tokens_mean"] = norms["tokens"] / norms["sequences"]
    loss_value = 0.0 if total is None else float(total)
    return StepResult(loss=loss_value, metrics=metrics, samples=len(keep), tokens=sum(lengths))


def fsdp_conflicts(s: GRPOSettings) -> list[tuple[bool, str, str]]:
    """GRPO options that `runtime.strategy=fsdp` refuses: each would make the ranks run
    different numbers of forwards (every forward all-gathers layers from all ranks) or needs the
    whole weights (merged LoRA)."""
    return [
        (s.skip_zero_variance, "grpo.skip_zero_variance", "set it to false"),
        (s.oversample > 1, "grpo.oversample", "set it to 1"),
        (s.merge_lora_for_rollout, "grpo.merge_lora_for_rollout", "set it to false"),
        (s.rollout_cache != "dynamic", "grpo.rollout_cache=static", "use rollout_cache=dynamic"),
        (s.shared_prefill, "grpo.shared_prefill", "set it to false"),
    ]


def _check_sharded_mix(policy: Policy, n_off: int, n_on: int) -> None:
    """Under FSDP every rank must hold as many online and offline groups as the others."""
    from mbpo_bench import parallel
    from mbpo_bench.errors import UserError
    from mbpo_bench.models.common import is_sharded

    world = parallel.world_size()
    if is_sharded(policy.module) and (n_on % world or n_off % world):
        raise UserError(
            f"{n_on} online and {n_off} offline groups per step do not split evenly over {world} "
            "processes, which runtime.strategy=fsdp needs (ranks must run the same forwards) — "
            "choose optim.batch_size and hybrid.offline_ratio so that both are multiples of "
            f"{world}"
        )


def prompt_seed(seed: int, step: int, position: int) -> int:
    """The sampling seed of the prompt at `position` of step `step`'s global batch."""
    return (seed * 1_000_003 + step * 7_919 + (position + 1) * 15_485_863) % (2**31 - 1)


def make_step_fn(
    policy: Policy,
    items: list[TaskItem],
    pairs: list[PreferencePair],
    s: GRPOSettings,
    optim: OptimConfig,
    seed: int,
    hybrid: HybridSettings | None = None,
    twins: list[PreferencePair] | None = None,
) -> tuple[Callable[[int], StepResult], Callable[[int], dict[str, int]]]:
    """The step function (and its data position) over online items and offline pairs.

    With `twins` (aligned with `pairs`; the twin-pair variant, trainers/twins.py) each drawn pair
    brings its twin as a second offline group, so half as many pairs are drawn per step, and the
    image-conditional term is added to the step's gradient."""
    from mbpo_bench.trainers.hybrid import plan_mix

    from mbpo_bench import parallel

    ratio = hybrid.offline_ratio if hybrid is not None else 0.0
    n_off, n_on = plan_mix(optim.batch_size, ratio, len(pairs))
    n_draw = max(1, n_off // 2) if twins is not None and n_off else n_off
    _check_sharded_mix(policy, n_draw, n_on)  # with twins: each drawn pair brings its twin
    online = IndexStream(len(items), n_on * s.oversample, seed=seed)
    offline = IndexStream(len(pairs), n_draw, seed=seed + 1)

    def step(i: int) -> StepResult:
        on = [items[j] for j in parallel.shard(online.batch(i))] if n_on else []
        drawn = parallel.shard(offline.batch(i)) if n_draw else []
        off = [pairs[j] for j in drawn]
        if twins is not None:
            off += [twins[j] for j in drawn]
        seeds = None
        if s.seed_per_prompt:  # by position in the global batch: online groups, then offline
            mine = parallel.shard(range(n_draw))
            where = parallel.shard(range(n_on * s.oversample)) + [n_on + k for k in mine]
            if twins is not None:
                where += [n_on + n_draw + k for k in mine]
            seeds = [prompt_seed(seed, i, k) for k in where]
        ro = rollout(policy, on, off, s, hybrid, seeds)
        result = policy_update(policy, ro, s, optim.grad_accum)
        if twins is not None and hybrid is not None and hybrid.twin_cond_weight and drawn:
            from mbpo_bench.trainers.twins import conditional_loss

            with policy.compiled():
                with policy.mixed_precision():
                    loss, value = conditional_loss(
                        policy, [pairs[j] for j in drawn], [twins[j] for j in drawn],
                        hybrid.twin_cond_beta,
                    )  # fmt: skip
                (hybrid.twin_cond_weight * loss / len(drawn)).backward()
            result.metrics["twin_cond_loss"] = value / len(drawn)
            result.loss += hybrid.twin_cond_weight * value / len(drawn)
        return result

    def position(i: int) -> dict[str, int]:
        return {
            **online.position(i),
            "offline_offset": offline.position(i)["offset"] if n_draw else 0,
        }

    return step, position


def run_grpo(
    config: GRPOConfig, output: Path, *, resume: bool = False, overwrite: bool = False
) -> LoopResult:
    from mbpo_bench.trainers.recipe import save_merged_conflict, start, train

    conflicts = [*fsdp_conflicts(config.grpo), save_merged_conflict(config)]
    s = start(config, output, resume=resume, overwrite=overwrite,
              need_reference=config.grpo.beta != 0.0, conflicts=conflicts)  # fmt: skip
    step, position = make_step(config, s.policy, s.items)
    return train(s, config, step, position, title="grpo", resume=resume)


run = run_grpo


def make_step(
    config: GRPOConfig, policy: Policy, items: list[TaskItem]
) -> tuple[Callable[[int], StepResult], Callable[[int], dict[str, int]]]:
    """The step over online `items` (`make_step_fn` with no offline pairs) and its position."""
    return make_step_fn(policy, items, [], config.grpo, config.optim, config.runtime.seed)
