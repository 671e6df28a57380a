"""The same code paths on CUDA in bf16 (run on the GPU machine: `pytest -m gpu tests/test_gpu.py`).

Deselected by default (`-m "not slow and not gpu"`). Selected on a machine without CUDA they fail
loudly rather than skip, so a green `-m gpu` run always means the GPU path ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import torch

    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    from mbpo_bench.models import build_tiny_model

    root = tmp_path_factory.mktemp("gpu")
    (root / "bench.yaml").write_text("n_train: 64\nn_eval_per_cell: 8\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(root / "bench.yaml"))
        yield {"root": root, "model": build_tiny_model("llava", root / "model", seed=0)}


def test_model_ops_run_in_bf16_on_cuda_and_match_fp32(cuda_tiny: dict[str, Any]) -> None:
    import torch
    from PIL import Image

    from mbpo_bench.models import Prompt, load_model

    gpu = load_model(cuda_tiny["model"], device="cuda")
    ref = load_model(cuda_tiny["model"], device="cpu", dtype="float32")
    assert gpu.model.dtype == torch.bfloat16 and gpu.device.type == "cuda"
    image = Image.new("RGB", (48, 48), (200, 30, 30))
    prompts = [Prompt("What color is the circle?", image), Prompt("Is there a star?", None)]
    lp_gpu = gpu.answer_logprobs(prompts, ["red", "no"])
    lp_ref = ref.answer_logprobs(prompts, ["red", "no"])
    assert torch.equal(lp_gpu.mask.cpu(), lp_ref.mask)
    assert torch.allclose(lp_gpu.sum().float().cpu(), lp_ref.sum(), atol=0.1)
    assert len(gpu.generate(prompts, max_new_tokens=3, num_samples=2, do_sample=True)[0]) == 2
    pixels = gpu.images_to_tensor([image]).requires_grad_(True)
    gpu.answer_logprobs(
        prompts[:1], ["red"], pixel_images=pixels, requires_grad=True
    ).sum().sum().backward()
    assert (
        pixels.grad is not None
        and torch.isfinite(pixels.grad).all()
        and pixels.grad.abs().sum() > 0
    )


@pytest.mark.parametrize("method", ["sft", "grpo", "mbpo"])
def test_trainers_take_two_steps_on_cuda(
    cuda_tiny: dict[str, Any], tmp_path: Path, method: str
) -> None:
    import math

    from mbpo_bench.trainers.table import load_trainer

    from mbpo_bench.config import load_config

    overrides = [
        f"model={cuda_tiny['model']}",
        "data=mbpo_embedded_color",
        "optim.steps=2",
        "optim.batch_size=4",
        "runtime.device=cuda",
        "runtime.progress=false",
        "runtime.save_every=1",
    ]
    if method != "sft":
        overrides += ["grpo.num_generations=4", "grpo.max_new_tokens=3"]
    if method == "mbpo":
        overrides += ["mining.limit=16", "mining.steps=2"]
    cls, run = load_trainer(method)
    result = run(load_config(cls, overrides=overrides), tmp_path / method)
    assert result.steps == 2 and math.isfinite(result.last["loss"])
    assert (tmp_path / method / "final" / "info.json").is_file()


def test_eval_runs_on_cuda_with_probes(cuda_tiny: dict[str, Any], tmp_path: Path) -> None:
    from mbpo_bench.config import RuntimeSection
    from mbpo_bench.evaluation.api import run_eval
    from mbpo_bench.evaluation.config import EvalConfig, ProbeConfig
    from mbpo_bench.evaluation.scoring import recompute_results

    cfg = EvalConfig(
        model=str(cuda_tiny["model"]),
        tasks="embedded",
        output=str(tmp_path / "eval"),
        limit=8,
        runtime=RuntimeSection(device="cuda"),
        probes=ProbeConfig(names=["image", "blind", "mismatched", "noise", "iig"]),
    )
    results = run_eval(cfg, progress=False)
    assert results.to_dict() == recompute_results(tmp_path / "eval").to_dict()
    assert results.n_samples > 0
