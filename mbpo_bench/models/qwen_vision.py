"""Qwen2-VL / Qwen2.5-VL vision blocks compiled whole: equal-length images as one batched SDPA.

Why: transformers' vision attention (`VisionAttention`, `Qwen2_5_VLVisionAttention` in 5.17 and
5.24) splits the packed patches of a batch into one attention call per image with
`torch.split(..., (cu_seqlens[1:] - cu_seqlens[:-1]).tolist())` whenever the attention
implementation is not flash-attention (sdpa, eager). On the H200 that means 64 small SDPA
calls per block at batch 64 and, under torch.compile, a data-dependent graph break in every
block (the lengths come from a device tensor), so the blocks' attention ran eager.

The exact shortcut: the attention is block-diagonal over the images (each image, or each video
frame, attends to itself only). When every segment has the same length L (one protocol, one
photo size: the evaluation's common case), the packed sequence of n*L tokens is a batch of n
equal segments, and `reshape(n, L, heads, dim)` turns the block-diagonal attention into one
batched call of the same attention function (the model's own `sdpa` / `eager` interface), with
no padding and no graph break. The segment length is read once per tower call on the host
(`grid_thw.tolist()`, before the blocks) and handed to the attention modules as a Python int,
so a compiled block specialises on the image geometry (one graph per geometry), never on the
batch composition.

Images of different sizes in one call: the blocks run eager (a graph per batch composition
would recompile without end), their MLPs compiled (`compile.py`); consecutive images of one
size (evaluation batches are sorted by image tokens, so sizes come in runs) attend as one
batched call per run, no padding. Fallbacks (the checkpoint's own code runs): every image of
the call a different size (one call per image, as transformers does), flash-attention
(already varlen, no split), and Qwen2.5-VL's windowed blocks (windows at the image's edges are
smaller, so their lengths differ; only its `fullatt_block_indexes` blocks take the batched
path). Tested equal to the checkpoint's own
tower on tiny Qwen2-VL and Qwen2.5-VL (tests/test_models_compile.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEGMENT = "_mbpo_segment"  # attention-module attribute: the uniform segment length, this call
RUNS = "_mbpo_runs"  # attention-module attribute: ((length, count), ...) of a mixed-size call
ATTRIBUTES = (SEGMENT, RUNS)
# the attention classes whose forward `_batched_attention` mirrors (transformers 5.17 .. 5.24)
KNOWN_ATTENTION = ("VisionAttention", "Qwen2_5_VLVisionAttention")


@dataclass
class QwenVision:
    """The parts of a Qwen vision tower that the batched path touches."""

    tower: Any  # Qwen2VisionTransformerPretrainedModel / Qwen2_5_VisionTransformerPretrainedModel
    blocks: list[Any]  # every vision block (compiled whole when its attention is batched)
    full: list[Any] = field(default_factory=list)  # attention modules over whole images


def find(inner: Any) -> QwenVision | None:
    """The Qwen vision tower of `inner` (the transformers model's `.model`), None for others or
    for an attention class this module does not know (then nothing changes)."""
    tower = getattr(inner, "visual", None)
    blocks = list(getattr(tower, "blocks", None) or [])
    if not blocks or type(blocks[0].attn).__name__ not in KNOWN_ATTENTION:
        return None
    indexes = getattr(tower, "fullatt_block_indexes", None)  # Qwen2.5-VL; Qwen2-VL: all full
    full = [b.attn for i, b in enumerate(blocks) if indexes is None or i in indexes]
    return QwenVision(tower, blocks, full)


def segment_runs(grid_thw: Any) -> list[tuple[int, int]]:
    """(length, count) of the consecutive equal segments (one per image / video frame: h * w
    patches, t frames) in packed order, as `cu_seqlens` cuts them. One host read per tower call."""
    runs: list[tuple[int, int]] = []
    for t, h, w in grid_thw.tolist():
        length = int(h) * int(w)
        for _ in range(int(t)):
            if runs and runs[-1][0] == length:
                runs[-1] = (length, runs[-1][1] + 1)
            else:
                runs.append((length, 1))
    return runs


def uniform_segment(grid_thw: Any) -> int | None:
    """The common patch count of every image / video frame in `grid_thw` (rows t, h, w), or None
    when they differ."""
    runs = segment_runs(grid_thw)
    return runs[0][0] if len(runs) == 1 else None


def batched_attention(attn: Any) -> Callable[..., Any]:
    """The forward bound on one vision attention module: transformers' own forward, except
    while the tower marked a uniform segment length L (`SEGMENT`), when the packed sequence is
    attended as (n, heads, L, dim) in one call of the model's attention interface, or runs of
    equal segments (`RUNS`, a mixed-size call, eager), one such call per run."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    module = sys.modules[type(attn).__module__]
    rotary = module.apply_rotary_pos_emb_vision
    eager_attention = module.eager_attention_forward
    original = type(attn).forward

    def forward(
        hidden_states: Any,
        cu_seqlens: Any,
        position_embeddings: tuple[Any, Any] | None = None,
        max_seqlen: int | None = None,
        **kwargs: Any,
    ) -> Any:
        seg = getattr(attn, SEGMENT, None)  # an int attribute: dynamo guards on its value
        runs: tuple[tuple[int, int], ...] = (getattr(attn, RUNS, None) or ()) if seg is None else ()
        if (seg is None and not runs) or position_embeddings is None:
            return original(attn, hidden_states, cu_seqlens, position_embeddings, max_seqlen,
                            **kwargs)  # fmt: skip
        # transformers' own steps up to the attention call (qkv, rotary), then batched calls
        seq = hidden_states.shape[0]
        qkv = attn.qkv(hidden_states).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3)
        q, k, v = qkv.unbind(0)
        cos, sin = position_embeddings
        q, k = rotary(q, k, cos, sin)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            attn.config._attn_implementation, eager_attention
        )

        def attend(q: Any, k: Any, v: Any, length: int) -> Any:
            """(n * length, heads, dim) of n equal segments -> (n * length, heads * dim)."""
            q, k, v = (t.reshape(-1, length, attn.num_heads, t.shape[-1]).transpose(1, 2)
                       for t in (q, k, v))  # fmt: skip
            out, _ = interface(
                attn, q, k, v, attention_mask=None, scaling=attn.scaling,
                dropout=0.0 if not attn.training else attn.attention_dropout, is_causal=False,
                **kwargs,
            )  # fmt: skip
            return out.reshape(-1, out.shape[-2] * out.shape[-1])

        if seg is not None:
            out = attend(q, k, v, seg)
        else:
            import torch

            sizes = [length * n for length, n in runs]
            parts = zip(runs, q.split(sizes), k.split(sizes), v.split(sizes), strict=True)
            out = torch.cat([attend(a, b, c, length) for (length, _), a, b, c in parts])
        return attn.proj(out.reshape(seq, -1).contiguous())

    forward.reads_segment = True  # type: ignore[attr-defined]
    return forward


def _flash(attn: Any) -> bool:
    return "flash" in str(getattr(attn.config, "_attn_implementation", "") or "")


def marking_tower(vision: QwenVision) -> Callable[..., Any]:
    """The forward bound on the tower: reads the grid once and marks the whole-image attention
    modules for this call, with the uniform segment length (`SEGMENT`), or, when sizes differ
    but some neighbours are equal (evaluation batches are sorted by image tokens), the runs of
    equal segments (`RUNS`); nothing when every segment differs or under flash-attention. Runs
    transformers' forward, unmarks."""
    tower = vision.tower
    original = type(tower).forward

    def forward(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        grid = kwargs.get("grid_thw", args[0] if args else None)
        runs = [] if grid is None else segment_runs(grid)
        mark: tuple[str, Any] | None = None
        if len(runs) == 1:
            mark = (SEGMENT, runs[0][0])
        elif any(n > 1 for _, n in runs):
            mark = (RUNS, tuple(runs))
        marked = [a for a in vision.full if not _flash(a)] if mark is not None else []
        for attn in marked:
            setattr(attn, *mark)  # type: ignore[misc]
        try:
            return original(tower, hidden_states, *args, **kwargs)
        finally:
            for attn in marked:
                setattr(attn, mark[0], None)  # type: ignore[index]

    return forward


def batched(block: Any) -> bool:
    """Whether this block's attention runs batched in the current tower call."""
    return getattr(block.attn, SEGMENT, None) is not None
