"""FSDP2 sharding of a policy (`runtime.strategy=fsdp`): what is sharded, and the few operations
that differ from the replicated (DDP-style) path: gradient clipping and the full state dict.

Engine: `torch.distributed.fsdp.fully_shard` (FSDP2) called directly, not accelerate's FSDP2
plugin. The trainers own their loop (hand-written accumulation, explicit gradient all-reduce, the
reference policy through the same module), so accelerate's `prepare` would wrap the optimizer and
the step for nothing; and the wrapping below needs a choice per module (see next point) that
accelerate's auto-wrap policy cannot express. `torchrun` and `accelerate launch` both start the
processes; the sharding itself is torch's.

What is sharded, and why:
- Every decoder layer of the language model and every encoder layer of the vision tower is one
  FSDP unit: its parameters are all-gathered just before its forward (and again in backward) and
  freed after, so at most a few layers are ever whole. These are >95% of a 7B-72B model's weights.
- Everything else (embeddings, final norm, lm_head, the multimodal projector, vision embeddings
  and norms) stays REPLICATED on every rank as `ignored_params` of the root, and its gradients are
  all-reduced by `parallel.all_reduce_grads` like the DDP path. Two reasons: (1) the scoring path
  (`answer_logprobs`) and transformers' `generate` (which computes image features before the
  root forward) call `model.model`, `lm_head` and `get_image_features` directly, so a parameter
  owned by the root unit would still be a shard there; (2) wrapping a transformers
  `PreTrainedModel` itself (the vision tower, the whole model) swaps its class, and newer
  transformers look up output capturing (the vision tower's hidden states) by class name, so the
  vision features silently come back empty. Layers are plain modules: neither problem arises.
  The cost: LLaVA-7B replicates ~0.27B parameters, Qwen2-VL-72B ~2.5B (embedding + lm_head).
- The root is a small holder module (not the transformers model, for reason 2). Its lazy
  initialisation (which marks it root for every layer) is forced right after wrapping, so the
  first forward may enter through any submodule.
- Mixed precision: parameters stay in the loaded dtype (`runtime.dtype`: bf16 on GPU, fp32 on
  CPU), as on the DDP path, and gradients are reduce-scattered in fp32 (`reduce_dtype`).
- `runtime.fsdp_offload`: FSDP2's `CPUOffloadPolicy` keeps the sharded parameters, their
  gradients and (since AdamW allocates its state beside them) the optimizer state in CPU memory.
- `runtime.gradient_checkpointing` (transformers' non-reentrant checkpointing of the layers)
  composes with FSDP2: the recomputation unshards the layer again.
- Loading (`load_sharded`): rank 0 alone reads the checkpoint (into CPU memory); the other
  ranks build the model on the meta device and receive their shards from it, so neither CPU
  nor GPU memory ever holds one whole copy per process.
- Under LoRA the reference is the same module with the adapter disabled (a flag on the LoRA
  layers, no weights touched), so there is still no second copy; under full fine-tuning the
  frozen reference copy is sharded the same way.

Every rank must run the same sequence of forwards (each all-gathers a layer from every rank):
`generate` gets `synced_gpus` (a rank whose samples ended keeps stepping until all have), and
the trainers refuse the options that would split ranks into different call sequences. Where
the ranks' work is uneven by nature (mining), or by choice for rollouts
(`runtime.fsdp_rollout=gathered`, or `auto` where it fits), `gathered` makes the weights whole for the block, so no
forward inside is a collective.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from mbpo_bench.errors import UserError
from mbpo_bench.models.common import GATHERED_ATTR, SHARDED_ATTR, unwrap
from mbpo_bench.models.common import is_sharded as is_sharded


def _require_launcher() -> None:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UserError(
            "runtime.strategy=fsdp needs a process group, and this process was not started by a "
            "launcher — run it under `torchrun --nproc_per_node=N -m mbpo_bench ...` or "
            "`accelerate launch --num_processes N -m mbpo_bench ...` (N may be 1), or use "
            "runtime.strategy=ddp"
        )


def check_options(runtime: Any, conflicts: Sequence[tuple[bool, str, str]] = ()) -> None:
    """Refuse, before anything is written, a run that cannot start: `runtime.strategy=fsdp`
    outside a launcher, or with an option that needs whole weights or would give the ranks
    different sequences of forwards (`conflicts`: (is set, what, the fix))."""
    if runtime.fsdp_offload and runtime.strategy != "fsdp":
        raise UserError(
            "runtime.fsdp_offload only applies to sharded training — add runtime.strategy=fsdp "
            "or drop runtime.fsdp_offload"
        )
    if runtime.fsdp_rollout != "auto" and runtime.strategy != "fsdp":
        raise UserError(
            "runtime.fsdp_rollout only applies to sharded training — add runtime.strategy=fsdp "
            "or drop runtime.fsdp_rollout"
        )
    if runtime.strategy != "fsdp":
        return
    _require_launcher()
    from mbpo_bench.models.loading import resolve_device

    resolve_device(runtime.device)  # CUDA asked for but missing: refused before the run folder
    every = (
        (runtime.compile_layers, "runtime.compile_layers", "drop it (not tested with FSDP yet)"),
        *conflicts,
    )
    for on, what, fix in every:
        if on:
            raise UserError(f"{what} does not work with runtime.strategy=fsdp — {fix}")


def require_process_group(device: str) -> None:
    """Open the process group FSDP needs, also for one process under torchrun; refuse a plain
    `python` launch, where there is no group to build a device mesh on."""
    _require_launcher()
    if not torch.distributed.is_available():
        raise UserError(
            "runtime.strategy=fsdp needs torch.distributed, missing from this torch build — "
            "install a torch with distributed support or use runtime.strategy=ddp"
        )
    if torch.distributed.is_initialized():
        return
    from mbpo_bench.models.loading import resolve_device
    from mbpo_bench.parallel import backend_for, local_rank

    resolved = resolve_device(device)  # a one-line error where CUDA is asked for but missing
    if resolved.startswith("cuda"):
        torch.cuda.set_device(local_rank())
    try:
        torch.distributed.init_process_group(
            backend=backend_for("cuda" if resolved.startswith("cuda") else "cpu")
        )
    except (ValueError, RuntimeError) as exc:  # e.g. RANK set by hand, no MASTER_ADDR
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"runtime.strategy=fsdp could not open the process group ({first}) — start the run "
            "with `torchrun` or `accelerate launch`, which set RANK, WORLD_SIZE, MASTER_ADDR and "
            "MASTER_PORT"
        ) from exc


def _units(hf_model: Any) -> list[torch.nn.Module]:
    """The FSDP units: each layer of every `layers` / `blocks` ModuleList (the language model's
    decoder layers, the vision tower's encoder layers); refuses a model without decoder layers."""
    lists = {
        name: module
        for name, module in hf_model.named_modules()
        if isinstance(module, torch.nn.ModuleList)
        and len(module) > 0
        and name.rsplit(".", 1)[-1] in ("layers", "blocks")
    }
    if not any("language_model" in name for name in lists):
        raise UserError(
            f"runtime.strategy=fsdp does not know how to shard {type(hf_model).__name__}: it has "
            "no decoder layer list under `language_model` — use runtime.strategy=ddp for it"
        )
    return [layer for layers in lists.values() for layer in layers]


def shard_model(
    module: torch.nn.Module,
    *,
    offload: bool = False,
    lazy: bool = True,
    device: torch.device | None = None,
) -> torch.nn.Module:
    """Shard `module` (a transformers VLM, optionally under a peft wrapper) in place over all
    ranks with FSDP2; returns the FSDP root (a holder of `module`; see the module docstring)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    if is_sharded(module):
        raise RuntimeError("this module is already sharded")
    device = device or next(module.parameters()).device
    units = _units(unwrap(module))
    world = torch.distributed.get_world_size()
    mesh = init_device_mesh(device.type, (world,))
    kwargs: dict[str, Any] = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(reduce_dtype=torch.float32),
    }
    if offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for unit in units:
        fully_shard(unit, **kwargs)
    in_units = {id(p) for unit in units for p in unit.parameters()}
    replicated = {p for p in module.parameters() if id(p) not in in_units}
    root = _Root(module)
    fully_shard(root, ignored_params=replicated, **kwargs)
    # Mark `root` as the root of every layer now, so that a forward may enter through any
    # submodule (scoring calls model.model and lm_head; generate calls get_image_features).
    if lazy:
        root._get_fsdp_state()._lazy_init()  # type: ignore[operator]
    object.__setattr__(module, SHARDED_ATTR, root)  # not a submodule: no cycle in the tree
    return root


def load_sharded(
    load: Callable[..., Any],
    prepare: Callable[[Any], None],
    device: str,
    *,
    offload: bool = False,
) -> Any:
    """A sharded `VisionLanguageModel` that no process but rank 0 ever holds whole.

    `load(device=..., empty=...)` builds the model (`models.load_model`), `prepare(vlm)` makes
    it trainable (LoRA, requires_grad, checkpointing). Rank 0 loads the checkpoint into CPU
    memory (the run's dtype) and prepares it: its LoRA initialisation is the one a single
    process makes. Every rank builds the same model on the meta device (no weights), prepares
    and shards it, allocates only its shards (on CPU under `offload`) and the replicated
    parameters, and receives every tensor from rank 0, one at a time. So CPU memory holds one
    whole copy on the node (rank 0's, freed afterwards) instead of one per process, and no GPU
    ever holds more than its shards plus one tensor in flight (loading whole onto each GPU
    first, as before, failed for a model larger than one GPU).
    """
    from torch.distributed.tensor import DTensor

    from mbpo_bench.models.loading import resolve_device

    rank = torch.distributed.get_rank()
    world = torch.distributed.get_world_size()
    compute = torch.device(resolve_device(device))
    if compute.type == "cuda":
        compute = torch.device("cuda", torch.cuda.current_device())
    source = None
    if rank == 0:
        source = load(device="cpu", empty=False)
        prepare(source)
    vlm = load(device=device, empty=True)
    prepare(vlm)
    root = shard_model(vlm.model, offload=offload, lazy=False, device=compute)

    def place(t: torch.Tensor) -> torch.Tensor:
        where = torch.device("cpu") if offload and isinstance(t, DTensor) else compute
        return torch.empty_like(t, device=where) if t.is_meta else t

    vlm.model._apply(place)
    whole = {} if source is None else dict(source.model.named_parameters())
    whole.update({} if source is None else dict(source.model.named_buffers()))
    named = [*vlm.model.named_parameters(), *vlm.model.named_buffers()]
    missing = [[n for n, _ in named if n not in whole][:3] if rank == 0 else []]
    torch.distributed.broadcast_object_list(missing, src=0)  # all ranks raise, none hangs
    if missing[0]:
        raise RuntimeError(f"rank 0's model lacks {missing[0]} of the sharded one")
    with torch.no_grad():
        for name, tensor in named:  # the same order on every rank: one broadcast each
            shape = tensor.shape
            full = (
                whole[name].to(compute).contiguous()
                if rank == 0
                else torch.empty(shape, dtype=tensor.dtype, device=compute)
            )
            torch.distributed.broadcast(full, src=0)
            if isinstance(tensor, DTensor):  # Shard(0): this rank's torch.chunk of dim 0
                chunks = full.chunk(world, dim=0)
                piece = chunks[rank] if rank < len(chunks) else full[:0]
                tensor.to_local().copy_(piece)
            else:
                tensor.copy_(full)
    del source, whole
    root._get_fsdp_state()._lazy_init()  # type: ignore[operator]
    return vlm


class _Root(torch.nn.Module):
    """The FSDP root: holds the policy module (a plain nn.Module, see the module docstring)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)


@contextlib.contextmanager
def gathered(module: torch.nn.Module) -> Iterator[None]:
    """Within the block, every layer of sharded `module` is whole on every rank: one all-gather
    per layer on entry (a collective), none in the forwards and backwards inside (no reshard,
    no gradient reduce-scatter), so ranks may run different numbers of them (`generate` then
    needs no `synced_gpus`). Costs one whole copy of the weights per rank meanwhile. Used for
    rollouts with `runtime.fsdp_rollout=gathered` and for mining, whose PGD backpropagates to
    the pixels only (parameter gradients made inside are not reduced: train outside)."""
    from torch.distributed.fsdp import FSDPModule

    root = getattr(module, SHARDED_ATTR)
    units = [m for m in root.modules() if isinstance(m, FSDPModule) and m is not root]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.set_reshard_after_backward(False, recurse=False)
        unit.set_requires_gradient_sync(False, recurse=False)
        unit.unshard()
    object.__setattr__(root, GATHERED_ATTR, True)
    try:
        yield
    finally:
        object.__setattr__(root, GATHERED_ATTR, False)
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)
            unit.set_reshard_after_backward(True, recurse=False)
            unit.set_requires_gradient_sync(True, recurse=False)


def _free_bytes(device: torch.device) -> int:
    """Memory a new allocation may take on `device`: free GPU memory plus what torch's
    caching allocator holds unused; on CPU the available physical memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        stats = torch.cuda.memory_stats(device)
        cached = stats.get("reserved_bytes.all.current", 0) - stats.get(
            "allocated_bytes.all.current", 0
        )
        return int(free + cached)
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def rollout_mode(module: torch.nn.Module, mode: str) -> str:
    """`runtime.fsdp_rollout` resolved for sharded `module`: "auto" is "gathered" when the
    whole layers (what `gathered` adds beside the shards), with room for the gradients and
    AdamW state, take at most half of every rank's free device memory (the rest is for the
    rollout's KV cache), else "layerwise". Gathered
    does strictly less work (one all-gather per layer per rollout instead of one per decode
    step), so it is the choice wherever it fits; layerwise always fits where training does.
    A collective under "auto" (every rank must take the same branch), decided once."""
    if mode != "auto":
        return mode
    from torch.distributed.tensor import DTensor

    root = getattr(module, SHARDED_ATTR)
    cached = getattr(root, _ROLLOUT_ATTR, None)
    if cached is not None:
        return str(cached)
    compute = next(p for p in module.parameters() if not isinstance(p, DTensor)).device

    def local(p: torch.Tensor) -> int:  # elements of `p` held on the compute device
        t = p.to_local() if isinstance(p, DTensor) else p
        return t.numel() if t.device == compute else 0

    params = list(module.parameters())
    # the whole layers minus the shards already there (none under offload), plus what training
    # will hold beside them if not yet allocated (the first rollout comes before the first
    # step): gradients and AdamW's two moments of the trainable part (counted even when
    # already there: conservative)
    extra = sum((p.numel() - local(p)) * p.element_size() for p in params if isinstance(p, DTensor))
    extra += sum(3 * local(p) * p.element_size() for p in params if p.requires_grad)
    fits = torch.tensor([float(extra <= 0.5 * _free_bytes(compute))], device=compute)
    torch.distributed.all_reduce(fits, op=torch.distributed.ReduceOp.MIN)
    chosen = "gathered" if float(fits) > 0 else "layerwise"
    object.__setattr__(root, _ROLLOUT_ATTR, chosen)
    if torch.distributed.get_rank() == 0:
        print(
            f"runtime.fsdp_rollout=auto: {chosen} (the whole layers, with room for the "
            f"gradients and optimizer state, need {extra / 2**30:.1f} GiB per process)",
            file=sys.stderr,
            flush=True,
        )
    return chosen


_ROLLOUT_ATTR = "_mbpo_rollout_mode"


def clip_grad_norm(params: Sequence[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm over sharded (DTensor) and replicated gradients together.

    torch's `clip_grad_norm_` cannot mix DTensor and plain gradients, and the replicated part
    here is one model (a layer's shards are disjoint pieces, the replicated gradients are the
    same on every rank): norm^2 = sum over ranks of the shards' local squares + the replicated
    squares counted once. Falls back to torch's function when nothing is sharded.
    """
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    if not any(isinstance(g, DTensor) for g in grads):
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    local = [g.to_local() for g in grads if isinstance(g, DTensor)]
    plain = [g for g in grads if not isinstance(g, DTensor)]
    device = local[0].device if local else plain[0].device
    sharded_sq = sum(
        (torch.linalg.vector_norm(g.float()) ** 2 for g in local),
        torch.zeros((), device=device, dtype=torch.float64),
    ).to(torch.float64)
    torch.distributed.all_reduce(sharded_sq)
    replicated_sq = sum((float(torch.linalg.vector_norm(g.float())) ** 2 for g in plain), 0.0)
    total = math.sqrt(float(sharded_sq) + replicated_sq)
    if math.isfinite(total):
        coef = min(1.0, max_norm / (total + 1e-6))
        if coef < 1.0:
            for g in local + plain:
                g.mul_(coef)
    return total


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of a sharded `module`, whole, on CPU, on rank 0 (an empty dict elsewhere).

    A collective: every rank must call it. The keys are `module.state_dict()`'s, so the dict
    goes to `save_pretrained(state_dict=...)` (model or peft adapter) unchanged."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state: dict[str, torch.Tensor] = dict(get_model_state_dict(module, options=options))  # type: ignore[arg-type]
    return state
