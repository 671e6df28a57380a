"""benchmarks/generate_anatomy.py: one generate call split at its forwards (tiny LLaVA, CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from generate_anatomy import generate_lines, measure_generate

from mbpo_bench.models import Prompt, build_tiny_model, load_model

pytestmark = pytest.mark.bench  # benchmark scripts: `tox -e bench`, not the default envs


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_one_prefill_and_a_decode_forward_per_further_token(tmp_path: Path, family: str) -> None:
    """4 new tokens = the prefill + 3 decode forwards; the vision tower ran once; the parts add
    up to the hooked call; the markdown states the split."""
    from support_prompts import noise_image

    torch.set_num_threads(1)
    vlm = load_model(build_tiny_model(family, tmp_path / "m", seed=0))
    prompts = [Prompt("Is it red? Answer yes or no.", noise_image(k)) for k in range(3)]

    def call() -> object:
        return vlm.generate(prompts, max_new_tokens=4, min_new_tokens=4, batch_size=3)

    a = measure_generate(vlm.hf_model, call, "cpu", repeats=1)
    assert len(a.decodes) == 3 and a.prefill > 0 and a.vision > 0 and a.before > 0
    assert a.before + a.prefill + sum(a.decodes) + a.between == pytest.approx(a.hooked)
    assert a.between >= 0
    text = "\n".join(generate_lines(a, "3 prompts", 1e9, 790e12))
    assert "## Anatomy of one generate batch: 3 prompts" in text
    assert "| 3 decode forwards (" in text and "verdict: the prefill forward is" in text
