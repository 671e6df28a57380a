"""Projected gradient descent in pixel space, and its same-budget random-noise ablation.

method.md: find delta in the L-inf ball of radius eps that MINIMISES log p(y_gt | I + delta, q),
with step alpha, K steps and a random start; the model is frozen. Here the model is hidden behind
`objective(images) -> (B,) log-likelihood`, so this module is pure torch and testable without a
model. Images are [0,1] tensors (B, 3, H, W) before normalisation; every iterate satisfies
|delta| <= eps AND 0 <= I + delta <= 1.

Decisions:
- Gradients are taken with `torch.autograd.grad` w.r.t. the images only, so no `.grad` lands on
  (possibly trainable, e.g. LoRA) weights while mining inside a training run.
- The whole batch moves together; each image keeps its own best iterate (the lowest objective
  seen, the final one included), so one easy image does not drag the others.
- The noise ablation draws uniform noise in the same ball (POVID-style "same budget") and reports
  the same statistics, so attack and ablation rows are directly comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) -> (B,) log p(y | image)


@dataclass(frozen=True)
class AttackResult:
    images: torch.Tensor  # (B, 3, H, W) perturbed images, detached, in [0, 1]
    objective_before: torch.Tensor  # (B,) log p(y | I) on the clean image
    objective_after: torch.Tensor  # (B,) log p(y | I + delta) on the returned image
    linf: torch.Tensor  # (B,) max |delta| actually used
    steps: int

    def stats(self) -> dict[str, float]:
        drop = self.objective_before - self.objective_after
        return {
            "attack_logp_before": float(self.objective_before.mean()),
            "attack_logp_after": float(self.objective_after.mean()),
            "attack_logp_drop": float(drop.mean()),
            "attack_linf": float(self.linf.max()) if self.linf.numel() else 0.0,
            "attack_steps": float(self.steps),
        }


def _project(images: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Clamp delta to the eps ball and so that images + delta stays inside [0, 1]."""
    delta = delta.clamp(-eps, eps)
    return (images + delta).clamp(0.0, 1.0) - images


@torch.no_grad()
def _evaluate(objective: Objective, images: torch.Tensor) -> torch.Tensor:
    return objective(images).detach().float()


def pgd_attack(
    objective: Objective,
    images: torch.Tensor,
    *,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 10,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Signed-gradient descent on `objective` inside the L-inf ball of radius `eps` around `images`."""
    if eps < 0 or alpha <= 0 or steps < 0:
        raise ValueError("pgd needs eps >= 0, alpha > 0 and steps >= 0")
    images = images.detach()
    before = _evaluate(objective, images)
    if random_start and eps > 0:
        noise = torch.rand(images.shape, generator=generator, device="cpu").to(images)
        delta = _project(images, (noise * 2 - 1) * eps, eps)
    else:
        delta = torch.zeros_like(images)
    best = delta.clone()
    best_obj = torch.full_like(before, float("inf"))
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            value = objective(images + delta)
            (grad,) = torch.autograd.grad(value.sum(), delta)
        with torch.no_grad():
            value = value.detach().float()
            improved = value < best_obj
            best_obj = torch.where(improved, value, best_obj)
            best[improved] = delta.detach()[improved]
            delta = _project(images, delta.detach() - alpha * grad.sign(), eps)
    final = _evaluate(objective, images + delta)
    improved = final < best_obj
    best_obj = torch.where(improved, final, best_obj)
    best[improved] = delta[improved]
    adv = (images + best).clamp(0.0, 1.0)
    return AttackResult(
        images=adv.detach(),
        objective_before=before,
        objective_after=best_obj,
        linf=(adv - images).abs().flatten(1).amax(1),
        steps=steps,
    )


def noise_attack(
    objective: Objective | None,
    images: torch.Tensor,
    *,
    eps: float = 8 / 255,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """The ablation: uniform noise in the same L-inf ball, no gradient. Objective only for stats."""
    images = images.detach()
    noise = torch.rand(images.shape, generator=generator, device="cpu").to(images)
    delta = _project(images, (noise * 2 - 1) * eps, eps)
    adv = images + delta
    nan = torch.full((images.shape[0],), float("nan"))
    before = _evaluate(objective, images) if objective is not None else nan
    after = _evaluate(objective, adv) if objective is not None else nan
    return AttackResult(
        images=adv.detach(),
        objective_before=before,
        objective_after=after,
        linf=delta.abs().flatten(1).amax(1),
        steps=0,
    )
