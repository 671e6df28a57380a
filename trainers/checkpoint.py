"""Training checkpoints, written so that kill -9 at any instant leaves a loadable one.

Layout under `<run>/checkpoints/`:
    step-000010/trainable.safetensors   trainable parameters only (the LoRA adapter, or every
                                        weight under full fine-tuning), by parameter name
    step-000010/state.pt                optimizer, scheduler, RNG states, data position, step
    latest.json                         {"step": 10, "dir": "step-000010"}

A checkpoint folder is filled under a temporary name and renamed into place (atomic on POSIX),
then `latest.json` is replaced atomically; older folders beyond `keep` are pruned only after that.
So a reader sees either the previous or the new checkpoint, never a torn one. `state.pt` holds
only tensors, numbers and lists, and is loaded with `weights_only=True`.

A model sharded with FSDP2 (`runtime.strategy=fsdp`) is saved by every rank in the sharded
layout of `sharded_checkpoint.py` (`step-N/sharded/` instead of `trainable.safetensors`, the
optimizer there too); `load` reads either layout into either kind of model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mbpo_bench.runs import plain_modes, write_json_atomic

TRAINABLE = "trainable.safetensors"
STATE = "state.pt"
LATEST = "latest.json"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": _python_state_to_list(random.getstate()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_python_state_from_list(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_list(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_list(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


def save(
    root: Path,
    step: int,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data: dict[str, Any],
    keep: int = 2,
    extra: dict[str, Any] | None = None,
) -> Checkpoint:
    """Write checkpoint `step` atomically, point latest.json at it, prune beyond `keep`.

    Rank 0 alone calls it for a replicated model; every rank for a sharded one."""
    from safetensors.torch import save_file

    from mbpo_bench.models.common import is_sharded

    if is_sharded(model):
        return _save_sharded(root, step, model, optimizer, scheduler, data, keep, extra)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / TRAINABLE))
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "data": data,
        "extra": extra or {},
    }
    with (tmp / STATE).open("wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    plain_modes(tmp)  # safetensors writes owner-only files
    final = root / name
    if final.exists():  # re-saving a step after a resume: move the old one aside first
        old = root / f".old-{name}-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(root)
    write_json_atomic(root / LATEST, {"step": step, "dir": name})
    _prune(root, keep)
    return Checkpoint(step, final)


def _save_sharded(
    root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: Any, data: dict[str, Any], keep: int, extra: dict[str, Any] | None,
) -> Checkpoint:  # fmt: skip
    from mbpo_bench.trainers import sharded_checkpoint

    from mbpo_bench import parallel

    name = f"step-{step:06d}"
    state = {"step": step, "scheduler": scheduler.state_dict(), "rng": rng_state(),
             "data": data, "extra": extra or {}}  # fmt: skip
    final = sharded_checkpoint.save(root, name, model, optimizer, state)
    if parallel.is_main():
        _fsync_dir(root)
        write_json_atomic(root / LATEST, {"step": step, "dir": name})
        _prune(root, keep)
    parallel.barrier()
    return Checkpoint(step, final)


def _complete(path: Path) -> bool:
    from mbpo_bench.trainers.sharded_checkpoint import is_sharded_checkpoint

    return (path / STATE).exists() and ((path / TRAINABLE).exists() or is_sharded_checkpoint(path))


def _prune(root: Path, keep: int) -> None:
    folders = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in folders[: max(len(folders) - max(keep, 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp-*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)


def latest(root: Path) -> Checkpoint | None:
    """The newest complete checkpoint (latest.json, else the highest step folder), or None."""
    pointer = root / LATEST
    if pointer.exists():
        try:
            info = json.loads(pointer.read_text())
            path = root / info["dir"]
            if _complete(path):
                return Checkpoint(int(info["step"]), path)
        except (json.JSONDecodeError, KeyError, ValueError):
            pass
    folders = sorted(p for p in root.glob("step-*") if _complete(p))
    if not folders:
        return None
    return Checkpoint(int(folders[-1].name.split("-")[1]), folders[-1])


def load(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG; return the saved state (step, data, extra).

    Either layout into either kind of model (replicated or sharded, any number of ranks)."""
    from mbpo_bench.trainers import sharded_checkpoint
    from safetensors.torch import load_file

    from mbpo_bench.models.common import is_sharded

    if sharded_checkpoint.is_sharded_checkpoint(checkpoint.path):
        _readable(
            checkpoint,
            sharded_checkpoint.SHARDED,
            lambda _: sharded_checkpoint.load(checkpoint.path, model, optimizer),
        )
        return _load_state(checkpoint, scheduler)
    weights = _readable(checkpoint, TRAINABLE, lambda f: load_file(str(f)))
    if is_sharded(model):
        state = _load_state(checkpoint, scheduler)
        sharded_checkpoint.load_replicated(weights, state["optimizer"], model, optimizer)
        return state
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint {checkpoint.path} has unknown parameters: {missing[:3]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    state = _load_state(checkpoint, scheduler)
    optimizer.load_state_dict(state["optimizer"])
    return state


def _readable(checkpoint: Checkpoint, name: str, read: Any) -> Any:
    """`read(path / name)`, or a one-line `UserError` naming the damaged file and the fix. Why:
    checkpoints are written atomically, so a file that does not parse was damaged afterwards
    (disk, copy, hand edit); resuming from it would be a traceback, and its cure is to resume
    from the checkpoint before it."""
    from mbpo_bench.errors import UserError, exception_line

    path = checkpoint.path / name
    try:
        return read(path)
    except Exception as exc:  # safetensors, pickle and zip errors share no base class
        raise UserError(
            f"checkpoint file {path} cannot be read ({exception_line(exc, 120)}) — delete {checkpoint.path} and "
            "resume again: the run continues from the checkpoint before it, or from the start"
        ) from None


def _load_state(checkpoint: Checkpoint, scheduler: Any) -> dict[str, Any]:
    """state.pt: restore the scheduler and the RNG, return the rest (step, data, extra, ...)."""
    state: dict[str, Any] = _readable(checkpoint, STATE, lambda f: torch.load(f, weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
