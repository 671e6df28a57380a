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

Fallbacks (the checkpoint's own code runs, eager): images of different sizes in one batch
(their segment lengths differ: one call per image, as transformers does; the blocks' MLPs
still compile, `compile.py`), flash-attention (already varlen, no split), and Qwen2.5-VL's
windowed blocks (windows at the image's edges are smaller, so their lengths differ; only its
`fullatt_block_indexes` blocks take the batched path). Tested equal to the checkpoint's own
tower on tiny Qwen2-VL and Qwen2.5-VL (tests/test_models_compile.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEGMENT = "_mbpo_segment"  # attention-module attribute: the uniform segment length, this call
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


def uniform_segment(grid_thw: Any) -> int | None:
    """The common patch count of every image / video frame in `grid_thw` (rows t, h, w), or None
    when they differ. One host read per tower call (`cu_seqlens` is built from the same rows)."""
    rows = grid_thw.tolist()
    sizes = {int(h) * int(w) for _, h, w in rows}
    return sizes.pop() if len(sizes) == 1 else None


def batched_attention(attn: Any) -> Callable[..., Any]:
    """The forward bound on one vision attention module: transformers' own forward, except
    while the tower marked a uniform segment length L (`SEGMENT`), when the packed sequence is
    attended as (n, heads, L, dim) in one call of the model's attention interface."""
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
        if seg is None or position_embeddings is None:
            return original(attn, hidden_states, cu_seqlens, position_embeddings, max_seqlen,
                            **kwargs)  # fmt: skip
        # transformers' own steps up to the attention call (qkv, rotary), then one batched call
        seq = hidden_states.shape[0]
        qkv = attn.qkv(hidden_states).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3)
        q, k, v = qkv.unbind(0)
        cos, sin = position_embeddings
        q, k = rotary(q, k, cos, sin)
        q, k, v = (t.reshape(-1, seg, attn.num_heads, t.shape[-1]).transpose(1, 2)
                   for t in (q, k, v))  # fmt: skip
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            attn.config._attn_implementation, eager_attention
        )
        out, _ = interface(
            attn, q, k, v, attention_mask=None, scaling=attn.scaling,
            dropout=0.0 if not attn.training else attn.attention_dropout, is_causal=False,
            **kwargs,
        )  # fmt: skip
        return attn.proj(out.reshape(seq, -1).contiguous())

    forward.reads_segment = True  # type: ignore[attr-defined]
    return forward


def _flash(attn: Any) -> bool:
    return "flash" in str(getattr(attn.config, "_attn_implementation", "") or "")


def marking_tower(vision: QwenVision) -> Callable[..., Any]:
    """The forward bound on the tower: reads the grid once, marks the whole-image attention
    modules with the uniform segment length for this call (none when sizes differ, or under
    flash-attention), runs transformers' forward, unmarks."""
    tower = vision.tower
    original = type(tower).forward

    def forward(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        grid = kwargs.get("grid_thw", args[0] if args else None)
        seg = None if grid is None else uniform_segment(grid)
        marked = [a for a in vision.full if not _flash(a)] if seg is not None else []
        for attn in marked:
            setattr(attn, SEGMENT, seg)
        try:
            return original(tower, hidden_states, *args, **kwargs)
        finally:
            for attn in marked:
                setattr(attn, SEGMENT, None)

    return forward


def batched(block: Any) -> bool:
    """Whether this block's attention runs batched in the current tower call."""
    return getattr(block.attn, SEGMENT, None) is not None
