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


# ---- input protocols ---------------------------------------------------------------------------
# What a checkpoint is fed: image geometry and prompt. One family's protocols live here, in one
# place; `models/geometry.py` carries them out. Sources are cited per field.

PROTOCOL_NAMES: tuple[str, ...] = ("native", "lmms-eval", "original")

# lmms-eval 0.7.3 lmms_eval/models/simple/llava_hf.py VICUNA_CHAT_TEMPLATE (used because the
# llava-hf tokenizer has no chat template); the message content is "<image>\n{question}".
LMMS_VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if loop.index0 == 0 %}A chat between a curious user and an "
    "artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers "
    "to the user's questions. USER: {{ message['content'] }} {% elif message['role'] == 'user' %}"
    "USER: {{ message['content'] }} {% else %} ASSISTANT: {{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# LLaVA-1.5 (haotian-liu/LLaVA llava/conversation.py conv_vicuna_v1, used by its eval scripts
# with DEFAULT_IMAGE_TOKEN + "\n" + question): "{system} USER: {content} ASSISTANT:".
VICUNA_V1_TEMPLATE = (
    "{% for message in messages %}{% if loop.index0 == 0 %}A chat between a curious human and an "
    "artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers "
    "to the human's questions. {% endif %}USER: {{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN_SYSTEM_PROMPT = "You are a helpful assistant."  # lmms-eval 0.7.3 qwen2_vl / qwen2_5_vl


@dataclass(frozen=True)
class ProtocolSpec:
    """How one family is fed under one protocol.

    geometry: "processor" = the checkpoint's image processor as configured; "pad_square" = pad to
    a square of the image-mean colour first (LLaVA-1.5 `expand2square`), then the processor;
    "qwen_vl_utils" = qwen_vl_utils.fetch_image's smart_resize (factor patch*merge) + PIL resize
    first, then the processor (a no-op resize), as lmms-eval's qwen wrappers do.
    template: a chat template replacing the checkpoint's (content then is a string with the image
    token and a newline before the question), or None for the checkpoint's own template.
    """

    geometry: str = "processor"
    template: str | None = None
    system_prompt: str | None = None  # an explicit system turn before the user turn
    jpeg_quality: int | None = None  # JPEG round trip before anything else
    min_pixels: int | None = None  # Qwen pixel limits (None: the checkpoint's)
    max_pixels: int | None = None
    reproduces: str = ""


PROTOCOLS: dict[str, dict[str, ProtocolSpec]] = {
    "llava": {
        "native": ProtocolSpec(reproduces="the checkpoint's own processor (llava-hf: shortest "
                               "edge 336 + centre crop, USER: ... ASSISTANT:)"),
        "lmms-eval": ProtocolSpec(template=LMMS_VICUNA_TEMPLATE,
                                  reproduces="lmms-eval 0.7.3 llava_hf (processor geometry, "
                                  "Vicuna 'curious user' system prompt)"),
        "original": ProtocolSpec(geometry="pad_square", template=VICUNA_V1_TEMPLATE,
                                 reproduces="LLaVA-1.5 paper eval (pad to square with the "
                                 "image mean, vicuna_v1 system prompt)"),
    },
    "qwen2_vl": {
        "native": ProtocolSpec(reproduces="the checkpoint's own processor (smart_resize within "
                               "its min/max pixels, its chat template)"),
        "lmms-eval": ProtocolSpec(geometry="qwen_vl_utils", system_prompt=QWEN_SYSTEM_PROMPT,
                                  jpeg_quality=85, min_pixels=3136, max_pixels=602112,
                                  reproduces="lmms-eval 0.7.3 qwen2_vl (JPEG q85, pixels "
                                  "3136..602112, explicit system prompt)"),
    },
    "qwen2_5_vl": {
        "native": ProtocolSpec(reproduces="the checkpoint's own processor (smart_resize within "
                               "its min/max pixels, its chat template)"),
        "lmms-eval": ProtocolSpec(geometry="qwen_vl_utils", system_prompt=QWEN_SYSTEM_PROMPT,
                                  jpeg_quality=85, min_pixels=200704, max_pixels=1605632,
                                  reproduces="lmms-eval 0.7.3 qwen2_5_vl (JPEG q85, pixels "
                                  "200704..1605632, explicit system prompt)"),
    },
}  # fmt: skip


def check_protocol(family: str, protocol: str) -> ProtocolSpec:
    """The family's spec for `protocol`; a one-line error where the family does not define it."""
    from mbpo_bench.errors import UserError

    check_choice("input protocol", protocol, PROTOCOL_NAMES)
    defined = PROTOCOLS.get(family, PROTOCOLS["llava"] if family.startswith("llava") else {})
    if protocol not in defined:
        raise UserError(
            f"protocol '{protocol}' is not defined for model family '{family}' — use one of: "
            f"{', '.join(defined)}"
        )
    return defined[protocol]
