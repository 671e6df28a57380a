"""Names of the model families and tiny-model sizes, importable without torch (for the CLI).

A *family* here is what `mbpo-bench models init` can build; a loaded checkpoint's family is its
`config.json` `model_type` (`llava`, `qwen2_vl`, `qwen2_5_vl`). `llava_siglip_qwen2` builds a
LLaVA-architecture model (SigLIP vision + Qwen2 text) and loads back as family `llava`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mbpo_bench.errors import check_choice

FAMILIES: dict[str, str] = {
    "llava": "LlavaForConditionalGeneration: CLIP vision + Llama text (LLaVA-1.5 layout)",
    "llava_siglip_qwen2": "LlavaForConditionalGeneration: SigLIP vision + Qwen2 text",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}

# model_type in config.json -> adapter family
LOADABLE_MODEL_TYPES: tuple[str, ...] = ("llava", "qwen2_vl", "qwen2_5_vl")


@dataclass(frozen=True)
class SizeSpec:
    """Widths and depths of a tiny model; `image_size` is the default square side in pixels."""

    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    ffn: int


SIZES: dict[str, SizeSpec] = {
    # The field-notes recipe that made the embedded benchmark learn on 2 CPU cores: 48 px,
    # patch 16 -> a 3x3 grid, one object = one image token (9 tokens); ~2.8M parameters.
    # Qwen merges 2x2 patches, so its tiny patch is 8 (6x6 patches -> 3x3 = 9 tokens).
    "tiny": SizeSpec(48, 16, 128, 2, 4, 256, 2, 4, 4, 1024),
    # GPU-scale runs: ~50-150M parameters at 224 px.
    "small": SizeSpec(224, 14, 384, 6, 6, 768, 8, 12, 4, 2048),
}


def check_family(family: str) -> str:
    return check_choice("model family", family, FAMILIES)


def check_size(size: str) -> SizeSpec:
    return SIZES[check_choice("model size", size, SIZES)]


def model_class(family: str) -> Any:
    """The transformers class that builds and loads `family` (a build family or a model_type).

    Here, below both `tiny` (builds) and `loading` (loads), so neither imports the other for it.
    """
    import transformers as tf

    if family.startswith("llava"):
        return tf.LlavaForConditionalGeneration
    if family == "qwen2_vl":
        return tf.Qwen2VLForConditionalGeneration
    return tf.Qwen2_5_VLForConditionalGeneration
