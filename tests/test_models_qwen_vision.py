"""Qwen vision blocks compiled whole (`models/qwen_vision.py` through `compiled_layers`).

Reference: the checkpoint's own vision tower (transformers' forward, one attention call per
image) on the same pixel_values. Backend "eager": dynamo traces the blocks (a graph break would
show), inductor is skipped; CPU fp32 gives the same numbers to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from support_prompts import AttentionShapes, noise_image, tiny_models

from mbpo_bench.models import build_tiny_model, load_model
from mbpo_bench.models import qwen_vision as qv
from mbpo_bench.models.compile import compiled_layers

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny() -> Iterator[Callable[[str], Any]]:
    yield from tiny_models()


def _inputs(vlm: Any, sizes: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """pixel_values / image_grid_thw of noise images at (w, h), through the protocol's geometry."""
    images = [noise_image(k).resize(wh) for k, wh in enumerate(sizes)]
    pixels = vlm.images_to_tensor(images)
    from mbpo_bench.models import Prompt

    seen = vlm.image_sizes([Prompt("x", im) for im in images], pixels)
    return vlm.pixels_to_inputs(pixels, seen)


def _tower(vlm: Any) -> Any:
    return vlm.hf_model.model.visual


def _run(vlm: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = _tower(vlm)(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    return out.pooler_output


def _compiled_equals_tower(
    vlm: Any, inputs: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> tuple[AttentionShapes, int]:
    """Run the tower eager (reference) and inside `compiled_layers` with the SDPA spy; assert
    equal outputs; return the spy and the number of whole-image (full-attention) blocks."""
    reference = _run(vlm, inputs)
    spy = AttentionShapes(monkeypatch)
    with compiled_layers(vlm, backend="eager", qwen_vision=True):
        compiled = _run(vlm, inputs)
    torch.testing.assert_close(compiled, reference, atol=1e-5, rtol=1e-5)
    return spy, len(qv.find(vlm.hf_model.model).full)  # type: ignore[union-attr]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_equal_images_attend_as_one_batch_with_the_towers_numbers(
    tiny: Callable[[str], Any], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three images of one size: each whole-image attention is ONE call over (3, heads, L, d)
    (the old path: three calls of batch 1, and a graph break in every compiled block), the
    blocks compile without a graph break, and the tower's output equals the checkpoint's own.
    Qwen2.5-VL: only its full-attention block batches; its windowed blocks (edge windows
    smaller) keep transformers' per-window calls."""
    from torch._dynamo.utils import counters

    vlm = tiny(family)
    inputs = _inputs(vlm, [(64, 48)] * 3)
    seg = qv.uniform_segment(inputs["image_grid_thw"])
    assert seg is not None and inputs["pixel_values"].shape[0] == 3 * seg
    reference = _run(vlm, inputs)
    torch._dynamo.reset()
    counters.clear()
    spy = AttentionShapes(monkeypatch)
    with compiled_layers(vlm, backend="eager", qwen_vision=True):
        blocks = _tower(vlm).blocks
        assert all(vars(b).get("forward") is not None for b in blocks)
        compiled = _run(vlm, inputs)
        assert all(getattr(b.attn, qv.SEGMENT, None) is None for b in blocks)  # unmarked after
    torch.testing.assert_close(compiled, reference, atol=1e-5, rtol=1e-5)
    assert sum(counters["graph_break"].values()) == 0
    assert int(counters["stats"]["unique_graphs"]) >= 1
    full = len(qv.find(vlm.hf_model.model).full)  # type: ignore[union-attr]
    assert full == (len(blocks) if family == "qwen2_vl" else 1)
    assert spy.shapes.count((3, seg)) == full
    assert (1, seg) not in spy.shapes
    windowed = [s for s in spy.shapes if s[0] == 1]
    assert (len(windowed) > 0) == (family == "qwen2_5_vl")
    for b in blocks:  # the context restored transformers' forwards and left no attribute
        assert "forward" not in vars(b) and "forward" not in vars(b.attn)
        assert not set(qv.ATTRIBUTES) & set(vars(b.attn))
    assert "forward" not in vars(_tower(vlm))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_images_of_different_sizes_fall_back_to_the_towers_own_attention(
    tiny: Callable[[str], Any], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segment lengths differ: every image is its own call, as in transformers (no padding),
    the blocks run eager with their MLPs compiled, and the numbers equal the tower's own."""
    vlm = tiny(family)
    inputs = _inputs(vlm, [(64, 48), (32, 96)])
    assert qv.uniform_segment(inputs["image_grid_thw"]) is None
    lengths = [int(h * w) for _, h, w in inputs["image_grid_thw"].tolist()]
    spy, full = _compiled_equals_tower(vlm, inputs, monkeypatch)
    for n in lengths:
        assert spy.shapes.count((1, n)) == full
    assert not any(b > 1 for b, _ in spy.shapes)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_runs_of_equal_sizes_in_a_mixed_batch_attend_one_call_per_run(
    tiny: Callable[[str], Any], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two images of one size then three of another (an evaluation batch sorted by image
    tokens): one batched call per run in each whole-image attention, none image by image, no
    padding, and the tower's numbers."""
    vlm = tiny(family)
    inputs = _inputs(vlm, [(64, 48)] * 2 + [(32, 96)] * 3)
    runs = qv.segment_runs(inputs["image_grid_thw"])
    assert [n for _, n in runs] == [2, 3] and runs[0][0] != runs[1][0]
    spy, full = _compiled_equals_tower(vlm, inputs, monkeypatch)
    for length, n in runs:
        assert spy.shapes.count((n, length)) == full
        assert (1, length) not in spy.shapes
    assert all(qv.RUNS not in vars(b.attn) for b in _tower(vlm).blocks)


def test_bf16_batched_tower_within_bf16_rounding_and_a_second_geometry(
    tmp_path: Path,
) -> None:
    """bf16 weights (the GPU's dtype): the batched blocks stay within bf16 rounding of the
    tower's own, also for a second image geometry in the same context (the segment length is
    read per call, so a new size is a new graph, not a wrong reshape)."""
    vlm = load_model(build_tiny_model("qwen2_vl", tmp_path / "m", seed=2), dtype="bfloat16")
    for sizes in ([(64, 48)] * 4, [(32, 96)] * 2):
        inputs = _inputs(vlm, sizes)
        reference = _run(vlm, inputs).float()
        with compiled_layers(vlm, backend="eager", qwen_vision=True):
            compiled = _run(vlm, inputs).float()
        torch.testing.assert_close(compiled, reference, atol=2e-2, rtol=2e-2)
