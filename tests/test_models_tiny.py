"""Tiny offline models: tokenizer, architecture, save/load round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mbpo_bench.errors import UserError
from mbpo_bench.models import FAMILIES, SIZES, build_tiny_model, count_parameters, load_model
from mbpo_bench.models.families import model_class
from mbpo_bench.models.tiny import model_config
from mbpo_bench.models.tokenizer import ANSWER_WORDS, build_tokenizer

torch.set_num_threads(1)


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_answer_words_are_one_token_after_assistant_prefix(family):
    tok = build_tokenizer(family)
    conv = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
            for q in ("Is there a red circle? Answer with yes or no.", "How many stars are there?")]  # fmt: skip
    for prompt in tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True):
        base = tok(prompt, add_special_tokens=False)["input_ids"]
        for word in ANSWER_WORDS:
            ids = tok(prompt + word, add_special_tokens=False)["input_ids"]
            assert ids[: len(base)] == base and len(ids) == len(base) + 1, word
            assert tok.decode(ids[len(base) :]) == word


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_tokenizer_pads_left_and_round_trips_text(family):
    tok = build_tokenizer(family)
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.image_token in tok.get_vocab()
    text = "What colour is the star?\n  Options: A. red, B. blue!"
    assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_gives_identical_logits(family, tmp_path: Path):
    folder = build_tiny_model(family, tmp_path / "m", seed=3)
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin"))
    tok = build_tokenizer("llava" if family.startswith("llava") else "qwen")
    torch.manual_seed(3)
    fresh = model_class(family)(model_config(family, SIZES["tiny"], 48, tok)).eval()
    vlm = load_model(folder)
    assert type(vlm.hf_model) is type(fresh)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        a = fresh(input_ids=ids).logits
        b = vlm.hf_model(input_ids=ids).logits
    assert torch.equal(a, b)
    for p in vlm.model.parameters():
        assert p.dtype == torch.float32 and not p.requires_grad


def test_tiny_llava_follows_the_field_notes_recipe(tmp_path: Path):
    vlm = load_model(build_tiny_model("llava", tmp_path / "m"))
    cfg = vlm.hf_model.config
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size) == (48, 16)
    assert (cfg.vision_config.hidden_size, cfg.vision_config.num_hidden_layers) == (128, 2)
    assert (cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers) == (256, 2)
    assert cfg.text_config.intermediate_size == 1024
    assert vlm.num_image_tokens() == 9 and vlm.image_size == 48
    assert 2.5e6 < sum(p.numel() for p in vlm.model.parameters()) < 3.2e6


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_tiny_qwen_has_nine_image_tokens(family, tmp_path: Path):
    vlm = load_model(build_tiny_model(family, tmp_path / "m"))
    assert vlm.num_image_tokens() == 9 and vlm.family == family


def test_custom_image_size(tmp_path: Path):
    vlm = load_model(build_tiny_model("qwen2_vl", tmp_path / "m", image_size=64))
    assert vlm.image_size == 64 and vlm.num_image_tokens() == 16
    with pytest.raises(UserError, match="multiple of 16"):
        build_tiny_model("llava", tmp_path / "bad", image_size=50)


def test_unknown_family_and_size_suggest_names(tmp_path: Path):
    with pytest.raises(UserError, match="did you mean: qwen2_vl"):
        build_tiny_model("qwen2vl", tmp_path)
    with pytest.raises(UserError, match="did you mean: small"):
        build_tiny_model("llava", tmp_path, size="smal")


def test_small_size_parameter_counts_are_in_range():
    for family in FAMILIES:
        n = count_parameters(family, "small")
        assert 50e6 <= n <= 150e6, (family, n)


def test_extra_corpus_reaches_the_tokenizer(tmp_path: Path):
    folder = build_tiny_model("llava", tmp_path / "m", extra_corpus=["zebra zebra zebra"] * 20)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert "zebra" in vocab
