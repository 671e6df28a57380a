"""Tiny random models of the real architecture classes, built and saved fully offline.

Why: every test, the embedded benchmark and CPU smoke runs need a real
`LlavaForConditionalGeneration` / `Qwen2VLForConditionalGeneration` /
`Qwen2_5_VLForConditionalGeneration` without touching a hub. The folder written here looks like a
hub checkpoint (config.json, model.safetensors, generation_config.json, tokenizer files, chat
template, image processor config), so `load_model` treats it exactly like a real one.

Decisions:
- Geometry follows the field notes (`families.SIZES`): at tiny size one image token covers 16x16
  pixels for every family (LLaVA patch 16; Qwen patch 8 merged 2x2), so 48 px gives 9 tokens.
- LLaVA uses `vision_feature_layer=-1` (LLaVA-1.5 uses -2): with 2 vision layers, -2 would leave
  the last one untrained and unused. CLIP keeps the CLS token and drops it ("default" strategy);
  SigLIP has none ("full").
- The image processor class follows the machine: the torchvision backend where torchvision
  imports, the PIL one otherwise; both load either way. Without torchvision the stock Qwen
  processors refuse to exist (they demand a video processor), so an image-only processor is
  saved instead; `loading.load_processor` rebuilds whichever works on the loading machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mbpo_bench.errors import UserError
from mbpo_bench.models.families import (
    FAMILIES,
    FamilySpec,
    SizeSpec,
    check_family,
    check_size,
    model_class,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast


def _qwen_patch(spec: SizeSpec) -> int:
    return spec.patch_size // 2  # merged 2x2, one token covers patch_size pixels per side


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    hw = 3 * half // 8
    return [half - 2 * hw, hw, hw]


def _text_kwargs(spec: SizeSpec, vocab_size: int, tok: PreTrainedTokenizerFast) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": spec.text_hidden,
        "intermediate_size": spec.ffn,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "max_position_embeddings": 4096,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": None,
    }


def _vision_kwargs(spec: SizeSpec, image_size: int) -> dict[str, Any]:
    return {
        "hidden_size": spec.vision_hidden,
        "intermediate_size": 4 * spec.vision_hidden,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "image_size": image_size,
        "patch_size": spec.patch_size,
    }


def model_config(
    family: str, spec: SizeSpec, image_size: int, tok: PreTrainedTokenizerFast
) -> PretrainedConfig:
    """The transformers config of a tiny model of `family` (vocabulary from `tok`)."""
    config: PretrainedConfig = FamilySpec.load(FAMILIES[family].tiny_config)(spec, image_size, tok)
    return config


def llava_clip_config(
    spec: SizeSpec, image_size: int, tok: PreTrainedTokenizerFast
) -> PretrainedConfig:
    """LLaVA-1.5 layout: CLIP vision (its CLS token dropped: "default") + Llama text."""
    return _llava_config(spec, image_size, tok, "CLIPVisionConfig", "LlamaConfig", "default")


def llava_siglip_config(
    spec: SizeSpec, image_size: int, tok: PreTrainedTokenizerFast
) -> PretrainedConfig:
    """LLaVA architecture with SigLIP vision (no CLS token: "full") + Qwen2 text."""
    return _llava_config(spec, image_size, tok, "SiglipVisionConfig", "Qwen2Config", "full")


def _llava_config(
    spec: SizeSpec, image_size: int, tok: PreTrainedTokenizerFast, vision: str, text: str,
    strategy: Literal["default", "full"],
) -> PretrainedConfig:  # fmt: skip
    import transformers as tf

    return tf.LlavaConfig(
        vision_config=getattr(tf, vision)(**_vision_kwargs(spec, image_size)),
        text_config=getattr(tf, text)(**_text_kwargs(spec, len(tok), tok)),
        image_token_index=tok.image_token_id,
        vision_feature_select_strategy=strategy,
        vision_feature_layer=-1,
    )


def _qwen_parts(
    spec: SizeSpec, tok: PreTrainedTokenizerFast
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(text kwargs with M-RoPE, special token ids, vision kwargs) shared by Qwen2(.5)-VL."""
    text = _text_kwargs(spec, len(tok), tok)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": _mrope_section(spec.text_hidden // spec.text_heads),
    }
    ids = {
        "image_token_id": tok.image_token_id,
        "video_token_id": tok.convert_tokens_to_ids(tok.video_token),
        "vision_start_token_id": tok.convert_tokens_to_ids(tok.vision_start_token),
        "vision_end_token_id": tok.convert_tokens_to_ids(tok.vision_end_token),
    }
    common_vision: dict[str, Any] = {
        "num_heads": spec.vision_heads,
        "patch_size": _qwen_patch(spec),
        "spatial_merge_size": 2,
    }
    return text, ids, common_vision


def qwen2_vl_config(
    spec: SizeSpec, image_size: int, tok: PreTrainedTokenizerFast
) -> PretrainedConfig:
    import transformers as tf

    text, ids, common_vision = _qwen_parts(spec, tok)
    vision = tf.Qwen2VLVisionConfig(
        depth=spec.vision_layers,
        embed_dim=spec.vision_hidden,
        hidden_size=spec.text_hidden,
        mlp_ratio=4,
        **common_vision,
    )
    return tf.Qwen2VLConfig(
        text_config=tf.Qwen2VLTextConfig(**text), vision_config=vision.to_dict(), **ids
    )


def qwen2_5_vl_config(
    spec: SizeSpec, image_size: int, tok: PreTrainedTokenizerFast
) -> PretrainedConfig:
    import transformers as tf

    text, ids, common_vision = _qwen_parts(spec, tok)
    vision25 = tf.Qwen2_5_VLVisionConfig(
        depth=spec.vision_layers,
        hidden_size=spec.vision_hidden,
        intermediate_size=4 * spec.vision_hidden,
        out_hidden_size=spec.text_hidden,
        window_size=2 * 2 * _qwen_patch(spec),
        fullatt_block_indexes=[spec.vision_layers - 1],
        **common_vision,
    )
    return tf.Qwen2_5_VLConfig(
        text_config=tf.Qwen2_5_VLTextConfig(**text), vision_config=vision25.to_dict(), **ids
    )


def image_processor(family: str, spec: SizeSpec, image_size: int) -> Any:
    """Image processor for the family at `image_size`, on the backend this machine has."""
    return FamilySpec.load(FAMILIES[family].image_processor)(spec, image_size)


def clip_image_processor(spec: SizeSpec, image_size: int) -> Any:
    import transformers as tf
    from transformers.utils import is_torchvision_available

    cls = tf.CLIPImageProcessor if is_torchvision_available() else tf.CLIPImageProcessorPil
    return cls(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def siglip_image_processor(spec: SizeSpec, image_size: int) -> Any:
    import transformers as tf
    from transformers.utils import is_torchvision_available

    cls = tf.SiglipImageProcessor if is_torchvision_available() else tf.SiglipImageProcessorPil
    return cls(size={"height": image_size, "width": image_size})


def qwen_image_processor(spec: SizeSpec, image_size: int) -> Any:
    import transformers as tf
    from transformers.utils import is_torchvision_available

    cls = tf.Qwen2VLImageProcessor if is_torchvision_available() else tf.Qwen2VLImageProcessorPil
    pixels = image_size * image_size
    return cls(
        patch_size=_qwen_patch(spec),
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )


def build_processor(family: str, spec: SizeSpec, image_size: int, tok: Any) -> Any:
    return FamilySpec.load(FAMILIES[family].tiny_processor)(family, spec, image_size, tok)


def llava_clip_processor(family: str, spec: SizeSpec, image_size: int, tok: Any) -> Any:
    """CLIP has a CLS token, which the "default" strategy drops."""
    return _llava_processor(family, spec, image_size, tok, cls_token=True)


def llava_siglip_processor(family: str, spec: SizeSpec, image_size: int, tok: Any) -> Any:
    """SigLIP has no CLS token: every patch is an image token ("full")."""
    return _llava_processor(family, spec, image_size, tok, cls_token=False)


def _llava_processor(
    family: str, spec: SizeSpec, image_size: int, tok: Any, *, cls_token: bool
) -> Any:
    import transformers as tf

    return tf.LlavaProcessor(
        image_processor=image_processor(family, spec, image_size),
        tokenizer=tok,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default" if cls_token else "full",
        num_additional_image_tokens=1 if cls_token else 0,
        chat_template=tok.chat_template,
    )


def qwen_processor(family: str, spec: SizeSpec, image_size: int, tok: Any) -> Any:
    """The stock Qwen2(.5)-VL processor; image-only where torchvision is missing (the stock one
    demands a torchvision video processor)."""
    import transformers as tf
    from transformers.utils import is_torchvision_available

    from mbpo_bench.models.loading import image_only_qwen_processor

    improc = image_processor(family, spec, image_size)
    if not is_torchvision_available():
        return image_only_qwen_processor(family, improc, tok)
    cls = getattr(tf, FAMILIES[family].processor_class)
    video = tf.Qwen2VLVideoProcessor(patch_size=_qwen_patch(spec), merge_size=2)
    return cls(
        image_processor=improc,
        tokenizer=tok,
        video_processor=video,
        chat_template=tok.chat_template,
    )


def check_image_size(family: str, spec: SizeSpec, image_size: int) -> None:
    unit = spec.patch_size
    if image_size <= 0 or image_size % unit:
        raise UserError(
            f"image size {image_size} does not fit family '{family}' (one image token covers "
            f"{unit} px) — pass a positive multiple of {unit}"
        )


def build_tiny_model(
    family: str,
    out: Path,
    *,
    size: str = "tiny",
    seed: int = 0,
    image_size: int | None = None,
    extra_corpus: Sequence[str] = (),
) -> Path:
    """Build a random model of `family` at `size`, save it with its tokenizer/processor to `out`."""
    import torch
    from transformers import GenerationConfig

    from mbpo_bench.models.tokenizer import build_tokenizer

    check_family(family)
    spec = check_size(size)
    side = spec.image_size if image_size is None else image_size
    check_image_size(family, spec, side)
    tok = build_tokenizer(FAMILIES[family].tokenizer, extra_corpus)
    config = model_config(family, spec, side, tok)
    processor = build_processor(family, spec, side, tok)
    torch.manual_seed(seed)
    model = model_class(family)(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, do_sample=False
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tok.save_pretrained(out)
    from mbpo_bench.runs import plain_modes

    plain_modes(out)  # safetensors writes owner-only files
    return out


def count_parameters(family: str, size: str, image_size: int | None = None) -> int:
    """Parameter count of a tiny model, computed on the meta device (no memory, no init)."""
    import torch

    from mbpo_bench.models.tokenizer import build_tokenizer

    spec = check_size(size)
    tok = build_tokenizer(FAMILIES[check_family(family)].tokenizer)
    config = model_config(family, spec, image_size or spec.image_size, tok)
    with torch.device("meta"):
        model = model_class(family)(config)
    return sum(p.numel() for p in model.parameters())
