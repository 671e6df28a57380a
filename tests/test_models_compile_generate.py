"""Evaluation's greedy `generate` inside `compiled_layers(qwen_vision=True)` (`mbpo-bench eval
--compile`): the vision tower compiles as in scoring (Qwen: one batched attention call when the
images share one size), the LM layers, given the KV cache, run their eager forward. The
reference is the eager path's greedy texts on the same prompts. Backend "eager" (dynamo traces,
inductor skipped) in the fast tests; the slow one runs inductor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from support_prompts import AttentionShapes, noise_image, tiny_models

from mbpo_bench.models import Prompt
from mbpo_bench.models import compile as compile_mod
from mbpo_bench.models import qwen_vision as qv
from mbpo_bench.models.compile import compiled_layers

torch.set_num_threads(1)
WORDS = ["cat", "red square", "dog", "star", "tree", "blue car"]


@pytest.fixture(scope="module")
def tiny() -> Iterator[Callable[[str], Any]]:
    yield from tiny_models()


def _prompts(n: int, offset: int = 0) -> list[Prompt]:
    return [Prompt(f"Is there a {WORDS[k % len(WORDS)]}? Answer yes or no.",
                   noise_image(k + offset).resize((64, 48))) for k in range(n)]  # fmt: skip


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _spy_cached_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the layer classes whose compiled function got a KV cache."""
    calls: list[str] = []
    real = compile_mod._compiled_forward

    def spy(cls: type, backend: str) -> Callable[..., Any]:
        fn = real(cls, backend)

        def counted(*args: Any, **kwargs: Any) -> Any:
            if any(kwargs.get(k) is not None for k in compile_mod.CACHE_KWARGS):
                calls.append(cls.__name__)
            return fn(*args, **kwargs)

        return counted

    monkeypatch.setattr(compile_mod, "_compiled_forward", spy)
    return calls


def _generate(vlm: Any, prompts: list[Prompt], n: int) -> list[list[str]]:
    return vlm.generate(prompts, max_new_tokens=n, min_new_tokens=n, batch_size=len(prompts))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_5_vl"])
def test_greedy_generate_in_the_compiled_context_equals_eager_without_recompiling(
    tiny: Callable[[str], Any], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same greedy texts; no LM layer ran compiled with the cache; a second call at another
    batch size and length compiles no new graph; Qwen's vision attention ran as one batched
    call over the 4 images (none image by image)."""
    from torch._dynamo.utils import counters

    vlm = tiny(family)
    first, second = _prompts(4), _prompts(3, offset=10)
    eager = (_generate(vlm, first, 4), _generate(vlm, second, 6))
    cached = _spy_cached_calls(monkeypatch)
    torch._dynamo.reset()
    counters.clear()
    with compiled_layers(vlm, backend="eager", qwen_vision=True):
        a = _generate(vlm, first, 4)
        graphs = _graphs()
        b = _generate(vlm, second, 6)
        assert _graphs() == graphs  # batch 3, 6 tokens: the same graphs
    assert (a, b) == eager
    assert cached == []
    breaks = {k: v for k, v in counters["graph_break"].items() if "ContextVar" not in k}
    assert breaks == {}  # (CLIP's output-capturing hook breaks on torch < 2.15: known)
    spy = AttentionShapes(monkeypatch)  # (a spy inside the graphs adds guards: its own pass)
    with compiled_layers(vlm, backend="eager", qwen_vision=True):
        assert (_generate(vlm, first, 4), _generate(vlm, second, 6)) == eager
    if family != "llava":
        inputs = vlm.pixels_to_inputs(*_pixels(vlm, first))
        seg = qv.uniform_segment(inputs["image_grid_thw"])
        assert (4, seg) in spy.shapes and (3, seg) in spy.shapes
        assert (1, seg) not in spy.shapes


def _pixels(vlm: Any, prompts: list[Prompt]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    pixels = vlm.images_to_tensor([p.image for p in prompts])
    return pixels, vlm.image_sizes(prompts, pixels)


@pytest.mark.slow
def test_inductor_generate_in_the_compiled_context_equals_eager(
    tiny: Callable[[str], Any],
) -> None:
    vlm = tiny("qwen2_vl")
    prompts = _prompts(4)
    eager = _generate(vlm, prompts, 4)
    with compiled_layers(vlm, qwen_vision=True):
        assert _generate(vlm, prompts, 4) == eager
        assert _generate(vlm, prompts[:3], 4) == eager[:3]
