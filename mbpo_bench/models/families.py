"""The family table: one `FamilySpec` per model family, the single place to register one.

A *family* here is what `mbpo-bench models init` can build; a loaded checkpoint's family is its
`config.json` `model_type` (`llava`, `qwen2_vl`, `qwen2_5_vl`). `llava_siglip_qwen2` builds a
LLaVA-architecture model (SigLIP vision + Qwen2 text) and loads back as family `llava`.

A row names what the rest of the package asks of a family: the transformers class, the tiny
tokenizer recipe, the tiny config and processor builders (`models/tiny.py`), the adapter that
serves it once loaded (`models/llava.py`, `models/qwen2_vl.py`), its input protocols (below)
and whether Qwen's pixel limits apply. Builders and adapters are named by "module:attribute"
so this table stays importable without torch (the CLI's start-up); `FamilySpec.load` imports
one when it is used. Adding a family = its builders / adapter + one row in `FAMILIES`;
`models list`, `models init --family` and `load_model` read the row.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mbpo_bench.errors import check_choice


@dataclass(frozen=True)
class FamilySpec:
    """One model family (see the module docstring)."""

    summary: str  # the architecture column of `models list`
    model_class: str  # the transformers class that builds and loads it
    tokenizer: str  # the tiny tokenizer recipe (models/tokenizer.py): "llava" | "qwen"
    tiny_config: str  # "module:fn"(SizeSpec, image_size, tokenizer) -> transformers config
    tiny_processor: str  # "module:fn"(family, SizeSpec, image_size, tokenizer) -> processor
    image_processor: str  # "module:fn"(SizeSpec, image_size) -> image processor (tiny models)
    processor_class: str  # the transformers processor class of its checkpoints
    adapter: str  # "module:Class" serving a loaded checkpoint (models/protocol.py contract)
    loads_as: str  # the config.json model_type its checkpoints carry
    protocols: Mapping[str, ProtocolSpec]  # what it can be fed (PROTOCOLS below)
    pixel_limits: bool = False  # Qwen's min/max pixels apply (--min-pixels / --max-pixels)
    # "module:fn"(folder, family, *, trust_remote_code) rebuilding the processor from its files
    # where AutoProcessor cannot (None: AutoProcessor's error is final)
    processor_from_files: str | None = None
    # "module:fn"(folder) refusing a checkpoint whose processor files name a foreign class,
    # before AutoProcessor would load it without a word (None: no check)
    processor_check: str | None = None

    @staticmethod
    def load(ref: str) -> Any:
        """The attribute a "module:attribute" reference names (imports the module)."""
        module, _, name = ref.partition(":")
        return getattr(importlib.import_module(module), name)


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

    return getattr(tf, FAMILIES[family].model_class)


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


def qwen_lmms_eval(wrapper: str, min_pixels: int, max_pixels: int) -> ProtocolSpec:
    """lmms-eval 0.7.3's stock Qwen wrapper `wrapper`: qwen_vl_utils geometry after a JPEG q85
    round trip, its own pixel range, an explicit system prompt (the two wrappers differ only in
    the range)."""
    return ProtocolSpec(
        geometry="qwen_vl_utils", system_prompt=QWEN_SYSTEM_PROMPT, jpeg_quality=85,
        min_pixels=min_pixels, max_pixels=max_pixels,
        reproduces=f"lmms-eval 0.7.3 {wrapper} (JPEG q85, pixels {min_pixels}..{max_pixels}, "
        "explicit system prompt)",
    )  # fmt: skip


# both Qwen families' native protocol: the checkpoint's processor and template, nothing else
QWEN_NATIVE = ProtocolSpec(
    reproduces="the checkpoint's own processor (smart_resize within its min/max pixels, its "
    "chat template)"
)

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
    "qwen2_vl": {"native": QWEN_NATIVE, "lmms-eval": qwen_lmms_eval("qwen2_vl", 3136, 602112)},
    "qwen2_5_vl": {
        "native": QWEN_NATIVE,
        "lmms-eval": qwen_lmms_eval("qwen2_5_vl", 200704, 1605632),
    },
}  # fmt: skip


def check_protocol(family: str, protocol: str) -> ProtocolSpec:
    """The family's spec for `protocol`; a one-line error where the family does not define it."""
    from mbpo_bench.errors import UserError

    check_choice("input protocol", protocol, PROTOCOL_NAMES)
    defined = FAMILIES[family].protocols if family in FAMILIES else {}
    if protocol not in defined:
        raise UserError(
            f"protocol '{protocol}' is not defined for model family '{family}' — use one of: "
            f"{', '.join(defined)}"
        )
    return defined[protocol]


_TINY = "mbpo_bench.models.tiny"
FAMILIES: dict[str, FamilySpec] = {
    "llava": FamilySpec(
        summary="LlavaForConditionalGeneration: CLIP vision + Llama text (LLaVA-1.5 layout)",
        model_class="LlavaForConditionalGeneration", tokenizer="llava",
        tiny_config=f"{_TINY}:llava_clip_config", tiny_processor=f"{_TINY}:llava_clip_processor",
        image_processor=f"{_TINY}:clip_image_processor", processor_class="LlavaProcessor",
        adapter="mbpo_bench.models.llava:LlavaAdapter", loads_as="llava",
        protocols=PROTOCOLS["llava"],
    ),
    "llava_siglip_qwen2": FamilySpec(
        summary="LlavaForConditionalGeneration: SigLIP vision + Qwen2 text",
        model_class="LlavaForConditionalGeneration", tokenizer="llava",
        tiny_config=f"{_TINY}:llava_siglip_config",
        tiny_processor=f"{_TINY}:llava_siglip_processor",
        image_processor=f"{_TINY}:siglip_image_processor", processor_class="LlavaProcessor",
        adapter="mbpo_bench.models.llava:LlavaAdapter", loads_as="llava",
        protocols=PROTOCOLS["llava"],
    ),
    "qwen2_vl": FamilySpec(
        summary="Qwen2VLForConditionalGeneration",
        model_class="Qwen2VLForConditionalGeneration", tokenizer="qwen",
        tiny_config=f"{_TINY}:qwen2_vl_config", tiny_processor=f"{_TINY}:qwen_processor",
        image_processor=f"{_TINY}:qwen_image_processor", processor_class="Qwen2VLProcessor",
        adapter="mbpo_bench.models.qwen2_vl:QwenVLAdapter", loads_as="qwen2_vl",
        protocols=PROTOCOLS["qwen2_vl"], pixel_limits=True,
        processor_from_files="mbpo_bench.models.loading:qwen_processor_from_files",
        processor_check="mbpo_bench.models.loading:check_qwen_image_processor",
    ),
    "qwen2_5_vl": FamilySpec(
        summary="Qwen2_5_VLForConditionalGeneration",
        model_class="Qwen2_5_VLForConditionalGeneration", tokenizer="qwen",
        tiny_config=f"{_TINY}:qwen2_5_vl_config", tiny_processor=f"{_TINY}:qwen_processor",
        image_processor=f"{_TINY}:qwen_image_processor", processor_class="Qwen2_5_VLProcessor",
        adapter="mbpo_bench.models.qwen2_vl:QwenVLAdapter", loads_as="qwen2_5_vl",
        protocols=PROTOCOLS["qwen2_5_vl"], pixel_limits=True,
        processor_from_files="mbpo_bench.models.loading:qwen_processor_from_files",
        processor_check="mbpo_bench.models.loading:check_qwen_image_processor",
    ),
}  # fmt: skip

# config.json model_type -> adapter family: what `load_model` accepts
LOADABLE_MODEL_TYPES: tuple[str, ...] = tuple(dict.fromkeys(f.loads_as for f in FAMILIES.values()))
