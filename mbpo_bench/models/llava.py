"""LLaVA-architecture adapter (LLaVA-1.5: CLIP + Llama; LLaVA-style SigLIP + Qwen2).

Prompt format: the checkpoint's chat template with one `<image>` placeholder in the user turn
(LLaVA-1.5: `USER: <image>\\n{question} ASSISTANT:`; tiny models: ChatML, see `tokenizer.py`),
expanded to one `<image>` token per visual feature: (side / patch)^2, plus the CLS token when the
vision tower has one (CLIP) and the "full" feature strategy keeps it.

The differentiable image path is only normalisation: the protocol's geometric step
(`geometry.py`: the processor's resize + centre crop, after padding to square for `original`)
already produced the vision tower's square input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mbpo_bench.models.common import AdapterBase

if TYPE_CHECKING:
    import torch


class LlavaAdapter(AdapterBase):
    """`VisionLanguageModel` over `LlavaForConditionalGeneration`."""

    family = "llava"

    def __init__(
        self, model: Any, processor: Any, tokenizer: Any, *, name: str, protocol: str = "native"
    ) -> None:
        vision = unwrap_config(model).vision_config
        super().__init__(
            model, processor, tokenizer, name=name, image_size=vision.image_size, protocol=protocol
        )
        improc = processor.image_processor
        self._mean = list(improc.image_mean)
        self._std = list(improc.image_std)

    def num_image_tokens(self, size: tuple[int, int] | None = None) -> int:
        cfg = unwrap_config(self.model)
        vision = cfg.vision_config
        n = (vision.image_size // vision.patch_size) ** 2
        has_cls = vision.model_type == "clip_vision_model"
        if cfg.vision_feature_select_strategy == "full" and has_cls:
            n += 1
        return int(n)

    def pixels_to_inputs(
        self, pixel_images: torch.Tensor, sizes: Sequence[tuple[int, int]] | None = None
    ) -> dict[str, torch.Tensor]:
        import torch

        side = self.image_size
        x = pixel_images[:, :, :side, :side].to(self.device, torch.float32)
        mean = torch.tensor(self._mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self._std, device=x.device).view(1, -1, 1, 1)
        return {"pixel_values": ((x - mean) / std).to(self.dtype)}


def unwrap_config(model: Any) -> Any:
    from mbpo_bench.models.common import unwrap

    return unwrap(model).config
