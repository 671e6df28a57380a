"""Prompts, images and a seeded adapter shared by the model-layer tests (not a test module: no `test_` prefix).

One list, so the tests that compare two code paths on "a mixed batch" (compiled layers,
rollout speed options, input prefetch) exercise the same mix: image and text-only prompts,
interleaved, of different lengths, so both groups are left-padded. Importable because
pyproject's pytest `pythonpath` puts tests/ on sys.path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mbpo_bench.models.protocol import Prompt


def noise_image(seed: int, side: int = 48) -> Image.Image:
    """A seeded RGB noise image (distinct images give distinct rows)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def mixed_prompts(n: int = 7) -> list[Prompt]:
    """The first `n` (at most 7) of: image / text-only prompts, interleaved, lengths differing."""
    prompts = [
        Prompt("Is there a red circle? Answer with yes or no.", noise_image(0)),
        Prompt("How many stars?", None),
        Prompt("What colour is the square?", noise_image(1)),
        Prompt("There is a star. Is there a heart? Answer with yes or no.", None),
        Prompt("Is it round?", noise_image(2)),
        Prompt("Yes or no?", None),
        Prompt("Is the picture dark? Answer with yes or no.", noise_image(3)),
    ]
    return prompts[:n]


def with_random_adapter(folder: Path, dtype: str = "float32") -> Any:
    """The tiny model at `folder` with a LoRA (r 4) whose B matrices are seeded noise, so the
    adapter changes the outputs (peft initialises B to zero, which would hide adapter bugs)."""
    import torch

    from mbpo_bench.models import load_model
    from mbpo_bench.models.lora import LoraSettings, apply_lora

    vlm = load_model(folder, dtype=dtype)
    apply_lora(vlm, LoraSettings(r=4, alpha=8))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in vlm.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return vlm


class AttentionShapes:
    """Records (batch, query length) of every SDPA call, vision tower and LM alike.

    Why: the batching tests (one batched vision attention, one decode graph) are claims about
    the shapes attention ran at, which only a spy on the SDPA entry point can see.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.shapes: list[tuple[int, int]] = []
        real = torch.nn.functional.scaled_dot_product_attention

        def spy(q: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            self.shapes.append((q.shape[0], q.shape[-2]))
            return real(q, *args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)


def tiny_models(seed: int = 1) -> Iterator[Callable[[str], Any]]:
    """Body of a module-scoped fixture: `get(family)` builds and loads a tiny model of that
    family once (in a temporary folder that lives as long as the fixture)."""
    import tempfile

    from mbpo_bench.models import build_tiny_model, load_model

    cache: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def get(family: str) -> Any:
            if family not in cache:
                cache[family] = load_model(build_tiny_model(family, Path(tmp) / family, seed=seed))
            return cache[family]

        yield get
