"""LoRA via peft: language-model-only targets, training invariants, reference policy, save/merge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mbpo_bench.errors import UserError
from mbpo_bench.models import Prompt, build_tiny_model, load_model
from mbpo_bench.models.lora import (
    LoraSettings,
    apply_lora,
    merge_adapter,
    reference_policy,
    save_adapter,
    trainable_parameters,
)

torch.set_num_threads(1)


def _prompts() -> list[Prompt]:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    return [Prompt("Is there a red circle?", img), Prompt("How many stars?", None)]


@pytest.fixture(scope="module", params=["llava", "qwen2_vl", "qwen2_5_vl"])
def folder(request, tmp_path_factory) -> Path:
    return build_tiny_model(request.param, tmp_path_factory.mktemp(request.param))


def _train(vlm, steps: int) -> None:
    opt = torch.optim.Adam(trainable_parameters(vlm).values(), lr=1e-2)
    for _ in range(steps):
        lp = vlm.answer_logprobs(_prompts(), ["yes", "three"], requires_grad=True)
        loss = -lp.sum().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_lora_targets_language_model_only(folder: Path):
    vlm = load_model(folder)
    apply_lora(vlm)
    names = list(trainable_parameters(vlm))
    assert names and all("lora_" in n and "language_model" in n for n in names)
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_include_vision_adds_vision_blocks(folder: Path):
    vlm = load_model(folder)
    apply_lora(vlm, LoraSettings(r=4, include_vision=True))
    names = list(trainable_parameters(vlm))
    assert any("vision_tower" in n or "visual" in n for n in names)
    assert any("language_model" in n for n in names)


def test_training_changes_adapter_only_and_reference_is_base(folder: Path):
    vlm = load_model(folder)
    prompts, answers = _prompts(), ["yes", "three"]
    base_lp = vlm.answer_logprobs(prompts, answers).logps
    apply_lora(vlm, LoraSettings(r=4))
    base = {n: p.detach().clone() for n, p in vlm.model.named_parameters() if not p.requires_grad}
    adapter = {n: p.detach().clone() for n, p in trainable_parameters(vlm).items()}
    # Two steps: LoRA B starts at zero, so A's gradient is zero on the first step.
    _train(vlm, steps=2)
    for n, p in vlm.model.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n
        else:
            assert not torch.equal(p, adapter[n]), n
    trained_lp = vlm.answer_logprobs(prompts, answers).logps
    assert not torch.allclose(trained_lp, base_lp, atol=1e-4)
    with reference_policy(vlm) as ref:
        assert torch.allclose(ref.answer_logprobs(prompts, answers).logps, base_lp, atol=1e-6)
    assert torch.allclose(vlm.answer_logprobs(prompts, answers).logps, trained_lp)


def test_save_load_and_merge_adapter(folder: Path, tmp_path: Path):
    vlm = load_model(folder)
    apply_lora(vlm, LoraSettings(r=4))
    _train(vlm, steps=1)
    prompts, answers = _prompts(), ["yes", "three"]
    trained = vlm.answer_logprobs(prompts, answers).logps
    out = save_adapter(vlm, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file()
    reloaded = load_model(folder, adapter=out)
    assert not trainable_parameters(reloaded)
    assert torch.allclose(reloaded.answer_logprobs(prompts, answers).logps, trained, atol=1e-6)
    merge_adapter(reloaded)
    assert not hasattr(reloaded.model, "peft_config")
    assert torch.allclose(reloaded.answer_logprobs(prompts, answers).logps, trained, atol=1e-4)


def test_reference_policy_without_adapter_is_an_error(folder: Path):
    vlm = load_model(folder)
    with pytest.raises(UserError, match="apply_lora"), reference_policy(vlm):
        pass
    apply_lora(vlm)
    with pytest.raises(UserError, match="already has"):
        apply_lora(vlm)
