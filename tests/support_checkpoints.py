"""Tiny random-weight checkpoints laid out exactly like the hub folders users download.

Why: our own `models init` folders carry attributes real checkpoints lack (`tokenizer.image_token`,
a processor saved by us, square-pinned pixel limits), so tests on them cannot see the failures a
user meets with `llava-hf/llava-1.5-7b-hf`, `Qwen/Qwen2-VL-7B-Instruct` or
`Qwen/Qwen2.5-VL-7B-Instruct`. Each folder here has, like the hub snapshot:

- `config.json` in the hub's own (older, flat) format with the real `model_type`,
  `architectures` and special-token ids; only widths/depths/vocab are shrunk, the vision patch
  size, merge size and image size are real (so image geometry and token counts are real).
- weights under the hub's names (`language_model.model.*` for llava-hf, `model.*` / `visual.*`
  for Qwen), sharded in two files with `model.safetensors.index.json`, stored in the hub dtype.
- the real `preprocessor_config.json`, `processor_config.json` (llava-hf), `chat_template.json`
  (llava-hf) or `chat_template` in `tokenizer_config.json` (Qwen), and `generation_config.json`.
- a small BPE tokenizer of the real class (`LlamaTokenizer` / `Qwen2Tokenizer`) whose special
  tokens sit at their real ids (vocab padded with unreachable filler tokens up to them); the Qwen
  tokenizer has no `image_token` attribute, llava-hf's has no chat template.

Sources of the values (hub files, as of their last revision; cross-checked against the
field notes and public copies of the same files):
- llava-hf/llava-1.5-7b-hf: config.json (image_token_index 32000, pad_token_id 32001,
  vocab_size 32064, vision_feature_layer -2, "default" strategy, CLIP 336/14),
  preprocessor_config.json (CLIPImageProcessor, shortest_edge 336, crop 336, OpenAI CLIP
  mean/std, resample 3), processor_config.json (patch_size 14, num_additional_image_tokens 1),
  chat_template.json (`USER: <image>\\n... ASSISTANT:`), generation_config.json (bos 1, eos 2,
  pad 32001), tokenizer_config.json (LlamaTokenizer, <unk>/<s>/</s> = 0/1/2, <image> 32000,
  <pad> 32001, no chat_template).
- Qwen/Qwen2-VL-7B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct: config.json (token ids
  151643-151656, mrope, vision patch 14 / merge 2 / temporal 2), preprocessor_config.json
  (min_pixels 3136, max_pixels 12845056, `Qwen2VLImageProcessor`; older Qwen2.5-VL snapshots
  name `Qwen2_5_VLImageProcessor`), generation_config.json (Qwen2-VL: temperature 0.01;
  Qwen2.5-VL: temperature 0.1; both top_k 1, top_p 0.001, repetition_penalty 1.05, eos
  [151645, 151643], pad 151643), tokenizer_config.json (Qwen2Tokenizer, eos <|im_end|>, pad
  <|endoftext|>, no image_token; the ChatML chat template with the default system prompt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LLAVA = "llava-hf/llava-1.5-7b-hf"
QWEN2 = "Qwen/Qwen2-VL-7B-Instruct"
QWEN25 = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN25_OLD = "Qwen/Qwen2.5-VL-7B-Instruct@old-image-processor-name"
LAYOUTS = (LLAVA, QWEN2, QWEN25, QWEN25_OLD)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# llava-hf/llava-1.5-7b-hf chat_template.json
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper()"
    " + ': '}}{% endif %}{# Render all images first #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text "
    "next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% "
    "for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation "
    "%}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Qwen/Qwen2-VL-7B-Instruct (and Qwen2.5-VL) chat template, as in their tokenizer_config.json
QWEN_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for "
    "message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if "
    "message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content "
    "in message['content'] %}{% if content['type'] == 'image' or 'image' in content or "
    "'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if "
    "add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set "
    "video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ "
    "video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' "
    "in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor "
    "%}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2-VL's special tokens at their real ids (Qwen2.5-VL adds 151657-151664 after these).
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
QWEN25_EXTRA = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
QWEN_FIRST_SPECIAL = 151643
LLAVA_VOCAB = 32000  # <image> = 32000, <pad> = 32001 follow the sentencepiece vocabulary


def _corpus() -> list[str]:
    from mbpo_bench.models.tokenizer import training_corpus

    return [*training_corpus(), "A chat between a curious human and an artificial intelligence."]


def _filler(vocab: dict[str, int], size: int) -> dict[str, int]:
    """Pad `vocab` with unreachable tokens (no merge produces them) up to `size` entries."""
    out = dict(vocab)
    n = 0
    while len(out) < size:
        out.setdefault(f"zzfill{n}", len(out))
        n += 1
    return out


def _added(token: str, idx: int, special: bool = True) -> dict[str, Any]:
    return {"content": token, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special}  # fmt: skip


def _qwen_tokenizer(folder: Path, family: str) -> None:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    vocab = _filler(bpe.get_vocab(), QWEN_FIRST_SPECIAL)
    tok = tf.Qwen2Tokenizer(vocab=vocab, merges=merges)
    specials = QWEN_SPECIALS + (QWEN25_EXTRA if family != "qwen2_vl" else [])
    tok.add_tokens([tf.AddedToken(s, special=True, normalized=False) for s in specials])
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655
    tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    decoder = {str(QWEN_FIRST_SPECIAL + i): _added(s, i) for i, s in enumerate(specials)}
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": QWEN_SPECIALS[1:],
        "bos_token": None,
        "chat_template": QWEN_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768 if family == "qwen2_vl" else 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _llava_tokenizer(folder: Path) -> None:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=600, min_frequency=2, show_progress=False,
        special_tokens=["<unk>", "<s>", "</s>"],
    )  # fmt: skip
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    trained = sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})  # sentencepiece byte fallback
    for token, _ in trained:
        vocab.setdefault(token, len(vocab))
    tok = tf.LlamaTokenizer(vocab=_filler(vocab, LLAVA_VOCAB), merges=merges)
    tok.add_tokens([tf.AddedToken("<image>", special=True, normalized=False)])
    tok.add_tokens([tf.AddedToken("<pad>", special=True, normalized=False)])
    assert tok.convert_tokens_to_ids("<pad>") == 32001
    backend = json.loads(tok.backend_tokenizer.to_str())
    # llava-hf's tokenizer.json prepends <s> (id 1) to every sequence (add_bos_token: true)
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    backend["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos,
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }  # fmt: skip
    (folder / "tokenizer.json").write_text(json.dumps(backend, ensure_ascii=False))
    decoder = {
        "0": _added("<unk>", 0), "1": _added("<s>", 1), "2": _added("</s>", 2),
        "32000": _added("<image>", 32000), "32001": _added("<pad>", 32001),
    }  # fmt: skip
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "padding_side": "left",
        "processor_class": "LlavaProcessor",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "trust_remote_code": False,
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _llava_files() -> dict[str, Any]:
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": 32000,
        "model_type": "llava",
        "pad_token_id": 32001,
        "projector_hidden_act": "gelu",
        "text_config": {
            "_name_or_path": "lmsys/vicuna-7b-v1.5",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "num_key_value_heads": 4,
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "rms_norm_eps": 1e-05,
            "torch_dtype": "float16",
            "vocab_size": 32064,
        },
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.36.0.dev0",
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "image_size": 336,
            "model_type": "clip_vision_model",
            "patch_size": 14,
            "projection_dim": 32,
            "vocab_size": 32000,
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": 32064,
    }
    return {
        "config.json": config,
        "preprocessor_config.json": {
            "crop_size": {"height": 336, "width": 336},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": CLIP_MEAN,
            "image_processor_type": "CLIPImageProcessor",
            "image_std": CLIP_STD,
            "processor_class": "LlavaProcessor",
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
            "size": {"shortest_edge": 336},
        },
        "processor_config.json": {
            "image_token": "<image>",
            "num_additional_image_tokens": 1,
            "patch_size": 14,
            "processor_class": "LlavaProcessor",
            "vision_feature_select_strategy": "default",
        },
        "chat_template.json": {"chat_template": LLAVA_TEMPLATE},
        "generation_config.json": {
            "_from_model_config": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 32001,
            "transformers_version": "4.36.0.dev0",
        },
    }


def _qwen_files(family: str, improc_type: str) -> dict[str, Any]:
    vision: dict[str, Any]
    if family == "qwen2_vl":
        vision = {
            "depth": 2, "embed_dim": 32, "mlp_ratio": 4, "num_heads": 2, "in_chans": 3,
            "hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2,
            "spatial_patch_size": 14, "temporal_patch_size": 2,
        }  # fmt: skip
        arch, version, temperature, max_pos = (
            "Qwen2VLForConditionalGeneration",
            "4.41.2",
            0.01,
            32768,
        )
        processor_class = "Qwen2VLProcessor"
    else:
        vision = {
            "depth": 2, "hidden_act": "silu", "hidden_size": 32, "intermediate_size": 64,
            "num_heads": 2, "in_chans": 3, "out_hidden_size": 64, "patch_size": 14,
            "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
            "fullatt_block_indexes": [1], "tokens_per_second": 2, "temporal_patch_size": 2,
        }  # fmt: skip
        arch, version, temperature, max_pos = (
            "Qwen2_5_VLForConditionalGeneration", "4.41.2", 0.1, 128000,
        )  # fmt: skip
        processor_class = "Qwen2_5_VLProcessor"
    config = {
        "architectures": [arch],
        "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656,
        "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "max_position_embeddings": max_pos, "max_window_layers": 2,
        "model_type": family, "num_attention_heads": 2, "num_hidden_layers": 2,
        "num_key_value_heads": 1, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": version, "use_cache": True, "use_sliding_window": False,
        "vision_config": vision,
        # real: [16, 24, 24] for head_dim 128; scaled to head_dim 32
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        "vocab_size": 152064,
    }  # fmt: skip
    return {
        "config.json": config,
        "preprocessor_config.json": {
            "min_pixels": 3136,
            "max_pixels": 12845056,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
            "image_processor_type": improc_type,
            "processor_class": processor_class,
        },
        # the Instruct snapshots ship the template twice: here (what AutoProcessor reads) and in
        # tokenizer_config.json (what AutoTokenizer reads)
        "chat_template.json": {"chat_template": QWEN_TEMPLATE},
        "generation_config.json": {
            "bos_token_id": 151643,
            "pad_token_id": 151643,
            "do_sample": True,
            "eos_token_id": [151645, 151643],
            "repetition_penalty": 1.05,
            "temperature": temperature,
            "top_p": 0.001,
            "top_k": 1,
            "transformers_version": "4.37.0",
        },
    }


# transformers 5 state-dict prefixes -> the hub checkpoints' own weight names
_HUB_NAMES = {
    "llava": (
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ),
    "qwen": (("model.visual.", "visual."), ("model.language_model.", "model.")),
}


def hub_name(family: str, key: str) -> str:
    for new, old in _HUB_NAMES["llava" if family == "llava" else "qwen"]:
        if key.startswith(new):
            return old + key[len(new) :]
    return key


def _weights(folder: Path, family: str, seed: int) -> None:
    import torch
    import transformers as tf
    from safetensors.torch import save_file

    from mbpo_bench.models.families import model_class

    config = tf.AutoConfig.from_pretrained(folder)
    torch.manual_seed(seed)
    model = model_class(family)(config)
    dtype = torch.float16 if family == "llava" else torch.bfloat16
    state = {hub_name(family, k): v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    names = sorted(state)
    half = len(names) // 2
    weight_map: dict[str, str] = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def build_real_layout(layout: str, out: Path, *, seed: int = 0) -> Path:
    """Write a tiny checkpoint laid out like hub repo `layout` (one of LAYOUTS) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if layout == LLAVA:
        family, files = "llava", _llava_files()
    elif layout == QWEN2:
        family, files = "qwen2_vl", _qwen_files("qwen2_vl", "Qwen2VLImageProcessor")
    else:
        old = layout == QWEN25_OLD
        improc = "Qwen2_5_VLImageProcessor" if old else "Qwen2VLImageProcessor"
        family, files = "qwen2_5_vl", _qwen_files("qwen2_5_vl", improc)
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2))
    if family == "llava":
        _llava_tokenizer(out)
    else:
        _qwen_tokenizer(out, family)
    _weights(out, family, seed)
    return out
