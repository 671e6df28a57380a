"""Sharded training checkpoints (`runtime.strategy=fsdp`) with torch.distributed.checkpoint (DCP).

Layout of one checkpoint folder (beside the replicated layout of `checkpoint.py`):
    step-000010/sharded/        DCP files: every rank writes its shards of the trainable
                                weights and of the AdamW state (one `.distcp` file per rank)
                                and rank 0 the `.metadata` that maps them to whole tensors
    step-000010/state.pt        scheduler, RNG states, data position, step (rank 0, as before)

Why DCP: it saves each rank's shards in parallel (no gather of a 7B-72B model onto one rank) and
loads them back into ANY sharding, so a checkpoint written by 2 processes resumes on 1 and vice
versa, and a plain (unsharded) model loads it too. Only trainable weights are saved (the LoRA
adapter, or every weight under full fine-tuning), as in the replicated layout.

Atomicity, as `checkpoint.save`: every rank writes into one temporary folder (its name is the
same on all ranks), DCP's coordinator writes `.metadata` only after every rank's data is written,
rank 0 adds `state.pt`, renames the folder into place and replaces `latest.json`; barriers keep
the ranks in step. A reader sees the previous or the new checkpoint, never a torn one. All ranks
must see the same file system (one node, or a shared mount on several).

A replicated checkpoint (written under runtime.strategy=ddp) loads into a sharded model too
(`load_replicated`): the whole tensors are sharded on the way in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from mbpo_bench import parallel

SHARDED = "sharded"
METADATA = ".metadata"


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _states(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """{"model": trainable weights, "optim": optimizer state}, keyed by parameter name, with
    DTensors for the sharded parameters (DCP's state-dict API, which also creates AdamW's
    state before a load so that there is something to load into)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    keep = _trainable_names(model)
    return {"model": {k: v for k, v in model_sd.items() if k in keep}, "optim": optim_sd}


def is_sharded_checkpoint(path: Path) -> bool:
    return (path / SHARDED / METADATA).is_file()


def save(
    root: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:  # fmt: skip
    """Write `root/name` (sharded weights + optimizer, and rank 0's `state`) from every rank;
    returns the final folder. The caller points latest.json at it and prunes (rank 0)."""
    import torch.distributed.checkpoint as dcp

    tmp = root / f".tmp-{name}-sharded"
    if parallel.is_main():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    parallel.barrier()
    dcp.save(_states(model, optimizer), checkpoint_id=str(tmp / SHARDED))
    final = root / name
    if parallel.is_main():
        with (tmp / "state.pt").open("wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists():  # re-saving a step after a resume: move the old one aside first
            old = root / f".old-{name}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    return final


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the sharded weights and optimizer state of checkpoint folder `path` into `model`
    (sharded over any number of ranks, or not sharded at all) and `optimizer`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    states = _states(model, optimizer)
    saved = set(dcp.FileSystemReader(str(path / SHARDED)).read_metadata().state_dict_metadata)
    missing = [k for k in states["model"] if f"model.{k}" not in saved]
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks trainable weights: {missing[:3]}")
    # AdamW holds no state for a parameter that never had a gradient (LLaVA's vision
    # post_layernorm): drop those from the template DCP made, as the saved optimizer had none
    states["optim"]["state"] = {
        name: value
        for name, value in states["optim"]["state"].items()
        if any(k.startswith(f"optim.state.{name}.") for k in saved)
    }
    dcp.load(states, checkpoint_id=str(path / SHARDED))
    set_state_dict(
        model, optimizer, model_state_dict=states["model"], optim_state_dict=states["optim"],
        options=StateDictOptions(strict=False),
    )  # fmt: skip


def load_replicated(
    weights: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Load a replicated checkpoint (whole trainable tensors by name, and a plain
    `optimizer.state_dict()`, keyed by parameter index) into a sharded `model`: every rank holds
    the whole tensors and keeps its shard of them."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, dict(weights), options=options)  # type: ignore[arg-type]
    # the plain state keys parameters by their index in the optimizer's list, which the loop
    # builds from model.parameters() (requires_grad only): the same order as these names
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    by_name: dict[str, Any] = {
        "state": {names[int(i)]: s for i, s in optim_state["state"].items()},
        "param_groups": [
            {**g, "params": [names[int(i)] for i in g["params"]]}
            for g in optim_state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=options)
