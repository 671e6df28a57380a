"""runtime.autocast: GRPO's reference and policy passes under bf16 autocast, as TRL's `bf16=True`.

- "auto" leaves CPU runs, fp32 models and FSDP runs as they were (no autocast); on a bf16 model
  on CUDA it is on; `true` with a non-bf16 model is a one-line error.
- With it on, peft's fp32 LoRA matmuls run in bf16 inside the step's scoring passes (and only
  there), the step-0 KL of a fresh adapter is exactly 0 (reference and policy computed alike),
  and the optimised log-probs equal TRL's way on the same tensors: the model's forward under
  `torch.autocast(bf16)`, then `selective_log_softmax`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mbpo_bench.errors import UserError
from mbpo_bench.models import Prompt, build_tiny_model
from mbpo_bench.models.lora import LoraSettings

torch.set_num_threads(1)


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))


def test_auto_is_off_on_cpu_fp32_and_fsdp_and_on_needs_bf16() -> None:
    from mbpo_bench.trainers.grpo import GRPOConfig
    from mbpo_bench.trainers.policy import autocast_enabled

    from mbpo_bench.config import load_config

    assert GRPOConfig().runtime.autocast == "auto"
    for text, value in [("true", True), ("on", True), ("false", False), ("auto", "auto")]:
        assert load_config(GRPOConfig, None, [f"runtime.autocast={text}"]).runtime.autocast == value
    with pytest.raises(UserError, match="autocast"):
        load_config(GRPOConfig, None, ["runtime.autocast=bf16"])
    assert autocast_enabled("auto", "cuda", "bfloat16") is True
    assert autocast_enabled("auto", "cuda:1", "bfloat16") is True
    assert autocast_enabled("auto", "cpu", "bfloat16") is False
    assert autocast_enabled("auto", "cpu", "float32") is False
    assert autocast_enabled("auto", "cuda", "float32") is False
    assert autocast_enabled("auto", "cuda", "float16") is False
    assert autocast_enabled("auto", "cuda", "bfloat16", "fsdp") is False
    assert autocast_enabled(False, "cuda", "bfloat16") is False
    assert autocast_enabled(True, "cpu", "bfloat16") is True
    with pytest.raises(UserError, match=r"runtime\.autocast=true needs a bfloat16 model"):
        autocast_enabled(True, "cpu", "float32")


def _policy(
    tmp_path: Path, autocast: bool | str, dtype: str = "bfloat16", family: str = "llava"
) -> Any:
    from mbpo_bench.trainers.loop import RuntimeConfig
    from mbpo_bench.trainers.policy import load_policy

    folder = build_tiny_model(family, tmp_path / "m", seed=1)
    runtime = RuntimeConfig(device="cpu", dtype=dtype, autocast=autocast)  # type: ignore[arg-type]
    return load_policy(str(folder), lora=LoraSettings(r=4, alpha=8), full_finetune=False,
                       runtime=runtime, need_reference=True)  # fmt: skip


def _lora_dtypes(policy: Any) -> tuple[list[torch.dtype], list[Any]]:
    """Output dtypes of every LoRA A matmul (hooks on peft's lora_A Linear modules)."""
    seen: list[torch.dtype] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        for name, m in policy.vlm.model.named_modules()
        if name.endswith("lora_A.default")
    ]
    assert hooks
    return seen, hooks


@pytest.mark.parametrize("autocast", [True, "auto"])
def test_grpo_step_runs_lora_in_bf16_under_autocast_and_the_fresh_kl_is_zero(
    tmp_path: Path, autocast: bool | str
) -> None:
    from mbpo_bench.trainers import grpo
    from mbpo_bench.trainers.loop import OptimConfig

    from mbpo_bench.data.items import TaskItem

    policy = _policy(tmp_path, autocast)
    assert policy.autocast is (autocast is True)  # auto: off on CPU, results as before
    lora_a = next(p for n, p in policy.vlm.model.named_parameters() if "lora_A" in n)
    assert lora_a.dtype == torch.float32  # peft's fp32 master weights on the bf16 base
    _image(3).save(tmp_path / "img.png")
    item = TaskItem("t", "0", "Is it red? Answer yes or no.", "yes", "yesno", tmp_path / "img.png")
    s = grpo.GRPOSettings(num_generations=2, max_new_tokens=2)
    step, _ = grpo.make_step_fn(policy, [item], [], s, OptimConfig(batch_size=1), seed=0)
    seen, hooks = _lora_dtypes(policy)
    try:
        result = step(0)
    finally:
        for h in hooks:
            h.remove()
    assert result.samples == 2
    # the rollout (eager generate, adapter on) runs outside autocast: fp32 LoRA outputs there;
    # the update's policy pass inside (the reference pass has the adapter disabled)
    if autocast is True:
        assert set(seen) == {torch.float32, torch.bfloat16}
    else:
        assert set(seen) == {torch.float32}
    assert result.metrics["kl"] == 0.0  # lora_B = 0: policy == reference, computed alike
    assert lora_a.grad is None or lora_a.grad.dtype == torch.float32


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_autocast_logprobs_equal_trls_bf16_forward_and_differ_from_fp32_lora(
    tmp_path: Path, family: str
) -> None:
    from trl.trainer.utils import selective_log_softmax

    policy = _policy(tmp_path, True, family=family)
    vlm = policy.vlm
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B != 0, so its matmuls count
        for name, p in vlm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    prompts = [Prompt("Is there a red circle?", _image(0)), Prompt("How many stars?", None)]
    ids = [(5, 9, 11), (7, 8)]
    with policy.mixed_precision(), torch.no_grad():
        ours = vlm.answer_logprobs(prompts, ids, temperature=0.7)
    with torch.no_grad():
        plain = vlm.answer_logprobs(prompts, ids, temperature=0.7)
    for k, (prompt, answer) in enumerate(zip(prompts, ids, strict=True)):
        pixels = None if prompt.image is None else vlm.images_to_tensor([prompt.image])
        inputs, lengths = vlm.scoring_batch([prompt], [answer], pixels)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # TRL, bf16=True
            logits = vlm.hf_model(**inputs, use_cache=False).logits.float()
        n = int(lengths[0])
        theirs = selective_log_softmax(logits[:, -n - 1 : -1], inputs["input_ids"][:, -n:], 0.7)
        torch.testing.assert_close(ours.logps[k, :n], theirs[0], atol=1e-5, rtol=0)
    assert not torch.equal(ours.logps, plain.logps)  # the option changes what is computed


@pytest.mark.slow
def test_compiled_layers_under_autocast_stay_as_close_to_eager_as_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU benchmark's combination (runtime.compile_layers + autocast): the compiled step's
    KL and LoRA gradients are as close to the eager step's under autocast as they are without
    it. A bf16 model's compiled step is not bit-equal to its eager step either way (inductor
    and AOTAutograd fuse and keep some intermediates unrounded: ~1% in the KL, a few % of the
    largest gradient here), so the comparison is against that baseline, not zero.
    aot_eager: AOTAutograd traces the ambient autocast as it does for inductor."""
    import functools

    from mbpo_bench.trainers import grpo
    from mbpo_bench.trainers.loop import OptimConfig

    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.models import compile as compile_mod

    policy = _policy(tmp_path, True)
    with torch.no_grad():  # a trained-looking adapter: B != 0
        for name, p in policy.vlm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    monkeypatch.setattr(compile_mod, "compiled_layers",
                        functools.partial(compile_mod.compiled_layers, backend="aot_eager"))  # fmt: skip
    _image(3).save(tmp_path / "img.png")
    item = TaskItem("t", "0", "Is it red? Answer yes or no.", "yes", "yesno", tmp_path / "img.png")
    s = grpo.GRPOSettings(num_generations=2, max_new_tokens=2)

    def run(autocast: bool, compiled: bool) -> tuple[float, dict[str, torch.Tensor]]:
        policy.autocast, policy.compile_layers = autocast, compiled
        step, _ = grpo.make_step_fn(policy, [item], [], s, OptimConfig(batch_size=1), seed=0)
        policy.vlm.model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same rollout every time (no optimizer step in between)
        kl = step(0).metrics["kl"]
        named = policy.vlm.model.named_parameters()
        return kl, {n: p.grad.clone() for n, p in named if p.grad is not None}

    def gap(a: tuple[float, dict[str, torch.Tensor]], b: Any) -> tuple[float, float]:
        assert a[1].keys() == b[1].keys() and any("lora_B" in k for k in a[1])
        grads = max(float((a[1][n] - b[1][n]).abs().max() / b[1][n].abs().max()) for n in a[1])
        return abs(a[0] - b[0]) / abs(b[0]), grads

    kl_plain, grads_plain = gap(run(False, True), run(False, False))
    eager = run(True, False)
    kl_auto, grads_auto = gap(run(True, True), eager)
    assert eager[0] > 0.01  # B != 0: the policy has moved away from the reference
    # torch 2.15 (tox's slow env): KL gap 0.0080 under autocast vs 0.0033 without (2.4x; below
    # 2x on 2.13); both under 1%, so the bound is 3x plus a 0.2% floor, and 5% absolute
    assert kl_auto <= 3 * kl_plain + 2e-3 and kl_auto < 0.05
    assert grads_auto <= 2 * grads_plain + 1e-2 and grads_auto < 0.1
