"""Group-relative advantages for GRPO: A_i = (r_i - mean(r_group)) / (std + 1e-4).

Groups are given as integer ids, not as a (P, G) view, because MBPO's hybrid batches mix groups of
different sizes (an offline group is {chosen, rejected} plus optional online samples, an online
group has G samples). The standard deviation is the unbiased one (Bessel's correction), which is
what TRL uses, so our advantages equal TRL's for equal-size groups. A group of one sample has no
spread: its std is 0 and its advantage 0.

Scaling (method.md): "group" divides by the group's std, "batch" by the std of all rewards in the
batch, "none" does not divide (Dr. GRPO). Zero-variance groups (all rewards equal) carry no
learning signal; they are reported, and `skip_zero_variance` lets a trainer drop them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Scaling = Literal["group", "batch", "none"]
STD_EPS = 1e-4  # method.md: A = (r - mean) / (std + 1e-4); trainers expose it as `adv_eps`


@dataclass(frozen=True)
class Advantages:
    advantages: torch.Tensor  # (N,) float32
    group_mean: torch.Tensor  # (N,) mean reward of each sample's group
    group_std: torch.Tensor  # (N,) unbiased std of each sample's group (0 for size-1 groups)
    zero_variance: torch.Tensor  # (N,) bool: the sample's group has equal rewards
    n_groups: int
    n_zero_variance_groups: int

    def stats(self) -> dict[str, float]:
        a = self.advantages
        return {
            "adv_mean": float(a.mean()) if a.numel() else 0.0,
            "adv_std": float(a.std()) if a.numel() > 1 else 0.0,
            "adv_abs_mean": float(a.abs().mean()) if a.numel() else 0.0,
            "adv_max": float(a.max()) if a.numel() else 0.0,
            "adv_min": float(a.min()) if a.numel() else 0.0,
            "zero_variance_groups": float(self.n_zero_variance_groups),
            "zero_variance_frac": self.n_zero_variance_groups / max(self.n_groups, 1),
        }


def _group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map arbitrary ids to 0..K-1 (in order of first appearance is not needed, only equality)."""
    uniques, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, int(uniques.numel())


def group_statistics(
    rewards: torch.Tensor, group_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (group mean, unbiased group std, group size), computed with scatter sums."""
    rewards = rewards.float()
    index, k = _group_index(group_ids)
    count = torch.zeros(k, dtype=torch.float32, device=rewards.device).index_add_(
        0, index, torch.ones_like(rewards)
    )
    total = torch.zeros(k, dtype=torch.float32, device=rewards.device).index_add_(0, index, rewards)
    mean = total / count
    sq = torch.zeros(k, dtype=torch.float32, device=rewards.device).index_add_(
        0, index, (rewards - mean[index]) ** 2
    )
    var = torch.where(count > 1, sq / (count - 1).clamp(min=1.0), torch.zeros_like(sq))
    return mean[index], var.sqrt()[index], count[index]


def compute_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    scaling: Scaling = "group",
    eps: float = STD_EPS,
) -> Advantages:
    """Advantages of a flat batch of samples whose groups are given by `group_ids` (N,)."""
    if rewards.shape != group_ids.shape or rewards.dim() != 1:
        raise ValueError("rewards and group_ids must be 1-D tensors of the same length")
    rewards = rewards.float()
    mean, std, _count = group_statistics(rewards, group_ids)
    centred = rewards - mean
    if scaling == "group":
        advantages = centred / (std + eps)
    elif scaling == "batch":
        batch_std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        advantages = centred / (batch_std + eps)
    elif scaling == "none":
        advantages = centred
    else:
        raise ValueError(f"unknown advantage scaling {scaling!r}; expected group, batch or none")
    zero = torch.isclose(std, torch.zeros_like(std))
    index, k = _group_index(group_ids)
    zero_groups = torch.zeros(k, dtype=torch.bool, device=rewards.device)
    zero_groups[index[zero]] = True
    return Advantages(
        advantages=advantages,
        group_mean=mean,
        group_std=std,
        zero_variance=zero,
        n_groups=k,
        n_zero_variance_groups=int(zero_groups.sum()),
    )
