"""Every trainer on a tiny LLaVA and a tiny embedded benchmark: two steps change every trainable
parameter with a finite loss; MBPO without offline pairs is GRPO; accumulation 4 x 2 == batch 8;
PGD on the model stays in the ball and lowers log p(answer); a NaN loss stops with the message."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mbpo_bench.config import load_config
from mbpo_bench.runs import read_jsonl

torch.set_num_threads(1)

TINY_BENCH = "n_train: 48\nn_eval_per_cell: 4\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A tiny LLaVA (48 px) and a 48-scene embedded benchmark in a private cache."""
    from mbpo_bench.models import build_tiny_model

    root = tmp_path_factory.mktemp("trainers")
    (root / "bench.yaml").write_text(TINY_BENCH)
    with pytest.MonkeyPatch.context() as mp:  # restored even when the setup fails
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(root / "bench.yaml"))
        random_model = build_tiny_model("llava", root / "model", seed=0)
        # a short full fine-tune so that sampled answers are colour words, some right, some wrong:
        # GRPO groups then have reward variance (a random model's groups are all zero)
        base = {"model": str(random_model)}
        sft = common(base, "data=mbpo_embedded_color,mbpo_embedded_existence", "full_finetune=true",
                     "optim.steps=30", "optim.lr=0.0003", "optim.batch_size=8")  # fmt: skip
        run_method("sft", sft, root / "sft")
        yield {"root": root, "model": str(root / "sft")}


def common(tiny: dict[str, Any], *extra: str) -> list[str]:
    return [
        f"model={tiny['model']}",
        "data=mbpo_embedded_color",
        "runtime.threads=1",
        "runtime.progress=false",
        "runtime.tensorboard=false",
        "runtime.save_every=100",
        "optim.steps=2",
        "optim.warmup_ratio=0.0",
        *extra,
    ]


RL = ("grpo.num_generations=4", "grpo.max_new_tokens=3", "optim.batch_size=4")


def run_method(method: str, overrides: list[str], out: Path, **kw: Any) -> Any:
    from mbpo_bench.trainers.table import load_trainer

    cls, run = load_trainer(method)
    return run(load_config(cls, overrides=overrides), out, **kw)


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("sft", ("optim.batch_size=4",)),
        # a random tiny model is rarely right on the clean image, so the "clean answer right"
        # rule of a hard negative is off here: these tests check the mechanics of every step
        ("dpo", ("optim.batch_size=4", "mining.steps=2", "mining.limit=16",
                 "mdpo_weight=1.0", "anchor_weight=0.5", "mining.require_clean_correct=false")),
        ("grpo", RL),
        ("mbpo", (*RL, "mining.steps=2", "mining.limit=16", "grpo.beta=0.04",
                  "mining.require_clean_correct=false")),
    ],
)  # fmt: skip
def test_two_steps_change_every_trainable_parameter(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str,
    extra: tuple[str, ...],
) -> None:  # fmt: skip
    import importlib

    module = importlib.import_module("mbpo_bench.trainers.recipe")  # every recipe's loop
    real = module.train_loop
    seen: dict[str, Any] = {}

    def spy(**kw: Any) -> Any:
        seen["before"] = {
            n: p.detach().clone() for n, p in kw["model"].named_parameters() if p.requires_grad
        }
        seen["model"] = kw["model"]
        return real(**kw)

    monkeypatch.setattr(module, "train_loop", spy)
    run_method(method, common(tiny, *extra), tmp_path / method)
    rows = read_jsonl(tmp_path / method / "metrics.jsonl")
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    after = dict(seen["model"].named_parameters())
    assert seen["before"], "no trainable parameters"
    unchanged = [n for n, p in seen["before"].items() if torch.equal(p, after[n].detach())]
    assert not unchanged, f"{method}: unchanged parameters {unchanged[:3]}"
    assert all("lora_" in n for n in seen["before"])
    assert (tmp_path / method / "final" / "adapter" / "adapter_config.json").is_file()
    if method in ("dpo", "mbpo"):
        import pandas as pd
        from mbpo_bench.tasks.verifiers import verify

        pairs = pd.read_parquet(tmp_path / method / "pairs.parquet")
        columns = {"image_path", "question", "chosen", "rejected", "iig", "attack_logp_after"}
        assert columns <= set(pairs.columns) and len(pairs) > 0
        for row in pairs.to_dict("records"):  # kept only where the verifier says "wrong"
            assert not verify(
                row["verifier"], row["rejected"], row["target"], row["options"]
            ).correct
            assert row["chosen"] == row["target"]
    if method in ("grpo", "mbpo"):
        assert {"reward_mean", "reward_std", "accuracy", "kl", "clip_fraction", "adv_std"} <= set(
            rows[0]
        )


def test_mbpo_without_offline_pairs_equals_grpo(tiny: dict[str, Any], tmp_path: Path) -> None:
    from mbpo_bench.trainers.data import write_pairs

    empty = tmp_path / "empty.parquet"
    write_pairs(empty, [])
    run_method("grpo", common(tiny, *RL), tmp_path / "grpo")
    run_method(
        "mbpo", common(tiny, *RL, f"preference_data={empty}", "hybrid.offline_ratio=0.5"),
        tmp_path / "mbpo",
    )  # fmt: skip
    keys = ("loss", "policy_loss", "kl", "reward_mean", "accuracy", "adv_std", "grad_norm")
    grpo = read_jsonl(tmp_path / "grpo" / "metrics.jsonl")
    mbpo = read_jsonl(tmp_path / "mbpo" / "metrics.jsonl")
    assert [[r[k] for k in keys] for r in grpo] == [[r[k] for k in keys] for r in mbpo]
    assert all(r["groups_offline"] == 0 for r in mbpo)


def first_step_gradients(
    method: str, overrides: list[str], out: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[float, dict[str, torch.Tensor]]:
    """Run the trainer's setup, then only its first step function: (loss, gradients)."""
    import importlib

    module = importlib.import_module("mbpo_bench.trainers.recipe")  # every recipe's loop

    def first_step(**kw: Any) -> Any:
        torch.manual_seed(123)  # what the loop's per-step seeding does
        result = kw["step_fn"](0)
        grads = {n: p.grad.clone() for n, p in kw["model"].named_parameters() if p.grad is not None}
        return result.loss, grads

    monkeypatch.setattr(module, "train_loop", first_step)
    result: tuple[float, dict[str, torch.Tensor]] = run_method(method, overrides, out)
    return result


@pytest.mark.parametrize(
    ("method", "extra"),
    [("sft", ("optim.batch_size=8",)), ("grpo", ("grpo.num_generations=2", "grpo.max_new_tokens=3",
                                                "optim.batch_size=4"))],
)  # fmt: skip
def test_grad_accumulation_4x2_equals_batch_8(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str,
    extra: tuple[str, ...],
) -> None:  # fmt: skip
    """SFT: 8 samples; GRPO: 4 prompts x G 2 = 8 samples; 4 micro-batches of 2 vs one of 8."""
    one = common(tiny, *extra)
    loss_full, full = first_step_gradients(
        method, [*one, "optim.grad_accum=1"], tmp_path / "full", monkeypatch
    )
    loss_acc, acc = first_step_gradients(
        method, [*one, "optim.grad_accum=4"], tmp_path / "acc", monkeypatch
    )
    assert loss_acc == pytest.approx(loss_full, rel=1e-5, abs=1e-7)
    assert full.keys() == acc.keys() and full
    scale = max(float(g.abs().max()) for g in full.values())
    assert scale > 0
    for name in full:
        torch.testing.assert_close(acc[name], full[name], rtol=1e-4, atol=1e-5 * scale)


def test_pgd_on_the_model_stays_in_the_ball_and_lowers_the_answer_likelihood(
    tiny: dict[str, Any],
) -> None:
    from mbpo_bench.trainers.data import item_prompts, load_items
    from mbpo_bench.trainers.mining import _objective
    from mbpo_bench.trainers.policy import resolve_start

    from mbpo_bench.modality import pgd
    from mbpo_bench.models import load_model

    vlm = load_model(resolve_start(tiny["model"])[0])
    items = load_items("mbpo_embedded_color", limit=4)
    prompts = item_prompts(items)
    images = vlm.images_to_tensor([p.image for p in prompts])  # type: ignore[misc]
    objective = _objective(vlm, prompts, [it.target for it in items], "mean")
    eps = 8 / 255
    out = pgd.pgd_attack(objective, images, eps=eps, alpha=2 / 255, steps=3,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert (out.images - images).abs().max().item() <= eps + 1e-6
    assert out.images.min().item() >= 0.0 and out.images.max().item() <= 1.0
    assert (out.objective_after < out.objective_before).all()
    with torch.no_grad():
        clean = vlm.answer_logprobs(prompts, [it.target for it in items]).mean()
        attacked = vlm.answer_logprobs(
            prompts, [it.target for it in items], pixel_images=out.images
        ).mean()
    assert (attacked < clean).all()  # the answer's loss -log p rises
    assert all(not p.requires_grad or p.grad is None for p in vlm.model.parameters())


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(
    tiny: dict[str, Any], tmp_path: Path
) -> None:
    from mbpo_bench.trainers import checkpoint
    from mbpo_bench.trainers.loop import TrainingDiverged

    out = tmp_path / "nan"
    overrides = common(
        tiny, "optim.batch_size=4", "optim.steps=6", "optim.lr=1.0e+30", "runtime.save_every=1",
        "optim.max_grad_norm=1.0e+30",
    )  # fmt: skip
    with pytest.raises(TrainingDiverged) as info:
        run_method("sft", overrides, out)
    message = str(info.value)
    assert "training stopped before the optimizer step" in message and "\n" not in message
    # the checkpoint written right before the divergence holds the weights that gave the nan:
    # it is set aside (kept, renamed), so the last good checkpoint named is an earlier one
    aside = sorted((out / "checkpoints").glob("diverged-step-*"))
    assert len(aside) == 1 and aside[0].name in message
    last = checkpoint.latest(out / "checkpoints")
    if last is None:
        assert "no good checkpoint was written yet" in message
    else:
        assert str(last.path) in message and last.step < int(aside[0].name.split("-")[-1])
    assert not (out / "status.json").exists()


def _killed_run(method: str, overrides: list[str], out: Path, kill_at: int) -> None:
    """`mbpo-bench train` in a child process that SIGKILLs itself after step `kill_at` (a real
    kill -9). A fresh interpreter, not a fork: autograd refuses to run in a child forked from a
    process whose autograd threads already started (an earlier test in the same worker)."""
    import signal
    import subprocess
    import sys

    from mbpo_bench.trainers.loop import KILL_ENV

    env = {**os.environ, KILL_ENV: str(kill_at), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mbpo_bench", "train", method, *overrides,
           "--output", str(out), "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


TIMING = {"samples_per_s", "tokens_per_s", "step_time_s", "elapsed_s"}


@pytest.mark.parametrize("method", ["grpo", "mbpo"])
def test_kill_9_then_resume_reaches_the_same_final_metrics(
    tiny: dict[str, Any], tmp_path: Path, method: str
) -> None:
    from safetensors.torch import load_file

    extra = ("mining.steps=2", "mining.limit=16") if method == "mbpo" else ()
    overrides = common(tiny, *RL, *extra, "optim.steps=4", "runtime.save_every=2")
    run_method(method, overrides, tmp_path / "straight")
    _killed_run(method, overrides, tmp_path / "killed", kill_at=3)
    rows = read_jsonl(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and not (tmp_path / "killed" / "final").exists()
    result = run_method(method, overrides, tmp_path / "killed", resume=True)
    assert result.resumed_from == 2

    def metrics(run: str) -> list[dict[str, Any]]:
        rows = read_jsonl(tmp_path / run / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    assert metrics("killed") == metrics("straight")
    a = load_file(str(tmp_path / "straight" / "final" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_full_finetune_grpo_with_checkpointing_keeps_a_frozen_reference(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full fine-tuning: weights that get gradients change, the reference copy does not."""
    from mbpo_bench.trainers import policy as policy_mod

    real = policy_mod.load_policy
    seen: dict[str, Any] = {}

    def spy(*args: Any, **kw: Any) -> Any:
        seen["policy"] = real(*args, **kw)
        ref = seen["policy"].frozen_reference
        seen["ref_before"] = {n: p.detach().clone() for n, p in ref.model.named_parameters()}
        seen["before"] = {
            n: p.detach().clone() for n, p in seen["policy"].module.named_parameters()
        }
        return seen["policy"]

    monkeypatch.setattr(policy_mod, "load_policy", spy)
    overrides = common(
        tiny, *RL, "full_finetune=true", "runtime.gradient_checkpointing=true", "optim.lr=0.001"
    )
    run_method("grpo", overrides, tmp_path / "full")
    policy = seen["policy"]
    changed = [
        n for n, p in policy.module.named_parameters() if not torch.equal(p, seen["before"][n])
    ]
    assert any("language_model" in n for n in changed) and any("projector" in n for n in changed)
    ref = dict(policy.frozen_reference.model.named_parameters())
    assert all(torch.equal(ref[n], p) for n, p in seen["ref_before"].items())
    assert not any(p.requires_grad for p in ref.values())
    assert (tmp_path / "full" / "final" / "model" / "config.json").is_file()
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert rows[-1]["kl"] > 0  # the policy moved away from the frozen reference
