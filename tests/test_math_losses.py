"""GRPO and DPO losses: formulas, and equality with TRL's own code paths on random tensors.

TRL only exposes its losses inside `GRPOTrainer._compute_loss` / `DPOTrainer._compute_loss`; we
call those unbound methods on a minimal stub that carries the attributes they read, with the model
forward replaced by our random per-token log-probs. The loss and its gradient w.r.t. the
log-probs must match ours for every aggregation, clip setting and beta.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from mbpo_bench.trainers import losses

torch.set_num_threads(1)
MAX_LEN = 7


class _Accel:
    num_processes = 1
    device = torch.device("cpu")

    def reduce(self, x: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return x

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return x

    gather_for_metrics = gather


def _random_batch(seed: int, b: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, MAX_LEN + 1, (b,), generator=g)
    mask = torch.arange(MAX_LEN)[None] < lengths[:, None]
    return {
        "logps": -torch.rand(b, MAX_LEN, generator=g) * 3,
        "old": -torch.rand(b, MAX_LEN, generator=g) * 3,
        "ref": -torch.rand(b, MAX_LEN, generator=g) * 3,
        "adv": torch.randn(b, generator=g),
        "mask": mask,
    }


def _trl_grpo(batch: dict[str, torch.Tensor], logps: torch.Tensor, **opts: Any) -> torch.Tensor:
    GRPOTrainer = pytest.importorskip("trl.trainer.grpo_trainer").GRPOTrainer

    def fake_logps(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, None]:
        return logps, torch.zeros_like(logps), None

    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=fake_logps,
        top_entropy_quantile=1.0,
        aux_loss_enabled=False,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=opts["beta"],
        args=SimpleNamespace(
            use_bias_correction_kl=False, delta=None, steps_per_generation=opts["gas"]
        ),
        loss_type=opts["loss_type"],
        epsilon_low=opts["eps_low"],
        epsilon_high=opts["eps_high"],
        use_vllm=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=opts["gas"],
        max_completion_length=MAX_LEN,
        accelerator=_Accel(),
        _entropy_bonus_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    b = logps.shape[0]
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long),
        "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.zeros(b, MAX_LEN, dtype=torch.long),
        "completion_mask": batch["mask"].long(),
        "advantages": batch["adv"],
        "old_per_token_logps": batch["old"],
        "ref_per_token_logps": batch["ref"],
        "num_items_in_batch": torch.tensor(float(opts["total_tokens"])),
    }
    return GRPOTrainer._compute_loss(stub, None, inputs)  # type: ignore[arg-type]


def _ours(batch: dict[str, torch.Tensor], logps: torch.Tensor, **opts: Any) -> losses.GRPOLoss:
    return losses.grpo_loss(
        logps,
        batch["old"],
        batch["adv"],
        batch["mask"],
        ref_logps=batch["ref"],
        beta=opts["beta"],
        eps_low=opts["eps_low"],
        eps_high=opts["eps_high"],
        aggregation=opts["loss_type"],
        max_length=MAX_LEN,
        num_sequences=opts.get("num_sequences"),
        num_tokens=opts.get("num_tokens"),
    )


@pytest.mark.parametrize("aggregation", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize(("beta", "eps_low", "eps_high"), [(0.04, 0.2, 0.2), (0.0, 0.2, 0.28)])
def test_grpo_loss_equals_trl(
    aggregation: str, beta: float, eps_low: float, eps_high: float
) -> None:
    batch = _random_batch(seed=len(aggregation) + int(beta * 100))
    opts = {"beta": beta, "eps_low": eps_low, "eps_high": eps_high, "loss_type": aggregation}
    total = int(batch["mask"].sum())
    mine_lp = batch["logps"].clone().requires_grad_(True)
    trl_lp = batch["logps"].clone().requires_grad_(True)
    mine = _ours(batch, mine_lp, **opts)
    theirs = _trl_grpo(batch, trl_lp, gas=1, total_tokens=total, **opts)
    torch.testing.assert_close(mine.loss, theirs)
    mine.loss.backward()
    theirs.backward()
    torch.testing.assert_close(mine_lp.grad, trl_lp.grad)


@pytest.mark.parametrize("aggregation", ["grpo", "dr_grpo", "dapo"])
def test_grpo_accumulated_halves_equal_trl_accumulation(aggregation: str) -> None:
    """Two micro-batches with global normalisers == TRL with gradient_accumulation_steps=2."""
    batch = _random_batch(seed=7, b=8)
    opts = {"beta": 0.04, "eps_low": 0.2, "eps_high": 0.2, "loss_type": aggregation}
    total = int(batch["mask"].sum())
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    mine = sum(_ours(h, h["logps"], num_sequences=8, num_tokens=total, **opts).loss for h in halves)
    theirs = sum(_trl_grpo(h, h["logps"], gas=2, total_tokens=total, **opts) for h in halves)
    full = _ours(batch, batch["logps"], **opts).loss
    torch.testing.assert_close(mine, full)
    # TRL's "grpo" divides each micro-batch mean by the accumulation steps: exact for equal halves
    torch.testing.assert_close(mine, theirs)


def test_grpo_ratio_one_is_plain_policy_gradient_and_kl_zero_at_reference() -> None:
    batch = _random_batch(seed=3)
    lp = batch["logps"]
    out = losses.grpo_loss(lp, lp, batch["adv"], batch["mask"], ref_logps=lp, beta=0.5)
    m = batch["mask"].float()
    per_seq = -(batch["adv"][:, None] * m).sum(-1) / m.sum(-1)
    assert out.loss.item() == pytest.approx(per_seq.mean().item(), abs=1e-6)
    assert out.kl.item() == 0.0 and out.clip_fraction.item() == 0.0
    assert out.ratio_mean.item() == pytest.approx(1.0)


def test_k3_is_nonnegative_and_zero_only_at_equality() -> None:
    a = torch.randn(100)
    b = torch.randn(100)
    assert (losses.k3_kl(a, b) >= 0).all()
    assert losses.k3_kl(a, a).abs().max().item() == 0.0


def test_clip_fraction_counts_only_active_clipping() -> None:
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]]))
    out = losses.grpo_loss(
        lp, torch.zeros_like(lp), torch.tensor([1.0]), torch.ones_like(lp, dtype=torch.bool)
    )
    assert out.clip_fraction.item() == pytest.approx(0.5)  # ratios 1.5 clipped for A > 0 only


def _trl_dpo(
    pol: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    DPOTrainer = pytest.importorskip("trl.trainer.dpo_trainer").DPOTrainer

    def model(**kwargs: Any) -> SimpleNamespace:
        z = torch.zeros_like(pol)
        return SimpleNamespace(log_probs=pol, entropy=z, mean_logits=z, is_top1=z.bool())

    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accel(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        _total_train_tokens=0,
        _tp_size=1,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    n, t = pol.shape
    inputs = {
        "input_ids": torch.zeros(n, t + 1, dtype=torch.long),
        "attention_mask": torch.ones(n, t + 1, dtype=torch.long),
        "completion_mask": torch.cat([torch.zeros(n, 1), mask.float()], 1).long(),
        "ref_chosen_logps": ref_c,
        "ref_rejected_logps": ref_r,
    }
    return DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_equals_trl(beta: float) -> None:
    g = torch.Generator().manual_seed(11)
    b = 5
    mask = torch.rand(2 * b, MAX_LEN, generator=g) > 0.3
    per_token = (-torch.rand(2 * b, MAX_LEN, generator=g) * 2) * mask
    ref_c, ref_r = -torch.rand(b, generator=g) * 5, -torch.rand(b, generator=g) * 5
    mine_pt = per_token.clone().requires_grad_(True)
    seq = mine_pt.sum(-1)
    mine = losses.dpo_loss(seq[:b], seq[b:], ref_c, ref_r, beta=beta)
    theirs_pt = per_token.clone().requires_grad_(True)
    theirs = _trl_dpo(theirs_pt, ref_c, ref_r, mask, beta)
    torch.testing.assert_close(mine.loss, theirs)
    mine.loss.backward()
    theirs.backward()
    torch.testing.assert_close(mine_pt.grad, theirs_pt.grad)
    stats = mine.stats()
    assert set(stats) == {"reward_chosen", "reward_rejected", "reward_margin", "pair_accuracy"}


def test_mdpo_conditional_and_anchor_terms() -> None:
    pc, pcc = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    rc, rcc = torch.tensor([-1.5, -1.5]), torch.tensor([-2.5, -2.5])
    cond = losses.mdpo_conditional_loss(pc, pcc, rc, rcc, beta=0.2)
    expected = -F.logsigmoid(0.2 * ((pc - rc) - (pcc - rcc)))
    torch.testing.assert_close(cond.losses, expected)
    anchor = losses.anchor_loss(pc, rc, beta=0.2, delta=0.1)
    torch.testing.assert_close(anchor, -F.logsigmoid(0.2 * (pc - rc) - 0.1))


def test_unknown_aggregation_and_missing_max_length_raise() -> None:
    x = torch.zeros(1, 2)
    m = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        losses.aggregate(x, m, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_length"):
        losses.aggregate(x, m, "dr_grpo")
