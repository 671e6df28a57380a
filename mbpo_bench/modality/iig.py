"""Image Information Gain: how much the image raises the likelihood of the reference answer.

    IIG(I, q, y) = mean_t [ log p(y_t | I, q, y_<t) - log p(y_t | I0, q, y_<t) ]

I0 is the "no image" condition: by default the text-only prompt (no image tokens at all), or a
black image, or a Gaussian-noise image (method.md), or a mismatched image (another prompt's
image: a seeded derangement over the whole list, as the mismatched probe draws). The mismatched
null is ours: a model never trained without images answers a text-only or black-image prompt out
of distribution (near chance, field notes), so IIG against those nulls measures "in distribution
at all" rather than "the image changed the answer"; another scene is in distribution and exposes
the language prior (method.md's mismatched-image probe). `reduce="sum"` sums instead of averaging over answer
tokens. The same answer is scored in both conditions, so both token masks are the answer's
tokens; positions outside the mask never count. The EOS appended to the reference answer is not
one of them (`AnswerLogprobs.tokens`): IIG is about the answer, not about stopping after it.

The pure part (`iig_from_logprobs`, `select_by_iig`) is tensor math; `compute_iig` drives a model
through the `VisionLanguageModel` protocol in batches and is shared by mining and evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from mbpo_bench.models.protocol import Prompt

if TYPE_CHECKING:
    from PIL import Image

    from mbpo_bench.models.protocol import VisionLanguageModel

NullCondition = Literal["text", "black", "noise", "mismatched"]
Reduce = Literal["mean", "sum"]


def iig_from_logprobs(
    logps_image: torch.Tensor,
    logps_null: torch.Tensor,
    mask: torch.Tensor,
    *,
    reduce: Reduce = "mean",
) -> torch.Tensor:
    """(B,) IIG from per-token answer log-probs under the image and the null condition."""
    m = mask.to(logps_image.dtype)
    gain = ((logps_image - logps_null) * m).sum(-1)
    if reduce == "sum":
        return gain
    if reduce == "mean":
        return gain / m.sum(-1).clamp(min=1.0)
    raise ValueError(f"unknown IIG reduce {reduce!r}; expected mean or sum")


def select_by_iig(
    iig: torch.Tensor, *, top_fraction: float | None = None, threshold: float | None = None
) -> torch.Tensor:
    """Indices (ascending) of samples kept: IIG >= threshold and within the top fraction.

    Either criterion may be None (not applied); with both None every finite IIG is kept.
    The top fraction keeps ceil(fraction * N) samples (at least one of a non-empty batch),
    ties broken by position so the selection is deterministic.
    """
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"IIG top fraction must be in (0, 1], got {top_fraction}")
    keep = torch.isfinite(iig)
    if threshold is not None:
        keep &= iig >= threshold
    if top_fraction is not None and iig.numel():
        n_top = max(1, math.ceil(top_fraction * iig.numel()))
        finite = torch.where(torch.isfinite(iig), iig, torch.full_like(iig, -math.inf))
        order = torch.argsort(finite, descending=True, stable=True)
        in_top = torch.zeros_like(keep)
        in_top[order[:n_top]] = True
        keep &= in_top
    return torch.nonzero(keep).flatten()


def null_image(
    condition: NullCondition, size: int, generator: torch.Generator
) -> Image.Image | None:
    """The I0 image: None for the text-only prompt, else a black or a Gaussian-noise image
    (the mismatched null needs the other prompts: `compute_iig` draws them)."""
    from PIL import Image

    if condition == "text":
        return None
    if condition == "black":
        return Image.new("RGB", (size, size))
    if condition == "noise":
        pixels = (torch.randn((size, size, 3), generator=generator) * 0.25 + 0.5).clamp(0, 1)
        return Image.fromarray((pixels * 255).round().to(torch.uint8).numpy(), "RGB")
    raise ValueError(
        f"unknown IIG null condition {condition!r}; expected text, black, noise or mismatched"
    )


def compute_iig(
    vlm: VisionLanguageModel,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    *,
    null: NullCondition = "text",
    reduce: Reduce = "mean",
    batch_size: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """(N,) IIG of each answer given its prompt (with image), in batches, without gradients."""
    generator = torch.Generator().manual_seed(seed)
    partner: list[int] = []
    if null == "mismatched":
        from mbpo_bench.modality.images import derangement

        partner = derangement(len(prompts), seed)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        ans = list(answers[start : start + batch_size])
        if null == "mismatched":
            nulls = [Prompt(p.text, prompts[partner[start + j]].image) for j, p in enumerate(chunk)]
        else:
            nulls = [Prompt(p.text, null_image(null, vlm.image_size, generator)) for p in chunk]
        with torch.no_grad():
            with_image = vlm.answer_logprobs(chunk, ans)
            without = vlm.answer_logprobs(nulls, ans)
        mask = with_image.tokens & without.tokens  # the answer's tokens, EOS excluded
        out.append(iig_from_logprobs(with_image.logps, without.logps, mask, reduce=reduce).cpu())
    return torch.cat(out) if out else torch.zeros(0)
