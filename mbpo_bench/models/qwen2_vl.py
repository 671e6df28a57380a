"""Qwen2-VL and Qwen2.5-VL adapter (both families share the image processor and input format).

Prompt format: the checkpoint's chat template (Qwen: ChatML) with
`<|vision_start|><|image_pad|><|vision_end|>` in the user turn; `<|image_pad|>` is expanded to
(side / patch)^2 / merge^2 tokens. The forward pass also needs `mm_token_type_ids` (1 at image
tokens) for multimodal RoPE, and `image_grid_thw`.

The differentiable image path re-implements the image processor for a square image already at
`image_size` (its smart resize is then a no-op): normalise, repeat the frame `temporal_patch_size`
times, and flatten into merge-ordered patches of shape (B * grid_h * grid_w, C * T * p * p).
`image_size` must be a multiple of patch * merge; a real checkpoint defaults to 448 px.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError
from mbpo_bench.models.common import AdapterBase

if TYPE_CHECKING:
    import torch

DEFAULT_IMAGE_SIZE = 448


def default_image_size(improc: Any) -> int:
    """A tiny model pins min_pixels == max_pixels == side^2; real ones get DEFAULT_IMAGE_SIZE."""
    size = getattr(improc, "size", None) or {}
    lo, hi = size.get("shortest_edge"), size.get("longest_edge")
    if lo is not None and lo == hi and math.isqrt(int(lo)) ** 2 == int(lo):
        return math.isqrt(int(lo))
    return DEFAULT_IMAGE_SIZE


class QwenVLAdapter(AdapterBase):
    """`VisionLanguageModel` over `Qwen2VLForConditionalGeneration` / `Qwen2_5_VL...`."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        tokenizer: Any,
        *,
        name: str,
        family: str,
        image_size: int | None = None,
    ) -> None:
        improc = processor.image_processor
        side = default_image_size(improc) if image_size is None else image_size
        self.patch = int(improc.patch_size)
        self.merge = int(improc.merge_size)
        self.temporal = int(improc.temporal_patch_size)
        unit = self.patch * self.merge
        if side % unit:
            raise UserError(
                f"image size {side} is not a multiple of {unit} for {name} — pass a multiple of "
                f"{unit} (patch {self.patch} x merge {self.merge})"
            )
        super().__init__(model, processor, tokenizer, name=name, image_size=side)
        self.family = family
        self._mean = list(improc.image_mean)
        self._std = list(improc.image_std)

    def num_image_tokens(self) -> int:
        return (self.image_size // (self.patch * self.merge)) ** 2

    def _text_extras(self, input_ids: torch.Tensor, has_image: bool) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == self.image_token_id).to(input_ids.dtype)}

    def pixels_to_inputs(self, pixel_images: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        x = pixel_images.to(self.device, torch.float32)
        mean = torch.tensor(self._mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self._std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        b, c, h, w = x.shape
        p, m, t = self.patch, self.merge, self.temporal
        gh, gw = h // p, w // p
        # (B, C, gh/m, m, p, gw/m, m, p) -> (B, gh/m, gw/m, m, m, C, p, p): rows in merge order
        x = x.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1)  # repeat the frame in time
        patches = x.reshape(b * gh * gw, c * t * p * p)
        grid = torch.tensor([[1, gh, gw]] * b, dtype=torch.long, device=x.device)
        return {"pixel_values": patches.to(self.dtype), "image_grid_thw": grid}
