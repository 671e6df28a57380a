"""The shared training loop on a toy model: schedule, checkpoints, resume, divergence, data order."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import torch
from mbpo_bench.trainers import checkpoint, loop

from mbpo_bench.errors import UserError
from mbpo_bench.runs import RunDir, read_jsonl

torch.set_num_threads(1)


class _Interrupt(Exception):
    pass


def _toy(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _step_fn(model: torch.nn.Module, fail_at: int | None = None, nan_at: int | None = None):  # type: ignore[no-untyped-def]
    stream = loop.IndexStream(n=10, batch_size=4, seed=3)
    xs = torch.linspace(-1, 1, 40).view(10, 4)

    def step(i: int) -> loop.StepResult:
        if fail_at is not None and i == fail_at:
            raise _Interrupt
        x = xs[stream.batch(i)] + 0.01 * torch.randn(4, 4)  # uses the per-step seed
        loss = (model(x) - 1).pow(2).mean()
        if nan_at is not None and i == nan_at:
            loss = loss * float("nan")
        loss.backward()
        return loop.StepResult(
            loss=float(loss.detach()), metrics={"part": 1.0}, samples=4, tokens=16
        )

    return step


def _run(tmp: Path, model: torch.nn.Module, steps: int = 5, **kw):  # type: ignore[no-untyped-def]
    optim = loop.OptimConfig(lr=0.05, steps=steps, batch_size=4, warmup_ratio=0.2)
    runtime = loop.RuntimeConfig(save_every=2, progress=False)
    run = RunDir.open(tmp, config=optim)
    return loop.train_loop(
        run=run, model=model, optim=optim, runtime=runtime, step_fn=kw.pop("step_fn"),
        save_final=lambda p: (p / "w.pt").write_bytes(b"x"), **kw,
    )  # fmt: skip


def test_loop_runs_logs_checkpoints_and_finishes(tmp_path: Path) -> None:
    model = _toy()
    before = [p.detach().clone() for p in model.parameters()]
    result = _run(tmp_path, model, step_fn=_step_fn(model))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert {"loss", "part", "lr", "grad_norm", "samples_per_s", "tokens_per_s"} <= set(rows[0])
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == [
        "step-000004", "step-000005",
    ]  # fmt: skip
    assert checkpoint.latest(tmp_path / "checkpoints").step == 5  # type: ignore[union-attr]
    assert (tmp_path / "final" / "w.pt").exists() and RunDir(tmp_path).finished
    assert result.last["step"] == 5


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    ref = _toy()
    _run(tmp_path / "a", ref, step_fn=_step_fn(ref))
    model = _toy()
    with pytest.raises(_Interrupt):
        _run(tmp_path / "b", model, step_fn=_step_fn(model, fail_at=3))
    with pytest.raises(UserError, match="pass --resume"):
        _run(tmp_path / "b", _toy(), step_fn=_step_fn(model))
    fresh = _toy(seed=99)  # different init: everything must come from the checkpoint
    result = _run(tmp_path / "b", fresh, step_fn=_step_fn(fresh), resume=True)
    assert result.resumed_from == 2
    for a, b in zip(ref.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    rows_a = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    rows_b = read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


@pytest.mark.parametrize("damaged", ["trainable.safetensors", "state.pt"])
def test_a_damaged_checkpoint_is_one_line_and_its_printed_fix_resumes(
    tmp_path: Path, damaged: str
) -> None:
    """A checkpoint file that no longer parses (a traceback out of safetensors / torch.load
    before) names itself and the fix; following the fix resumes from the checkpoint before it
    and ends on the uninterrupted run's weights."""
    ref = _toy()
    _run(tmp_path / "a", ref, step_fn=_step_fn(ref))
    model = _toy()
    with pytest.raises(_Interrupt):  # checkpoints at steps 2 and 4, interrupted in step 5
        _run(tmp_path / "b", model, step_fn=_step_fn(model, fail_at=4))
    newest = tmp_path / "b" / "checkpoints" / "step-000004"
    (newest / damaged).write_bytes(b"not a checkpoint")
    fresh = _toy(seed=99)
    with pytest.raises(UserError) as info:
        _run(tmp_path / "b", fresh, step_fn=_step_fn(fresh), resume=True)
    message = str(info.value)
    assert "\n" not in message and str(newest / damaged) in message
    assert f"delete {newest} and resume again" in message
    shutil.rmtree(newest)  # the printed fix
    fresh = _toy(seed=99)
    assert _run(tmp_path / "b", fresh, step_fn=_step_fn(fresh), resume=True).resumed_from == 2
    for a, b in zip(ref.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_damaged_sharded_checkpoint_is_one_line(tmp_path: Path) -> None:
    """The torch.distributed.checkpoint layout too: unreadable metadata names the folder."""
    from mbpo_bench.trainers import sharded_checkpoint

    folder = tmp_path / "step-000002"
    (folder / sharded_checkpoint.SHARDED).mkdir(parents=True)
    (folder / sharded_checkpoint.SHARDED / sharded_checkpoint.METADATA).write_bytes(b"garbage")
    model = _toy()
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    with pytest.raises(UserError) as info:
        checkpoint.load(checkpoint.Checkpoint(2, folder), model, optimizer=optimizer,
                        scheduler=scheduler)  # fmt: skip
    message = str(info.value)
    assert "\n" not in message and str(folder / sharded_checkpoint.SHARDED) in message
    assert f"delete {folder} and resume again" in message


def test_nan_loss_stops_before_the_step_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    model = _toy()
    with pytest.raises(loop.TrainingDiverged) as info:
        _run(tmp_path, model, step_fn=_step_fn(model, nan_at=3))
    message = str(info.value)
    assert "loss is nan at step 4" in message and "step-000002" in message
    assert "\n" not in message and info.value.exit_code == 3
    assert checkpoint.latest(tmp_path / "checkpoints").step == 2  # type: ignore[union-attr]
    assert not RunDir(tmp_path).finished
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_schedule_warmup_then_linear_decay() -> None:
    cfg = loop.OptimConfig(lr=1.0, steps=20, warmup_ratio=0.1)
    factors = [loop.lr_factor(s, cfg) for s in range(20)]
    assert factors[0] == pytest.approx(1 / 3) and factors[1] == pytest.approx(2 / 3)
    assert factors[2] == 1.0 and factors[-1] > 0
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))
    assert loop.lr_factor(5, loop.OptimConfig(steps=20, schedule="constant")) == 1.0


def test_index_stream_is_a_permutation_per_epoch_and_deterministic() -> None:
    stream = loop.IndexStream(n=5, batch_size=2, seed=1)
    seen = stream.batch(0) + stream.batch(1) + stream.batch(2)[:1]
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert stream.batch(7) == loop.IndexStream(n=5, batch_size=2, seed=1).batch(7)
    assert len(stream.batch(2)) == 2 and stream.position(3) == {"step": 3, "epoch": 1, "offset": 1}


def test_optim_config_rejects_indivisible_accumulation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        loop.OptimConfig(batch_size=6, grad_accum=4)
