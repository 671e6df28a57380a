"""Rollout speed options (merged LoRA, static cache, shared prefill) sample what the default does.

Tiny LLaVA and Qwen2-VL models with a LoRA adapter whose B matrices are random (peft starts them
at zero, which would make merging trivially exact). CPU timing means nothing here; the H200
benchmark measures the speed (benchmarks/bench_grpo_step.py --variants).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from support_prompts import mixed_prompts, with_random_adapter

from mbpo_bench.config import dump_yaml, from_dict, load_config, to_dict
from mbpo_bench.errors import UserError
from mbpo_bench.models import Prompt, build_tiny_model, load_model
from mbpo_bench.models.lora import LoraSettings, apply_lora
from mbpo_bench.models.rollout_speed import GenerationSpeed, merged_lora, parse_label

torch.set_num_threads(1)
LABELS = ["merged", "static", "shared", "static+shared", "merged+static+shared"]


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def vlm(request: Any, tmp_path_factory: Any) -> Any:
    folder = tmp_path_factory.mktemp(request.param)
    build_tiny_model(request.param, folder, seed=1)
    return with_random_adapter(folder)


@pytest.mark.parametrize("label", LABELS)
def test_greedy_texts_equal_the_default_path(vlm: Any, label: str) -> None:
    prompts = mixed_prompts(5)
    base = vlm.generate(prompts, max_new_tokens=6, batch_size=8)
    speed = parse_label(label)
    # greedy with several samples per prompt only exists on the shared path (transformers refuses
    # num_return_sequences > 1 without sampling): every copy must be the single greedy text
    n = 3 if speed.shared_prefill else 1
    out = vlm.generate(prompts, max_new_tokens=6, batch_size=8, num_samples=n, speed=speed)
    assert out == [texts * n for texts in base]


@pytest.mark.parametrize("label", ["static", "shared", "merged+static+shared"])
def test_sampling_with_a_seed_is_reproducible_and_unchanged(vlm: Any, label: str) -> None:
    kw: dict[str, Any] = {"max_new_tokens": 5, "num_samples": 3, "do_sample": True}
    torch.manual_seed(3)
    default = vlm.generate(mixed_prompts(5), **kw)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(vlm.generate(mixed_prompts(5), speed=parse_label(label), **kw))
    assert runs[0] == runs[1]
    assert runs[0] == default  # same random draws in the same order, same distributions


def _logits(vlm: Any) -> torch.Tensor:
    prompts = [p for p in mixed_prompts(5) if p.image is not None]
    pixels = vlm.images_to_tensor([p.image for p in prompts])
    inputs, _ = vlm.scoring_batch(prompts, ["yes"] * len(prompts), pixels)
    with torch.no_grad():
        return vlm.model(**inputs).logits.float()


def test_merged_lora_computes_the_adapter_and_restores_it(vlm: Any) -> None:
    before = _logits(vlm)
    with vlm.model.disable_adapter():
        reference = _logits(vlm)
    with merged_lora(vlm.model):
        merged = _logits(vlm)
    assert (before - reference).abs().max() > 1e-3  # the adapter matters
    assert torch.allclose(merged, before, atol=1e-4)
    assert torch.equal(_logits(vlm), before)  # adapter active again, base weights unchanged
    with vlm.model.disable_adapter(), merged_lora(vlm.model):
        assert torch.equal(_logits(vlm), reference)  # the reference policy stays the base


@pytest.fixture(scope="module")
def bf16_llava(tmp_path_factory: Any) -> Any:
    folder = tmp_path_factory.mktemp("llava_bf16")
    build_tiny_model("llava", folder, seed=1)
    return with_random_adapter(folder, dtype="bfloat16")


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _adapters_enabled(model: Any) -> bool:
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    return bool(layers) and not any(m.disable_adapters or m.merged for m in layers)


def test_weights_are_bit_identical_after_a_merged_bf16_rollout(bf16_llava: Any) -> None:
    before = _snapshot(bf16_llava.model)
    torch.manual_seed(0)
    speed = GenerationSpeed(merge_lora=True)
    bf16_llava.generate(
        mixed_prompts(5), max_new_tokens=4, do_sample=True, num_samples=2, speed=speed
    )
    after = _snapshot(bf16_llava.model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _adapters_enabled(bf16_llava.model)


def test_merged_lora_restores_the_weights_when_the_block_raises(bf16_llava: Any) -> None:
    before = _snapshot(bf16_llava.model)
    with pytest.raises(RuntimeError, match="boom"), merged_lora(bf16_llava.model):
        raise RuntimeError("boom")
    after = _snapshot(bf16_llava.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _adapters_enabled(bf16_llava.model)


def test_merged_lora_without_an_adapter_is_a_no_op(tmp_path: Path) -> None:
    build_tiny_model("llava", tmp_path, seed=2)
    plain = load_model(tmp_path)
    base = plain.generate(mixed_prompts(5)[:2], max_new_tokens=3)
    assert (
        plain.generate(mixed_prompts(5)[:2], max_new_tokens=3, speed=parse_label("merged")) == base
    )


def test_labels_round_trip_and_reject_unknown_parts() -> None:
    for label in ["default", "merged", "static-eager", "merged+static+shared"]:
        assert parse_label(label).label() == label
    assert parse_label("static-eager") == GenerationSpeed(cache="static", compile=False)
    with pytest.raises(UserError, match="unknown part"):
        parse_label("merged+statik")
    with pytest.raises(UserError, match="rollout cache 'paged'"):
        GenerationSpeed(cache="paged")  # type: ignore[arg-type]


def test_grpo_speed_fields_round_trip_and_reach_generate(tmp_path: Path) -> None:
    from mbpo_bench.trainers import grpo

    cfg = grpo.GRPOConfig()
    assert cfg.grpo.generation_speed() == GenerationSpeed()  # today's behaviour by default
    cfg.grpo.merge_lora_for_rollout = True
    cfg.grpo.rollout_cache = "static"
    cfg.grpo.rollout_compile = False
    cfg.grpo.shared_prefill = True
    assert from_dict(grpo.GRPOConfig, to_dict(cfg)) == cfg
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(grpo.GRPOConfig, path) == cfg
    with pytest.raises(UserError, match="did you mean: static"):
        load_config(grpo.GRPOConfig, path, ["grpo.rollout_cache=statc"])

    seen: list[dict[str, Any]] = []

    class _VLM:
        def generate_completions(self, prompts: list[Prompt], **kw: Any) -> list[list[Any]]:
            from mbpo_bench.models.protocol import Completion

            seen.append(kw)
            return [[Completion("yes", (1,), False)] * kw["num_samples"] for _ in prompts]

    class _Policy:
        vlm = _VLM()

        def train_mode(self, on: bool) -> None:
            pass

        def sampling(self) -> Any:
            import contextlib

            return contextlib.nullcontext()

    from mbpo_bench.data.items import TaskItem

    item = TaskItem(task="t", doc_id="0", question="q?", target="yes", verifier="yesno")
    grpo.sample(_Policy(), [Prompt("q?")], [item], cfg.grpo, 2)  # type: ignore[arg-type]
    assert seen[0]["speed"] == GenerationSpeed(
        merge_lora=True, cache="static", compile=False, shared_prefill=True
    )


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_compiled_static_cache_on_cuda_keeps_texts_and_weights(family: str, tmp_path: Path) -> None:
    """On CUDA transformers compiles the static-cache decode step (CUDA graphs): still the same
    greedy texts (float32), and bf16 weights bit-identical after merged rollouts.
    Run on the GPU machine: `pytest -m gpu tests/test_models_rollout_speed.py`."""
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    build_tiny_model(family, tmp_path, seed=1)
    vlm = load_model(tmp_path, device="cuda", dtype="float32")
    apply_lora(vlm, LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for name, p in vlm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    prompts = mixed_prompts(5)
    base = vlm.generate(prompts, max_new_tokens=8, batch_size=8)
    for label in ["static", "merged+static", "merged+static+shared"]:
        speed = parse_label(label)
        n = 3 if speed.shared_prefill else 1
        for _ in range(2):  # the second call runs the compiled (and recorded) graphs
            out = vlm.generate(prompts, max_new_tokens=8, batch_size=8, num_samples=n, speed=speed)
            assert out == [texts * n for texts in base], label
    vlm.model.to(torch.bfloat16)
    before = _snapshot(vlm.model)
    for _ in range(2):
        vlm.generate(prompts, max_new_tokens=4, do_sample=True, num_samples=2,
                     speed=parse_label("merged+static+shared"))  # fmt: skip
    after = _snapshot(vlm.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
