"""PGD in pixel space and IIG on toy objectives (no model): ball, range, descent, selection."""

from __future__ import annotations

import math

import pytest
import torch

from mbpo_bench.modality import iig, pgd

torch.set_num_threads(1)


def _toy_objective(weight: torch.Tensor):  # type: ignore[no-untyped-def]
    """A differentiable 'log-likelihood' of each image: log sigmoid of a linear score."""

    def objective(images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.logsigmoid((images * weight).flatten(1).sum(1))

    return objective


def _images(seed: int = 0, b: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(b, 3, 8, 8, generator=g)
    imgs[0] = 0.0  # an all-black image: projection must respect the [0, 1] range
    imgs[1] = 1.0
    return imgs


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_ball_and_range_and_lowers_objective(random_start: bool) -> None:
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 8, 8, generator=g) * 0.05
    objective = _toy_objective(weight)
    images = _images()
    eps = 8 / 255
    out = pgd.pgd_attack(
        objective,
        images,
        eps=eps,
        alpha=2 / 255,
        steps=5,
        random_start=random_start,
        generator=torch.Generator().manual_seed(0),
    )
    delta = out.images - images
    assert delta.abs().max().item() <= eps + 1e-6
    assert out.images.min().item() >= 0.0 and out.images.max().item() <= 1.0
    assert (out.objective_after < out.objective_before).all()
    torch.testing.assert_close(out.objective_after, objective(out.images))
    assert out.linf.max().item() <= eps + 1e-6
    stats = out.stats()
    assert stats["attack_logp_drop"] > 0 and stats["attack_steps"] == 5


def test_pgd_never_writes_weight_gradients() -> None:
    weight = torch.nn.Parameter(torch.randn(3, 8, 8) * 0.05)
    pgd.pgd_attack(_toy_objective(weight), _images(), steps=2)
    assert weight.grad is None


def test_pgd_zero_steps_without_start_is_identity() -> None:
    images = _images()
    out = pgd.pgd_attack(_toy_objective(torch.ones(3, 8, 8)), images, steps=0, random_start=False)
    torch.testing.assert_close(out.images, images)


def test_pgd_is_deterministic_for_a_seed() -> None:
    objective = _toy_objective(torch.randn(3, 8, 8) * 0.05)
    a = pgd.pgd_attack(objective, _images(), steps=3, generator=torch.Generator().manual_seed(5))
    b = pgd.pgd_attack(objective, _images(), steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.images, b.images)


def test_noise_ablation_has_the_same_budget() -> None:
    images = _images()
    objective = _toy_objective(torch.randn(3, 8, 8) * 0.05)
    out = pgd.noise_attack(
        objective, images, eps=4 / 255, generator=torch.Generator().manual_seed(0)
    )
    assert (out.images - images).abs().max().item() <= 4 / 255 + 1e-6
    assert out.images.min().item() >= 0 and out.steps == 0
    assert torch.isfinite(out.objective_after).all()
    blind = pgd.noise_attack(None, images, eps=4 / 255)
    assert torch.isnan(blind.objective_before).all()


def test_iig_mean_and_sum_over_answer_tokens() -> None:
    with_img = torch.tensor([[-0.5, -0.5, -9.0], [-1.0, -2.0, -3.0]])
    without = torch.tensor([[-1.5, -2.5, 0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert iig.iig_from_logprobs(with_img, without, mask).tolist() == pytest.approx([1.5, -1.0])
    summed = iig.iig_from_logprobs(with_img, without, mask, reduce="sum")
    assert summed.tolist() == pytest.approx([3.0, -3.0])


def test_iig_selection_by_fraction_threshold_and_both() -> None:
    values = torch.tensor([0.5, 2.0, -1.0, 1.0, float("nan"), 3.0])
    assert iig.select_by_iig(values, top_fraction=0.5).tolist() == [1, 3, 5]
    assert iig.select_by_iig(values, threshold=0.9).tolist() == [1, 3, 5]
    assert iig.select_by_iig(values, top_fraction=0.34, threshold=2.5).tolist() == [5]
    assert iig.select_by_iig(values).tolist() == [0, 1, 2, 3, 5]
    assert iig.select_by_iig(torch.tensor([1.0]), top_fraction=0.01).tolist() == [0]
    with pytest.raises(ValueError):
        iig.select_by_iig(values, top_fraction=0.0)


def test_null_images() -> None:
    g = torch.Generator().manual_seed(0)
    assert iig.null_image("text", 16, g) is None
    black = iig.null_image("black", 16, g)
    assert black is not None and black.size == (16, 16) and black.getextrema()[0] == (0, 0)
    noise = iig.null_image("noise", 16, g)
    assert noise is not None and noise.size == (16, 16)
    assert not math.isclose(noise.getextrema()[0][0], noise.getextrema()[0][1])


def test_mdpo_corruptions_keep_shape_and_range_and_are_seeded() -> None:
    from mbpo_bench.trainers.dpo import DPOConfig, corrupt_images

    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for kind in ("crop", "noise", "black"):
        cfg = DPOConfig(mdpo_corruption=kind)  # type: ignore[arg-type]
        a = corrupt_images(pixels, cfg, torch.Generator().manual_seed(1))
        b = corrupt_images(pixels, cfg, torch.Generator().manual_seed(1))
        assert a.shape == pixels.shape and torch.equal(a, b)
        assert a.min().item() >= 0.0 and a.max().item() <= 1.0
        assert not torch.equal(a, pixels)
