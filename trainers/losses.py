"""Policy losses: GRPO clipped surrogate with k3 KL, DPO and mDPO's terms. Pure tensor math.

GRPO (method.md): per token, ratio = pi_theta / pi_old clipped to [1 - eps_low, 1 + eps_high];
loss_t = -min(ratio * A, clip(ratio) * A) + beta * k3, with the k3 estimator of KL to the
reference, exp(ref - logp) - (ref - logp) - 1. Aggregation over tokens:
  - "grpo":    mean over each sequence's tokens, then mean over sequences;
  - "dr_grpo": sum over all tokens / (number of sequences * max completion length);
  - "dapo":    sum over all tokens / number of tokens in the batch.

Gradient accumulation: the normalisers (number of sequences, number of tokens) belong to the whole
optimizer batch, not to one micro-batch. Callers pass them as `num_sequences` / `num_tokens`, so
the sum of the micro-batch losses IS the full-batch loss for every aggregation (no approximation,
not even for "dapo" with ragged lengths). Left out, they default to this batch.

DPO: -log sigmoid(beta * ((pc - rc) - (pr - rr))) with sequence log-probs summed over tokens.
mDPO's conditional term is the same loss with the chosen answer on a corrupted image as the
rejected side; its anchor term pushes the chosen reward above `delta`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Aggregation = Literal["grpo", "dr_grpo", "dapo"]


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref): exp(ref - logp) - (ref - logp) - 1 >= 0."""
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1.0


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    aggregation: Aggregation,
    *,
    max_length: int | None = None,
    num_sequences: float | None = None,
    num_tokens: float | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar with one of the three aggregations."""
    m = mask.to(per_token.dtype)
    n_seq = float(per_token.shape[0]) if num_sequences is None else float(num_sequences)
    if aggregation == "grpo":
        per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        return per_seq.sum() / max(n_seq, 1.0)
    if aggregation == "dr_grpo":
        if max_length is None:
            raise ValueError("dr_grpo aggregation needs max_length (the max completion length)")
        return (per_token * m).sum() / (max(n_seq, 1.0) * max_length)
    if aggregation == "dapo":
        n_tok = m.sum().clamp(min=1.0) if num_tokens is None else max(float(num_tokens), 1.0)
        return (per_token * m).sum() / n_tok
    raise ValueError(f"unknown loss aggregation {aggregation!r}; expected grpo, dr_grpo or dapo")


@dataclass(frozen=True)
class GRPOLoss:
    loss: torch.Tensor  # scalar, carries gradients
    policy_loss: torch.Tensor  # scalar, detached: the surrogate part
    kl: torch.Tensor  # scalar, detached: masked token mean of k3 (0 without a reference)
    clip_fraction: torch.Tensor  # scalar, detached: tokens whose ratio left the clip region
    ratio_mean: torch.Tensor  # scalar, detached


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.04,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: Aggregation = "grpo",
    max_length: int | None = None,
    num_sequences: float | None = None,
    num_tokens: float | None = None,
) -> GRPOLoss:
    """Clipped-surrogate GRPO loss of (B, T) token log-probs with (B,) advantages."""
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    surrogate = -torch.min(ratio * adv, clipped * adv)
    per_token = surrogate
    m = mask.bool()
    agg = {
        "aggregation": aggregation,
        "max_length": max_length,
        "num_sequences": num_sequences,
        "num_tokens": num_tokens,
    }
    kl_mean = logps.new_zeros(())
    if ref_logps is not None and beta != 0.0:
        kl = k3_kl(logps, ref_logps)
        per_token = surrogate + beta * kl
        kl_mean = (kl * m).sum() / m.sum().clamp(min=1)
    elif ref_logps is not None:
        kl_mean = (k3_kl(logps, ref_logps) * m).sum() / m.sum().clamp(min=1)
    loss = aggregate(per_token, m, **agg)  # type: ignore[arg-type]
    policy = aggregate(surrogate.detach(), m, **agg)  # type: ignore[arg-type]
    low = (ratio < 1.0 - eps_low) & (adv < 0)
    high = (ratio > 1.0 + eps_high) & (adv > 0)
    n_valid = m.sum().clamp(min=1)
    return GRPOLoss(
        loss=loss,
        policy_loss=policy.detach(),
        kl=kl_mean.detach(),
        clip_fraction=(((low | high) & m).sum() / n_valid).detach().float(),
        ratio_mean=((ratio * m).sum() / n_valid).detach(),
    )


@dataclass(frozen=True)
class DPOLoss:
    losses: torch.Tensor  # (B,) per pair, carries gradients
    chosen_rewards: torch.Tensor  # (B,) beta * (pc - rc), detached
    rejected_rewards: torch.Tensor  # (B,) beta * (pr - rr), detached

    @property
    def loss(self) -> torch.Tensor:
        return self.losses.mean()

    def stats(self) -> dict[str, float]:
        margin = self.chosen_rewards - self.rejected_rewards
        return {
            "reward_chosen": float(self.chosen_rewards.mean()),
            "reward_rejected": float(self.rejected_rewards.mean()),
            "reward_margin": float(margin.mean()),
            "pair_accuracy": float((margin > 0).float().mean()),
        }


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
) -> DPOLoss:
    """Sigmoid DPO loss of (B,) sequence log-probs (summed over answer tokens)."""
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return DPOLoss(
        losses=losses,
        chosen_rewards=(beta * chosen).detach(),
        rejected_rewards=(beta * rejected).detach(),
    )


def mdpo_conditional_loss(
    policy_chosen: torch.Tensor,
    policy_chosen_corrupt: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_chosen_corrupt: torch.Tensor,
    *,
    beta: float = 0.1,
) -> DPOLoss:
    """mDPO's conditional preference: the chosen answer with the clean image over the corrupted one."""
    return dpo_loss(policy_chosen, policy_chosen_corrupt, ref_chosen, ref_chosen_corrupt, beta=beta)


def anchor_loss(
    policy_chosen: torch.Tensor, ref_chosen: torch.Tensor, *, beta: float = 0.1, delta: float = 0.0
) -> torch.Tensor:
    """mDPO's anchor: -log sigmoid(beta * (pc - rc) - delta), keeps the chosen likelihood up. (B,)"""
    return -F.logsigmoid(beta * (policy_chosen - ref_chosen) - delta)
