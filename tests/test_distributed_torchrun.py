"""Data parallelism end to end: `torchrun --nproc_per_node=2` (gloo, CPU) gives the result of one
process with the same global batch, for GRPO, SFT (+ a resume on a different number of
processes) and evaluation.

Each 2-process run is a real `python -m torch.distributed.run --standalone -m mbpo_bench ...`
subprocess; the 1-process reference runs in this process. GRPO samples with
`grpo.seed_per_prompt=true` (seeds by position in the global batch), so both see the same
rollouts; only float summation order differs (the 2-process gradient is an all-reduced mean), so
weights are compared within a tolerance. Evaluation batches are fixed and seeded per batch, so
the results must be identical apart from timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mbpo_bench.config import load_config
from mbpo_bench.runs import read_jsonl

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

TINY_BENCH = "n_train: 48\nn_eval_per_cell: 4\n"
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
QUIET = ("runtime.threads=1", "runtime.progress=false", "runtime.tensorboard=false",
         "runtime.device=cpu", "optim.warmup_ratio=0.0")  # fmt: skip
SFT = ("data=mbpo_embedded_color,mbpo_embedded_existence", "full_finetune=true",
       "optim.steps=30", "optim.lr=0.0003", "optim.batch_size=8")  # fmt: skip
# dapo (token-mean over the batch) and batch-std scaling: the ranks hold different token counts
# and reward spreads, so only global normalisers and the gathered std give the 1-process numbers
GRPO = ("data=mbpo_embedded_color", "optim.steps=2", "optim.lr=0.001", "optim.batch_size=4",
        "grpo.num_generations=4", "grpo.max_new_tokens=3", "grpo.seed_per_prompt=true",
        "grpo.aggregation=dapo", "grpo.scaling=batch")  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A tiny LLaVA, a 48-scene embedded benchmark in a private cache, and a 30-step SFT of it
    (one process) so that GRPO groups have reward variance."""
    from mbpo_bench.models import build_tiny_model

    root = tmp_path_factory.mktemp("distributed")
    (root / "bench.yaml").write_text(TINY_BENCH)
    env = {"MBPO_BENCH_CACHE": str(root / "cache"),
           "MBPO_BENCH_EMBEDDED_CONFIG": str(root / "bench.yaml")}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    model = build_tiny_model("llava", root / "model", seed=0)
    run_here("sft", [f"model={model}", *QUIET, *SFT, "runtime.save_every=15"], root / "sft")
    yield {"root": root, "model": str(model), "sft": str(root / "sft"), "env": env}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def run_here(method: str, overrides: list[str], out: Path, **kw: Any) -> Any:
    from mbpo_bench.trainers.table import load_trainer

    cls, run = load_trainer(method)
    return run(load_config(cls, overrides=overrides), out, **kw)


def torchrun(tiny: dict[str, Any], args: list[str], *, extra_env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`python -m torch.distributed.run --nproc_per_node=2 --standalone -m mbpo_bench ARGS`."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(tiny["env"], OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **(extra_env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "mbpo_bench", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def train_args(method: str, overrides: list[str], out: Path) -> list[str]:
    return ["train", method, "--output", str(out), "--quiet", *overrides]


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float
) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0.0, atol=atol, msg=name)


def test_grpo_on_two_processes_equals_one(tiny: dict[str, Any], tmp_path: Path) -> None:
    overrides = [f"model={tiny['sft']}", *QUIET, *GRPO]
    run_here("grpo", overrides, tmp_path / "one")
    torchrun(tiny, train_args("grpo", overrides, tmp_path / "two"))
    one = read_jsonl(tmp_path / "one" / "metrics.jsonl")
    two = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in two] == [1, 2]
    assert any(r["adv_abs_mean"] > 0 for r in one), "no reward variance: the test would be empty"
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
        assert b["reward_mean"] == pytest.approx(a["reward_mean"])  # the same rollouts
        assert b["samples_per_s"] > 0 and b["lr"] == a["lr"]
    adapter = Path("final/adapter/adapter_model.safetensors")
    # 5e-5, as the FSDP GRPO test: rollouts score the sampled ids, and AdamW turns float-order
    # noise in near-zero gradients into updates of order lr; loss and grad_norm stay sharp above
    assert_same_weights(weights(tmp_path / "one" / adapter), weights(tmp_path / "two" / adapter),
                        atol=5e-5)  # fmt: skip
    assert not (tmp_path / "two" / "tensorboard").exists()
    assert json.loads((tmp_path / "two" / "status.json").read_text())["finished"]


def test_sft_saved_on_two_processes_resumes_on_one(tiny: dict[str, Any], tmp_path: Path) -> None:
    """2 processes train SFT to step 15 and are killed (-9); one process resumes to step 30 and
    ends where the uninterrupted one-process run (the fixture's) ended."""
    overrides = [f"model={tiny['model']}", *QUIET, *SFT, "runtime.save_every=15"]
    killed = torchrun(tiny, train_args("sft", overrides, tmp_path / "run"),
                      extra_env={"MBPO_BENCH_DEBUG_KILL_AT_STEP": "15"}, check=False)  # fmt: skip
    assert killed.returncode != 0
    assert json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())["step"] == 15
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 16))  # one row per step: rank 0 writes
    reference = read_jsonl(Path(tiny["sft"]) / "metrics.jsonl")
    for a, b in zip(reference[:15], rows, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    result = run_here("sft", overrides, tmp_path / "run", resume=True)
    assert result.resumed_from == 15
    model = Path("final/model/model.safetensors")
    assert_same_weights(weights(Path(tiny["sft"]) / model), weights(tmp_path / "run" / model),
                        atol=1e-4)  # fmt: skip


def _comparable(results: dict[str, Any]) -> dict[str, Any]:
    timing = ("wall_time_s", "compute_time_s", "samples_per_s")
    out = {k: v for k, v in results.items() if k not in timing}
    out["config"] = {k: v for k, v in out["config"].items() if k != "output"}
    return out


def test_eval_on_two_processes_equals_one(tiny: dict[str, Any], tmp_path: Path) -> None:
    from mbpo_bench.config import RuntimeSection
    from mbpo_bench.evaluation.api import run_eval
    from mbpo_bench.evaluation.config import EvalConfig

    model = str(Path(tiny["sft"]) / "final" / "model")
    tasks = "mbpo_embedded_color,mbpo_embedded_existence"
    run_eval(EvalConfig(model=model, tasks=tasks, output=str(tmp_path / "one"), batch_size=3,
                        runtime=RuntimeSection(device="cpu")), progress=False)  # fmt: skip
    torchrun(tiny, ["eval", "--model", model, "--tasks", tasks, "--output", str(tmp_path / "two"),
                    "--batch-size", "3", "--device", "cpu", "--no-progress"])  # fmt: skip
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert one["n_samples"] == two["n_samples"] > 0
    assert _comparable(one) == _comparable(two)
    samples = [(tmp_path / d / "samples.jsonl").read_text() for d in ("one", "two")]
    assert samples[0] == samples[1]  # same rows in the same order: gathered in rank order
