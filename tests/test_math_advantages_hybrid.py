"""Pure math: group advantages, hybrid groups."""

from __future__ import annotations

import pytest
import torch
from mbpo_bench.trainers import advantages as adv
from mbpo_bench.trainers import hybrid

torch.set_num_threads(1)


def test_group_advantages_formula_and_zero_variance() -> None:
    rewards = torch.tensor([2.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0])
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    out = adv.compute_advantages(rewards, ids, scaling="group")
    std = torch.tensor([2.0, 0.0]).std()
    assert out.advantages[0].item() == pytest.approx(1.0 / (std.item() + 1e-4))
    assert out.advantages[2:5].tolist() == [0.0, 0.0, 0.0]
    assert out.zero_variance.tolist() == [False, False, True, True, True, False, False]
    assert out.n_groups == 3 and out.n_zero_variance_groups == 1
    none = adv.compute_advantages(rewards, ids, scaling="none")
    assert none.advantages.tolist() == [1.0, -1.0, 0.0, 0.0, 0.0, 1.0, -1.0]
    batch = adv.compute_advantages(rewards, ids, scaling="batch")
    torch.testing.assert_close(batch.advantages, none.advantages / (rewards.std() + 1e-4))
    assert out.stats()["zero_variance_frac"] == pytest.approx(1 / 3)


def test_singleton_group_has_zero_advantage() -> None:
    out = adv.compute_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([5, 7, 7]))
    assert out.advantages[0].item() == 0.0 and out.zero_variance[0]


@pytest.mark.parametrize("scaling", ["group", "batch", "none"])
def test_advantages_equal_trl_formula(scaling: str) -> None:
    """TRL's GRPOTrainer: mean/std per group of `num_generations`, nanstd with Bessel, +1e-4."""
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd

    g = torch.Generator().manual_seed(1)
    n_gen = 4
    rewards = torch.randint(0, 3, (6 * n_gen,), generator=g).float()
    ids = torch.arange(6).repeat_interleave(n_gen)
    mean = rewards.view(-1, n_gen).nanmean(1).repeat_interleave(n_gen)
    if scaling == "batch":
        std = nanstd(rewards).expand_as(rewards)
    else:
        std = nanstd(rewards.view(-1, n_gen), dim=1).repeat_interleave(n_gen)
    expected = rewards - mean
    if scaling != "none":
        expected = expected / (std + 1e-4)
    out = adv.compute_advantages(rewards, ids, scaling=scaling)  # type: ignore[arg-type]
    torch.testing.assert_close(out.advantages, expected)
    trl_zero = torch.isclose(std, torch.zeros_like(std)) if scaling != "batch" else None
    if trl_zero is not None:
        assert out.zero_variance.tolist() == trl_zero.tolist()


def test_hybrid_groups_flatten_and_mix() -> None:
    off = hybrid.offline_group(3, "red", "blue", extra=[hybrid.Sample("red", 2.0, True)])
    on = hybrid.online_group(0, ["a", "b"], [1.0, 1.0], [False, False])
    flat = hybrid.flatten([on, off])
    assert flat.responses == ["a", "b", "red", "blue", "red"]
    assert flat.rewards.tolist() == [1.0, 1.0, 2.0, 0.0, 2.0]
    assert flat.group_ids.tolist() == [0, 0, 1, 1, 1]
    assert flat.sources == ["online", "online", "chosen", "rejected", "online"]
    assert not hybrid.has_variance(on) and hybrid.has_variance(off)
    assert hybrid.plan_mix(8, 0.5, 100) == (4, 4)
    assert hybrid.plan_mix(8, 0.5, 0) == (0, 8)
    assert hybrid.plan_mix(3, 1.0, 1) == (3, 0)
    with pytest.raises(ValueError):
        hybrid.plan_mix(4, 1.5, 2)
