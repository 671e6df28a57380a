"""Faster sampling for `generate` (GRPO rollouts): merged LoRA, static KV cache, shared prefill.

None of the options changes what is sampled, only how fast (greedy texts are identical to the
default path on the tiny models, tests check it); each is off by default.

- `merge_lora`: a decode step with an unmerged peft adapter runs ~4 extra kernels per wrapped
  linear (A, B, scale, add: ~900 launches a step at 7B) on top of the base matmul. Merging removes
  them. peft's `merge_adapter()` / `unmerge_adapter()` cannot be used: they compute W += dW and
  W -= dW in place in bf16, and each is rounded, so the "frozen" base (and with it the reference
  policy) drifts: one merge + unmerge of a random adapter changed 10-25% of the elements of
  each wrapped bf16 matrix (measured here on a random 1024^2 matrix and on the tiny LLaVA). Here the base weights are never written: each wrapped layer gets a NEW tensor
  round(W + s * B @ A) (summed in float32, rounded once), swapped in through `weight.data` for the
  block and swapped back in `finally`, with the adapter branches disabled (peft's public
  `disable_adapter()`). The originals come back bit for bit by construction. Cost: one transient
  copy of the wrapped weights (the language model's linears: ~13 GB at 7B in bf16) while sampling.
- `cache="static"`: transformers' StaticCache; on CUDA transformers then compiles the decode step
  itself (torch.compile, mode "reduce-overhead" = CUDA graphs) unless `compile=False`. The cache
  length is rounded up to a multiple of `STATIC_CACHE_BUCKET` (`max_cache_len`), so prompts of
  slightly different lengths reuse one compiled graph instead of recompiling each step.
  Open risk (not measured yet): CUDA graphs re-record when a static input moves: a fresh
  StaticCache per call (transformers' own behaviour) and, with `merge_lora`, fresh merged weights
  per rollout; torch allows 128 re-records per graph, then runs it without graphs. If a long run
  slows down after ~128 rollouts, keep both allocated across calls (memory: cache + weights).
- `shared_prefill`: `num_return_sequences` makes transformers expand the inputs BEFORE the prefill,
  so a prompt's vision tower and prompt tokens run G times. Here the prefill runs once per prompt
  on all tokens but the last (left padding puts every prompt's end in the last column; the last
  token is the chat template's generation prompt, never an image token: were it one, the vision
  features would not match the image tokens and transformers would raise), the cache is repeated G times
  (`DynamicCache.batch_repeat_interleave`) and `generate` continues from it with the whole prompt
  repeated G times (transformers' documented prefix-cache reuse: only the uncached last token is
  fed), without the vision inputs. The prefill takes generate's position ids (see `_prefill`).
  Qwen2-VL's multimodal RoPE offsets, which its prefill stores on `model.model.rope_deltas` (one
  row per prompt), are cleared before it and repeated G times after: the one piece of
  transformers state touched here, a tested assumption on 5.17 and 5.24. With the static cache
  the repeated keys/values are copied into a StaticCache through the public `Cache.update`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from mbpo_bench.errors import UserError

if TYPE_CHECKING:
    import torch

RolloutCache = Literal["dynamic", "static"]
STATIC_CACHE_BUCKET = 64  # static cache length: prompt + new tokens rounded up to this multiple
_STATIC_LENGTHS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
# inputs aligned with the prompt tokens (repeated per sample); any other input is a vision input
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


@dataclass(frozen=True)
class GenerationSpeed:
    """How `generate` runs; defaults are plain transformers `generate` with a DynamicCache."""

    merge_lora: bool = False
    cache: RolloutCache = "dynamic"
    compile: bool = True  # static cache only: let transformers compile the decode step (CUDA)
    shared_prefill: bool = False

    def __post_init__(self) -> None:
        if self.cache not in get_args(RolloutCache):
            raise UserError(
                f"rollout cache {self.cache!r} is unknown — use one of {get_args(RolloutCache)}"
            )

    def label(self) -> str:
        """Short name for reports, e.g. "merged+static" ("default" when nothing is on)."""
        parts = ["merged"] if self.merge_lora else []
        if self.cache == "static":
            parts.append("static" if self.compile else "static-eager")
        if self.shared_prefill:
            parts.append("shared")
        return "+".join(parts) or "default"


def parse_label(label: str) -> GenerationSpeed:
    """Inverse of `GenerationSpeed.label`: "merged+static+shared" -> its options."""
    known = {"merged", "static", "static-eager", "shared"}
    parts = [p.strip() for p in label.split("+") if p.strip() and p.strip() != "default"]
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise UserError(
            f"variant {label!r} has unknown part(s) {unknown} — combine {sorted(known)} with '+', "
            "or say 'default'"
        )
    static = "static" in parts or "static-eager" in parts
    return GenerationSpeed(
        merge_lora="merged" in parts,
        cache="static" if static else "dynamic",
        compile="static-eager" not in parts,
        shared_prefill="shared" in parts,
    )


# ---- merged LoRA ------------------------------------------------------------------------------
def _lora_layers(model: Any) -> list[Any]:
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for m in layers:
        special = any(m.use_dora.get(a) or m.lora_bias.get(a) for a in m.active_adapters)
        if not isinstance(m, LoraLinear) or special:
            raise UserError(
                f"merge_lora supports plain LoRA on linear layers, not {type(m).__name__} "
                "with DoRA / lora_bias, embeddings or convolutions — turn "
                "merge_lora_for_rollout off"
            )
        if m.merged:
            raise UserError("merge_lora needs an unmerged adapter — unmerge it first")
    return layers


def _merged_weight(layer: Any) -> torch.Tensor:
    """round(W + sum over active adapters of scale * B @ A), summed in float32."""
    import torch

    weight = layer.get_base_layer().weight
    total = weight.detach().to(torch.float32)
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        a = layer.lora_A[name].weight.detach().to(torch.float32)
        b = layer.lora_B[name].weight.detach().to(torch.float32)
        delta = (b @ a) * layer.scaling[name]
        total = total + (delta.T if layer.fan_in_fan_out else delta)
    return total.to(weight.dtype)


@contextlib.contextmanager
def merged_lora(model: Any) -> Iterator[None]:
    """Within the block the peft `model` computes with its adapters folded into the base weights;
    the base weight tensors are never written (see the module docstring). No-op without peft or
    with the adapters disabled (the reference policy)."""
    import torch

    if not (hasattr(model, "disable_adapter") and hasattr(model, "peft_config")):
        yield
        return
    layers = _lora_layers(model)
    if any(layer.disable_adapters for layer in layers):  # e.g. inside `reference_policy`
        yield  # the model computes the base weights alone: nothing to merge
        return
    originals: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for layer in layers:
                param = layer.get_base_layer().weight
                merged = _merged_weight(layer)
                originals.append((param, param.data))
                param.data = merged
        with model.disable_adapter():
            yield
    finally:
        for param, data in originals:
            param.data = data


# ---- static cache and shared prefill ----------------------------------------------------------
def cache_kwarg(hf_model: Any) -> str:
    """The KV cache argument's name: `cache` from transformers 5.24, `past_key_values` before."""
    params = inspect.signature(type(hf_model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def static_length(hf_model: Any, prompt_len: int, max_new_tokens: int) -> int:
    """Static cache length: prompt + new tokens rounded up to `STATIC_CACHE_BUCKET`, and never
    shorter than an earlier call's for this model (a new length recompiles the decode step)."""
    need = prompt_len + max_new_tokens
    length = max(
        -(-need // STATIC_CACHE_BUCKET) * STATIC_CACHE_BUCKET, _STATIC_LENGTHS.get(hf_model, 0)
    )
    _STATIC_LENGTHS[hf_model] = length
    return length


def apply_cache(hf_model: Any, cfg: Any, speed: GenerationSpeed, prompt_len: int) -> Any:
    """The generation config for `speed`'s cache (a copy; the input is not changed)."""
    cfg = copy.deepcopy(cfg)
    if speed.cache == "static":
        cfg.cache_implementation = "static"
        cfg.max_cache_len = static_length(hf_model, prompt_len, cfg.max_new_tokens)
        cfg.disable_compile = not speed.compile
    return cfg


def _prefill(hf_model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    """One forward over every prompt token but the last; returns the filled DynamicCache.

    Position ids as `generate` makes them: the attention mask's cumsum, so a left-padded row
    starts at 0 (a plain forward would use 0..L-1 and shift a padded row against its decode
    steps). Exception: with vision inputs a multimodal-RoPE model (`get_rope_index`: Qwen2-VL,
    Qwen2.5-VL) derives its 3D positions from the mask itself and stores the per-row offsets on
    `model.rope_deltas`, which is cleared first (a value left by an earlier batch would be used).
    """
    from transformers import DynamicCache

    base: Any = getattr(hf_model, "model", None)
    mrope = hasattr(base, "get_rope_index")
    if mrope:
        base.rope_deltas = None
    cache = DynamicCache(config=hf_model.config)
    head = {k: v[:, :-1] if k in TOKEN_KEYS else v for k, v in inputs.items()}
    if not (mrope and any(k not in TOKEN_KEYS for k in inputs)):
        mask = head["attention_mask"]
        head["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    hf_model(**head, **{cache_kwarg(hf_model): cache}, use_cache=True, logits_to_keep=1)
    return cache


def _repeat_rope_deltas(hf_model: Any, n: int) -> None:
    """Qwen's multimodal-RoPE offsets of the prefill, one row per prompt -> one per sample."""
    base: Any = getattr(hf_model, "model", None)
    deltas = getattr(base, "rope_deltas", None)
    if deltas is not None:
        base.rope_deltas = deltas.repeat_interleave(n, dim=0)


def _to_static(hf_model: Any, cache: Any, n: int, max_len: int) -> Any:
    """A StaticCache of `n` x the rows of the DynamicCache `cache`, holding the same keys/values."""
    from transformers import StaticCache

    static = StaticCache(config=hf_model.config, max_cache_len=max_len)
    for i, layer in enumerate(cache.layers):
        static.update(layer.keys.repeat_interleave(n, 0), layer.values.repeat_interleave(n, 0), i)
    return static


def shared_prefill_generate(
    hf_model: Any, inputs: dict[str, torch.Tensor], cfg: Any, n: int, speed: GenerationSpeed
) -> torch.Tensor:
    """`n` sequences per prompt (prompt order, like `num_return_sequences`) from one prefill per
    prompt; returns generate's output ids (prompt + new tokens, B * n rows)."""
    ids = inputs["input_ids"]
    cache = _prefill(hf_model, inputs)
    _repeat_rope_deltas(hf_model, n)
    cfg = copy.deepcopy(cfg)
    cfg.num_return_sequences = 1
    cfg.cache_implementation = None  # the cache is passed in
    if speed.cache == "static":
        length = static_length(hf_model, ids.shape[1], cfg.max_new_tokens)
        cache = _to_static(hf_model, cache, n, length)
        cfg.disable_compile = not speed.compile
    else:
        cache.batch_repeat_interleave(n)
    rows = {k: inputs[k].repeat_interleave(n, dim=0) for k in TOKEN_KEYS if k in inputs}
    out: torch.Tensor = hf_model.generate(
        **rows, **{cache_kwarg(hf_model): cache}, generation_config=cfg
    )
    return out


def run_generate(
    hf_model: Any,
    inputs: dict[str, torch.Tensor],
    cfg: Any,
    n: int,
    speed: GenerationSpeed,
    *,
    synced: bool = False,
) -> torch.Tensor:
    """transformers `generate` for one batch with `speed`'s cache and prefill options.

    `synced` (FSDP-sharded weights): a rank whose samples all ended keeps running forwards until
    every rank's have (transformers' `synced_gpus`), because each forward is a collective."""
    if speed.shared_prefill and n > 1:
        return shared_prefill_generate(hf_model, inputs, cfg, n, speed)
    cfg = apply_cache(hf_model, cfg, speed, inputs["input_ids"].shape[1])
    out: torch.Tensor = hf_model.generate(**inputs, generation_config=cfg, synced_gpus=synced)
    return out
