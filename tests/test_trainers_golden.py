"""Golden losses: two steps of each trainer (sft, dpo, grpo, mbpo) on a tiny LLaVA with fixed
seeds give the committed values in tests/golden/trainer_losses.json.

What would move them is a change of behaviour (a loss, a normaliser, the data order, sampling,
mining, the optimizer), which is what this guards during refactors. The values are regenerated
only on purpose: `MBPO_BENCH_REGEN_GOLDEN=1 python -m pytest tests/test_trainers_golden.py`
writes the file and fails (so a regeneration can never pass unnoticed); commit the file with the
reason in the commit message.

Why the tiny model's weights come from numpy: same-seed torch init differs between torch versions
for some layers (shared/docs/field-notes.md), and the test envs take whatever torch the registry
has. Every random tensor of the built model is therefore overwritten from numpy's PCG64, seeded
by the parameter's name (constant tensors, i.e. norm weights and biases, keep their constants),
so the starting weights are the same under any torch; the fixture's `model` entry (parameter
count and weight sum) says so first when they are not. Then 30 steps of full fine-tuning make the
sampled answers colour words, some right, some wrong, so GRPO groups carry reward variance.

Tolerance (rel 1e-4, abs 1e-6): runs here agree bit for bit, and so do transformers 5.17 and 5.24
on torch 2.13, and torch 2.14.1 (the CUDA build, on CPU) with transformers 5.24 (measured: the
regenerated files were identical). Another torch may reorder float32 sums (~1e-7 relative per
op), which 30 + 2 AdamW steps grow far less than 1e-4; a change of behaviour moves these values by
much more (one token more in SFT's normaliser: ~1e-2). LoRA's initialisation, the data order
(randperm) and GRPO's sampling (multinomial) still use torch's generator: if a torch release
changes one of those, the values must be regenerated (with that reason in the commit). GRPO's
loss is ~0 by construction (ratio 1, group-centred advantages), so its gradient norm and KL carry
the check there.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mbpo_bench.config import load_config
from mbpo_bench.runs import read_jsonl

torch.set_num_threads(1)

GOLDEN = Path(__file__).parent / "golden" / "trainer_losses.json"
REGENERATE = "MBPO_BENCH_REGEN_GOLDEN"
REL, ABS = 1e-4, 1e-6
TINY_BENCH = "n_train: 48\nn_eval_per_cell: 4\n"
RL = ("grpo.num_generations=4", "grpo.max_new_tokens=3", "optim.batch_size=4")
MINE = ("mining.steps=2", "mining.limit=16", "mining.require_clean_correct=false")
# method -> (overrides, metrics recorded per step besides `loss`)
CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sft": (("optim.batch_size=4",), ("nll", "answer_logp_mean", "grad_norm")),
    "dpo": (
        ("optim.batch_size=4", *MINE, "mdpo_weight=1.0", "anchor_weight=0.5"),
        ("dpo_loss", "mdpo_conditional_loss", "anchor_loss", "grad_norm"),
    ),
    "grpo": (RL, ("reward_mean", "policy_loss", "kl", "grad_norm")),
    "mbpo": (
        (*RL, *MINE, "grpo.beta=0.04"),
        ("reward_mean", "groups_offline", "policy_loss", "kl", "grad_norm"),
    ),
}


def numpy_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Overwrite every non-constant parameter with N(0, 0.02) from numpy's PCG64 (by name)."""
    import numpy as np

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                continue  # norm weights (1) and biases (0): constants under any torch
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            values = rng.standard_normal(tuple(p.shape), dtype=np.float32) * np.float32(0.02)
            p.copy_(torch.from_numpy(values))


def fingerprint(folder: Path) -> dict[str, float]:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    return {
        "parameters": float(sum(t.numel() for t in tensors.values())),
        "weight_sum": sum(float(t.double().sum()) for t in tensors.values()),
        "weight_abs_sum": sum(float(t.double().abs().sum()) for t in tensors.values()),
    }


def run_method(method: str, overrides: list[str], out: Path) -> list[dict[str, Any]]:
    from mbpo_bench.trainers.table import load_trainer

    cls, run = load_trainer(method)
    run(load_config(cls, overrides=overrides), out)
    return read_jsonl(out / "metrics.jsonl")


def common(model: str, *extra: str) -> list[str]:
    return [
        f"model={model}",
        "data=mbpo_embedded_color",
        "runtime.seed=0",
        "runtime.threads=1",
        "runtime.progress=false",
        "runtime.tensorboard=false",
        "runtime.save_every=100",
        "optim.steps=2",
        "optim.warmup_ratio=0.0",
        *extra,
    ]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The numpy-initialised tiny LLaVA, fine-tuned 30 steps, in a private cache."""
    from transformers import LlavaForConditionalGeneration

    from mbpo_bench.models import build_tiny_model

    root = tmp_path_factory.mktemp("golden")
    (root / "bench.yaml").write_text(TINY_BENCH)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(root / "bench.yaml"))
        folder = build_tiny_model("llava", root / "model", seed=0)
        model = LlavaForConditionalGeneration.from_pretrained(folder)
        numpy_weights(model)
        model.save_pretrained(folder)
        sft = common(str(folder), "data=mbpo_embedded_color,mbpo_embedded_existence",
                     "full_finetune=true", "optim.steps=30", "optim.lr=0.0003",
                     "optim.batch_size=8")  # fmt: skip
        rows = run_method("sft", sft, root / "base")
        yield {
            "model": fingerprint(folder),
            "base_sft": {"loss": [rows[0]["loss"], rows[-1]["loss"]]},
            "path": str(root / "base"),
        }


def golden() -> dict[str, Any]:
    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing — regenerate it with {REGENERATE}=1 and commit it")
    data: dict[str, Any] = json.loads(GOLDEN.read_text())
    return data


def assert_close(got: dict[str, list[float]], want: dict[str, list[float]], what: str) -> None:
    assert got.keys() == want.keys(), what
    for key, values in want.items():
        assert len(got[key]) == len(values), f"{what} {key}"
        for step, (g, w) in enumerate(zip(got[key], values, strict=True)):
            assert math.isclose(g, w, rel_tol=REL, abs_tol=ABS), (
                f"{what}: {key} at step {step + 1} is {g!r}, the golden value is {w!r}"
            )


def test_the_starting_model_and_base_are_the_golden_ones(base: dict[str, Any]) -> None:
    if os.environ.get(REGENERATE):
        pytest.skip("regenerating: the method tests write the file")
    want = golden()
    for key, value in want["model"].items():  # a different model explains every other mismatch
        assert math.isclose(base["model"][key], value, rel_tol=1e-6), f"tiny model {key}"
    assert_close(base["base_sft"], want["base_sft"], "base (30 SFT steps)")


@pytest.mark.parametrize("method", list(CASES))
def test_two_steps_give_the_golden_losses(
    base: dict[str, Any], tmp_path: Path, method: str
) -> None:
    overrides, keys = CASES[method]
    rows = run_method(method, common(base["path"], *overrides), tmp_path / method)  # base's cache
    got = {key: [float(r[key]) for r in rows] for key in ("loss", *keys)}
    assert all(math.isfinite(v) for values in got.values() for v in values)
    if os.environ.get(REGENERATE):
        data = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
        data.update({"model": base["model"], "base_sft": base["base_sft"], method: got})
        data["_regenerate"] = f"{REGENERATE}=1 python -m pytest tests/test_trainers_golden.py"
        GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        pytest.fail(f"{REGENERATE} is set: wrote {method} to {GOLDEN} — commit it with the reason")
    assert_close(got, golden()[method], method)
