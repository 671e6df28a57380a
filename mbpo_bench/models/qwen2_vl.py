"""Qwen2-VL and Qwen2.5-VL adapter (both families share the image processor and input format).

Prompt format: the checkpoint's chat template (Qwen: ChatML) with
`<|vision_start|><|image_pad|><|vision_end|>` in the user turn; `<|image_pad|>` is expanded to
(H / patch) * (W / patch) / merge^2 tokens for the image's processed (H, W). The forward pass also
needs `mm_token_type_ids` (1 at image tokens) for multimodal RoPE, and `image_grid_thw` (one row
per image).

Image geometry is the protocol's (`geometry.py`): `native` is the checkpoint's own smart_resize
within its min/max pixels (`--min-pixels/--max-pixels` override them), so a 640x480 photo becomes
644x476 = 391 image tokens, not a square. The differentiable part re-implements the image
processor after its resize: normalise, repeat the frame `temporal_patch_size` times, and flatten
into merge-ordered patches of shape (grid_h * grid_w, C * T * p * p), image by image (any grid,
square or not), concatenated over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError
from mbpo_bench.models.common import AdapterBase

if TYPE_CHECKING:
    import torch

    from mbpo_bench.models.packing import PackedLayout

DEFAULT_IMAGE_SIZE = 448  # side of synthetic (black / noise) square images for real checkpoints


def default_image_size(improc: Any) -> int:
    """A tiny model pins min_pixels == max_pixels == side^2; real ones get DEFAULT_IMAGE_SIZE."""
    from mbpo_bench.models.geometry import qwen_pixel_limits

    lo, hi = qwen_pixel_limits(improc)
    if lo == hi and math.isqrt(lo) ** 2 == lo:
        return math.isqrt(lo)
    return DEFAULT_IMAGE_SIZE


def patchify(x: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """Normalised (C, H, W) -> (H/p * W/p, C * T * p * p) patches in merge order (differentiable)."""
    c, h, w = x.shape
    p, m, t = patch, merge, temporal
    gh, gw = h // p, w // p
    # (C, gh/m, m, p, gw/m, m, p) -> (gh/m, gw/m, m, m, C, p, p): rows in merge order
    x = x.reshape(c, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
    x = x.unsqueeze(5).expand(-1, -1, -1, -1, -1, t, -1, -1)  # repeat the frame in time
    return x.reshape(gh * gw, c * t * p * p)


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
        protocol: str = "native",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
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
        self.family = family
        super().__init__(
            model, processor, tokenizer, name=name, image_size=side, protocol=protocol,
            min_pixels=min_pixels, max_pixels=max_pixels,
        )  # fmt: skip
        self._mean = list(improc.image_mean)
        self._std = list(improc.image_std)

    def num_image_tokens(self, size: tuple[int, int] | None = None) -> int:
        h, w = size if size is not None else (self.image_size, self.image_size)
        return (h // self.patch) * (w // self.patch) // (self.merge * self.merge)

    def _text_extras(self, input_ids: torch.Tensor, has_image: bool) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == self.image_token_id).to(input_ids.dtype)}

    def packed_position_ids(
        self, inputs: dict[str, torch.Tensor], layout: PackedLayout
    ) -> torch.Tensor:
        """(3, R, L) multimodal-RoPE positions of a packed batch: the prompt's from the model's
        own `get_rope_index` over the prompt tokens alone, each answer continuing on all three
        axes from the prompt's largest position + 1, where `generate` continues too."""
        import torch

        flat = layout.positions.to(self.device, non_blocking=True)
        if "image_grid_thw" not in inputs:  # text only: the three axes are the text positions
            return flat[None].expand(3, -1, -1)
        ids = inputs["input_ids"]
        lengths = torch.tensor(layout.prompt_lengths, device=ids.device)
        in_prompt = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        prompt_pos, _ = self.hf_model.model.get_rope_index(
            input_ids=ids, mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"], attention_mask=in_prompt.long(),
        )  # fmt: skip
        start = prompt_pos.masked_fill(~in_prompt[None], -1).amax(dim=(0, 2)) + 1  # (R,)
        answers = (start - lengths)[:, None] + flat  # answer t at flat P + t -> start + t
        return torch.where(in_prompt[None], prompt_pos, answers[None].expand(3, -1, -1))

    def pixels_to_inputs(
        self, pixel_images: torch.Tensor, sizes: Sequence[tuple[int, int]] | None = None
    ) -> dict[str, torch.Tensor]:
        """Padded [0,1] images (B, 3, H, W) -> pixel_values of every image at its own (h, w)."""
        import torch

        x = pixel_images.to(self.device, torch.float32)
        b, _, h, w = x.shape
        sizes = list(sizes) if sizes is not None else [(h, w)] * b
        mean = torch.tensor(self._mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self._std, device=x.device).view(-1, 1, 1)
        unit = self.patch * self.merge
        patches, grid = [], []
        for k, (ih, iw) in enumerate(sizes):
            if ih % unit or iw % unit:
                raise UserError(
                    f"image of {iw}x{ih} px is not a multiple of {unit} px — pass images through "
                    "images_to_tensor (the protocol's smart_resize)"
                )
            img = (x[k, :, :ih, :iw] - mean) / std
            patches.append(patchify(img, self.patch, self.merge, self.temporal))
            grid.append([1, ih // self.patch, iw // self.patch])
        return {
            "pixel_values": torch.cat(patches).to(self.dtype),
            "image_grid_thw": torch.tensor(grid, dtype=torch.long, device=x.device),
        }
