"""A tiny text-only causal LM built offline (a Llama with our byte-level BPE tokenizer and its
ChatML template), saved like a hub folder: the stand-in for a VLM's language backbone and for a
local judge in tests."""

from __future__ import annotations

from pathlib import Path


def build_tiny_causal_lm(out: Path, seed: int = 0) -> Path:
    import torch
    import transformers as tf

    from mbpo_bench.models.tokenizer import build_tokenizer

    tok = build_tokenizer("llava")
    tok.padding_side = "left"
    config = tf.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
