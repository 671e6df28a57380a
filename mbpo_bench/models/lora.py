"""LoRA through peft, on the language model only unless asked, and the reference policy.

Decisions:
- Targets are a regex, not a name list: a plain `["q_proj", ...]` also wraps the vision tower
  (CLIP has q_proj/k_proj/v_proj too). The regex matches the language model's attention and MLP
  projections under `language_model`; `include_vision=True` adds the vision blocks' linear layers
  (CLIP/SigLIP q/k/v/out_proj, fc1/fc2; Qwen qkv/proj, fc1/fc2 or gate/up/down_proj).
- The reference policy of method.md is the base model with the adapter disabled
  (`reference_policy`), so no second copy of the weights is kept.
- Everything mutates the adapter's `model` attribute in place (peft wraps the transformers model);
  the adapter's operations unwrap it, so LoRA layers are active unless disabled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError

if TYPE_CHECKING:
    import torch

    from mbpo_bench.models.protocol import VisionLanguageModel

LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VISION_PROJECTIONS = (
    "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2",
    "qkv", "proj", "gate_proj", "up_proj", "down_proj",
)  # fmt: skip


@dataclass
class LoraSettings:
    """peft LoRA hyper-parameters (defaults of ours; method.md does not pin them)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str = field(default=r".*language_model.*\.(" + "|".join(LM_PROJECTIONS) + r")$")
    include_vision: bool = False

    def target_regex(self) -> str:
        if not self.include_vision:
            return self.target_modules
        vision = (
            r".*(vision_tower|visual)\..*(layers|blocks)\.\d+\..*\.("
            + "|".join(VISION_PROJECTIONS)
            + r")$"
        )
        return f"(?:{self.target_modules})|(?:{vision})"


def is_peft(vlm: VisionLanguageModel) -> bool:
    return hasattr(vlm.model, "disable_adapter") and hasattr(vlm.model, "peft_config")


def apply_lora(vlm: VisionLanguageModel, settings: LoraSettings | None = None) -> None:
    """Wrap `vlm.model` with a fresh LoRA adapter; only adapter weights are trainable."""
    from peft import LoraConfig, get_peft_model

    if is_peft(vlm):
        raise UserError("the model already has a LoRA adapter — merge it first (merge_adapter)")
    s = settings or LoraSettings()
    config = LoraConfig(
        r=s.r,
        lora_alpha=s.alpha,
        lora_dropout=s.dropout,
        target_modules=s.target_regex(),
        bias="none",
    )
    vlm.model = get_peft_model(vlm.model, config)


def load_adapter(vlm: VisionLanguageModel, adapter: str | Path, *, trainable: bool = False) -> None:
    """Attach a saved peft adapter folder (evaluation: frozen; resume training: trainable)."""
    from peft import PeftModel

    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise UserError(
            f"adapter folder {folder} has no adapter_config.json — pass a folder written by "
            "save_adapter (a run's checkpoint)"
        )
    if is_peft(vlm):
        raise UserError("the model already has a LoRA adapter — merge it first (merge_adapter)")
    vlm.model = PeftModel.from_pretrained(vlm.model, folder, is_trainable=trainable)
    vlm.model.eval()


@contextlib.contextmanager
def reference_policy(vlm: VisionLanguageModel) -> Iterator[VisionLanguageModel]:
    """Within the block, `vlm` computes with the adapter disabled: the frozen starting policy."""
    if not is_peft(vlm):
        raise UserError(
            "reference_policy needs a LoRA adapter (apply_lora first); without one the policy is "
            "its own reference — keep a frozen copy for full fine-tuning"
        )
    with vlm.model.disable_adapter():
        yield vlm


def save_adapter(vlm: VisionLanguageModel, folder: str | Path) -> Path:
    """Write only the adapter weights (safetensors) and its config to `folder`."""
    if not is_peft(vlm):
        raise UserError("save_adapter needs a LoRA adapter — apply_lora first")
    out = Path(folder)
    vlm.model.save_pretrained(out, safe_serialization=True)
    return out


def merge_adapter(vlm: VisionLanguageModel) -> None:
    """Fold the adapter into the base weights; `vlm.model` becomes a plain transformers model."""
    if not is_peft(vlm):
        raise UserError("merge_adapter needs a LoRA adapter — apply_lora or load one first")
    vlm.model = vlm.model.merge_and_unload()


def trainable_parameters(vlm: VisionLanguageModel) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter for everything that requires grad (the optimizer's parameter set)."""
    model: Any = vlm.model
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
