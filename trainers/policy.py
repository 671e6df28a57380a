"""The policy being trained and its reference: loading, LoRA or full fine-tuning, saving.

- LoRA (default): a fresh peft adapter on the language model; the reference policy is the same
  weights with the adapter disabled (no second copy). A starting checkpoint that is itself a
  LoRA run (`final/adapter`) is merged first, so "the reference is the starting checkpoint"
  holds for a chain SFT -> MBPO too.
- Full fine-tuning: every weight trainable; the reference, when a method needs one, is a frozen
  second copy loaded from the same folder.
- `--model` may name a checkpoint folder, a hub id, or a finished run folder of ours (its
  `final/info.json` says where the model and the adapter are).
- Final weights: `final/adapter/` (LoRA; optionally also `final/model/`, merged) or
  `final/model/` (full), plus `final/info.json`; `final/model` loads with `load_model` alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.models.loading import resolve_training_run
from mbpo_bench.models.lora import LoraSettings

if TYPE_CHECKING:
    import torch
    from mbpo_bench.trainers.loop import RuntimeConfig

    from mbpo_bench.models.protocol import VisionLanguageModel

INFO = "info.json"


# `--model` may name a training run folder: the loader's resolver is the one source of truth.
resolve_start = resolve_training_run


@dataclass
class Policy:
    vlm: VisionLanguageModel
    lora: bool
    base: str  # what --model resolved to (recorded in final/info.json)
    frozen_reference: VisionLanguageModel | None = None
    compile_layers: bool = False  # RuntimeConfig.compile_layers
    fsdp_rollout: str = "auto"  # RuntimeConfig.fsdp_rollout
    autocast: bool = False  # RuntimeConfig.autocast, resolved (`autocast_enabled`)

    @property
    def module(self) -> torch.nn.Module:
        module: torch.nn.Module = self.vlm.model
        return module

    @contextlib.contextmanager
    def reference(self) -> Iterator[VisionLanguageModel]:
        """The frozen starting policy: adapter disabled (LoRA) or the frozen copy (full)."""
        if self.lora:
            from mbpo_bench.models.lora import reference_policy

            with reference_policy(self.vlm) as ref:
                yield ref
        elif self.frozen_reference is not None:
            yield self.frozen_reference
        else:
            raise RuntimeError("this policy was loaded without a reference (need_reference=False)")

    @property
    def compile_vision(self) -> bool:
        """Whether `compiled()` also compiles LLaVA's vision tower: only when it trains (full
        fine-tuning). Under LoRA it runs frozen, a small share of a step (8 images per
        micro-batch), and its compiled graphs (two per layer: transformers' output-capturing
        hook breaks the graph, per grad mode) cost more first-step compile time than they save."""
        return not self.lora

    @contextlib.contextmanager
    def compiled(self) -> Iterator[None]:
        """Around full-sequence forward/backward passes (never rollouts): the policy's (and a
        frozen reference's) decoder layers torch.compile'd when `compile_layers` is set."""
        from mbpo_bench.models.compile import compiled_layers

        with contextlib.ExitStack() as stack:
            for vlm in (self.vlm, self.frozen_reference):
                if vlm is not None:
                    stack.enter_context(compiled_layers(
                        vlm, enabled=self.compile_layers, vision=self.compile_vision
                    ))  # fmt: skip
            if self.compile_layers:
                stack.enter_context(_embeddings_require_grad(self.vlm))
            yield

    @contextlib.contextmanager
    def mixed_precision(self) -> Iterator[None]:
        """Around the trained passes (reference and policy log-probs, backward): torch.autocast
        in bfloat16 when `autocast` is set, as TRL's GRPOTrainer runs them with
        `bf16=True`. Why: peft keeps the LoRA weights in fp32 on a bf16 base, so without it
        every adapter matmul runs in fp32 (TF32 at best). Both passes, so the k3 KL compares
        log-probs computed the same way; rollouts stay outside (merged sampling is bf16 anyway)."""
        if not self.autocast:
            yield
            return
        import torch

        with torch.autocast(self.vlm.device.type, dtype=torch.bfloat16):
            yield

    @contextlib.contextmanager
    def whole(self, vlm: VisionLanguageModel) -> Iterator[None]:
        """Around mining (IIG, PGD, rejected answers) with `vlm` (the policy or its reference):
        under FSDP its weights gathered whole for the block (`sharding.gathered`), since mining
        gives the ranks different numbers of forwards; otherwise nothing."""
        from mbpo_bench.models.common import is_sharded

        if not is_sharded(vlm.model):
            yield
            return
        from mbpo_bench.trainers.sharding import gathered

        with gathered(vlm.model):
            yield

    @contextlib.contextmanager
    def sampling(self) -> Iterator[None]:
        """Around rollout generation: under FSDP with `fsdp_rollout=gathered` (or `auto`
        where the whole weights fit), the weights gathered whole for the block
        (`sharding.gathered`); otherwise nothing."""
        from mbpo_bench.models.common import is_sharded

        if not is_sharded(self.module):
            yield
            return
        from mbpo_bench.trainers.sharding import gathered, rollout_mode

        if rollout_mode(self.module, self.fsdp_rollout) != "gathered":
            yield
            return

        with gathered(self.module):
            yield

    def train_mode(self, on: bool) -> None:
        self.vlm.model.train(on)

    def save_final(self, folder: Path | None, *, merged: bool = False) -> None:
        """Write the trained weights into `folder` (see the module docstring for the layout).

        Sharded (runtime.strategy=fsdp): the whole weights are gathered onto rank 0 first, a
        collective every rank joins; rank 0 passes the folder, the others None."""
        from mbpo_bench.models.common import is_sharded

        if is_sharded(self.module):
            self._save_sharded(folder)
            return
        assert folder is not None
        info: dict[str, Any] = {"base": self.base, "adapter": None, "model": None}
        if self.lora:
            from mbpo_bench.models.lora import save_adapter

            save_adapter(self.vlm, folder / "adapter")
            info["adapter"] = "adapter"
            if merged:
                _save_merged(self.vlm, folder / "model")
                info["model"] = "model"
        else:
            _save_model(self.vlm.model, self.vlm, folder / "model")
            info["model"] = "model"
        (folder / INFO).write_text(json.dumps(info, indent=2) + "\n")

    def _save_sharded(self, folder: Path | None) -> None:
        """The same layout from a sharded policy: `save_pretrained(state_dict=whole weights)`
        (peft keeps the adapter's entries of it), so `final/` loads exactly as unsharded."""
        from mbpo_bench.trainers.sharding import full_state_dict

        from mbpo_bench.models.common import unwrap

        state = full_state_dict(self.module)
        if folder is None:
            return
        info: dict[str, Any] = {"base": self.base, "adapter": None, "model": None}
        if self.lora:
            self.vlm.model.save_pretrained(
                folder / "adapter", state_dict=state, safe_serialization=True
            )
            info["adapter"] = "adapter"
        else:
            unwrap(self.module).save_pretrained(
                folder / "model", state_dict=state, safe_serialization=True
            )
            self.vlm.processor.save_pretrained(folder / "model")
            self.vlm.tokenizer.save_pretrained(folder / "model")
            info["model"] = "model"
        (folder / INFO).write_text(json.dumps(info, indent=2) + "\n")


@contextlib.contextmanager
def _embeddings_require_grad(vlm: VisionLanguageModel) -> Iterator[None]:
    """While active, the input embeddings' output requires grad when grad is enabled.

    Why: under LoRA the embeddings are frozen, so the first decoder layer's input does not
    require grad and the rest's do; dynamo guards on that, so the first layer of every
    training pass compiled a graph of its own (forward + backward: a second compile of the
    same layer in step 0, cold or warm cache). With it every layer shares one training graph;
    the cost is the first layer's input gradient in the backward (~1/3 of one layer's
    backward), and the LoRA gradients are the same values. A no-op where the embeddings train
    (their output already requires grad) and under no_grad (the reference passes)."""
    import torch

    from mbpo_bench.models.common import unwrap

    def hook(_module: Any, _inputs: Any, out: torch.Tensor) -> None:
        if torch.is_grad_enabled() and not out.requires_grad:
            out.requires_grad_(True)

    handle = unwrap(vlm.model).get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _save_model(model: Any, vlm: VisionLanguageModel, folder: Path) -> None:
    from mbpo_bench.models.common import unwrap

    unwrap(model).save_pretrained(folder, safe_serialization=True)
    vlm.processor.save_pretrained(folder)
    vlm.tokenizer.save_pretrained(folder)


def _save_merged(vlm: VisionLanguageModel, folder: Path) -> None:
    import copy

    merged = copy.deepcopy(vlm.model).merge_and_unload()
    _save_model(merged, vlm, folder)


def _enable_checkpointing(vlm: VisionLanguageModel) -> None:
    from mbpo_bench.models.common import unwrap

    unwrap(vlm.model).gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False}
    )


def autocast_enabled(setting: bool | str, device: str, dtype: str, strategy: str = "ddp") -> bool:
    """RuntimeConfig.autocast resolved for a run on `device` with model dtype `dtype`.

    "auto": on for a bfloat16 model on CUDA (TRL's `bf16=True`), off on CPU, for fp32 / fp16
    models (fp16 would need a gradient scaler) and under FSDP (its own precision, issue 21);
    so CPU results stay what they were. True: wherever the model is bfloat16, CPU included."""
    from mbpo_bench.errors import UserError

    if setting is False:
        return False
    if setting is True:
        if dtype != "bfloat16":
            raise UserError(
                f"runtime.autocast=true needs a bfloat16 model, this run's is {dtype} — set "
                "runtime.dtype=bfloat16, or runtime.autocast=auto"
            )
        return True
    return dtype == "bfloat16" and device.startswith("cuda") and strategy != "fsdp"


def load_policy(
    model: str,
    *,
    lora: LoraSettings,
    full_finetune: bool,
    runtime: RuntimeConfig,
    need_reference: bool,
    trust_remote_code: bool = False,
) -> Policy:
    """Load the starting checkpoint as a trainable policy (and its reference when needed)."""
    from mbpo_bench.models import load_model
    from mbpo_bench.models.loading import resolve_device, resolve_dtype
    from mbpo_bench.models.lora import apply_lora, merge_adapter

    path, adapter = resolve_start(model)
    # the run's dtype, also for rank 0's CPU copy under FSDP (auto: bf16 for a GPU run)
    device = resolve_device(runtime.device)
    dtype = str(resolve_dtype(runtime.dtype, device)).split(".")[-1]
    autocast = autocast_enabled(runtime.autocast, str(device), dtype, runtime.strategy)

    def load(device: str = runtime.device, empty: bool = False) -> VisionLanguageModel:
        vlm = load_model(
            path,
            adapter=adapter,
            dtype=dtype,
            device=device,
            protocol=runtime.protocol,
            min_pixels=runtime.min_pixels,
            max_pixels=runtime.max_pixels,
            trust_remote_code=trust_remote_code,
            empty=empty,
        )
        if adapter is not None and not empty:  # merged: the structure of the plain model
            merge_adapter(vlm)
        return vlm

    def trainable(vlm: VisionLanguageModel) -> None:
        if full_finetune:
            vlm.model.requires_grad_(True)
        else:
            apply_lora(vlm, lora)
        if runtime.gradient_checkpointing:
            _enable_checkpointing(vlm)

    frozen = None
    if runtime.strategy == "fsdp":  # rank 0 loads, the others receive their shards
        from mbpo_bench.trainers.sharding import load_sharded

        def shard(prepare: Any) -> VisionLanguageModel:
            return load_sharded(load, prepare, runtime.device, offload=runtime.fsdp_offload)  # type: ignore[no-any-return]

        vlm = shard(trainable)
        if full_finetune and need_reference:
            frozen = shard(lambda each: None)
    else:
        vlm = load()
        if full_finetune and need_reference:
            frozen = load()
        trainable(vlm)
    return Policy(
        vlm=vlm, lora=not full_finetune, base=path, frozen_reference=frozen,
        compile_layers=runtime.compile_layers, fsdp_rollout=runtime.fsdp_rollout,
        autocast=autocast,
    )  # fmt: skip
