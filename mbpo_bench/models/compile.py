"""Regional compilation: torch.compile'd decoder layers for full-sequence forward(+backward) passes.

Why: between the GEMMs of a 7B step sits memory-bound glue that eager PyTorch runs as separate
kernels (fp32 RMSNorm, rotary, SiLU * up, residual adds, and peft LoRA's cast / scale / add on
every linear). Inductor fuses it. The H200 numbers that motivated this are in issue 8 and, once
measured, in reports/perf/h200.

Why regional (each decoder layer) and not the whole model: the 32 layers of a 7B LM are one class
with one forward, so dynamo traces and inductor compiles that forward once and every layer reuses
the graph (parameters are graph inputs, `inline_inbuilt_nn_modules`); a whole-model compile
traces all 32 unrolled (minutes) and breaks on the vision / image-merge code (data-dependent
scatter of image features into the text sequence). `vision=True` also compiles LLaVA's vision
tower encoder layers (CLIP / SigLIP `encoder.layers`): the same mechanism, and close-ended eval
at batch 128 runs CLIP-L on 128 images per prefill. Qwen2-VL's `visual.blocks` (`qwen_vision=True`,
evaluation): transformers' attention splits the packed images with `cu_seqlens.tolist()`, a
data-dependent graph break in every block; when all images of a call have one size the blocks
compile whole, their attention one batched call over the equal segments (`qwen_vision.py`,
exact), otherwise they run eager with each block's MLP compiled.

Why not during generation: `generate` decodes one token per call with a KV cache, a different
shape regime with its own compile path (static cache + CUDA graphs, `rollout_speed.py`). A layer
called with a KV cache (`cache` in transformers 5.24, `past_key_values` in 5.17) therefore runs
its plain eager forward even inside the context. Training enters the context only around
scoring passes (`use_cache=False`); evaluation's `generate` runs inside it too, for the vision
tower (no KV cache there: it compiles), while its LM layers, given the cache, stay eager. Tried
and rejected: compiling the LM layers with generate's DynamicCache too (transformers 5.24,
backend eager): dynamo guards on each layer's `layer_idx` and on the cache layer's
`is_initialized`, so every decoder layer gets its own prefill and decode graphs (2 x 32 at 7B,
past the recompile limit) and the batch size specialises.

Decisions:
- The compiled function is bound as the layer's instance-level `forward`, not swapped into the
  ModuleList: the module tree is untouched, so parameter names, state_dict keys and the
  optimizer's parameter references are the same inside and outside the context. Module hooks
  run eagerly around the compiled forward; that matters, because transformers 5.24 collects
  hidden states (LLaVA's vision feature layer) with forward hooks on these layers.
- One compiled callable per (layer class, backend) per process, `dynamic=True` (batch and
  sequence length vary), created on first use and reused: re-entering the context, another
  model of the same class, or the LoRA reference (adapter disabled) never rebuilds it; a new
  state (grad on/off, train/eval, adapter on/off, padding mask or none) adds one cached graph.
- Dynamo caches graphs per code object with a default limit of 8 before it silently falls back
  to eager. In transformers 5.24 every layer class's `forward` is the same checkpointing wrapper
  (one code object for LM and vision layers), and the states above multiply, so the limit is
  raised to `RECOMPILE_LIMIT` while the context is active (it only matters at compile time).
- Python floats are specialised (`specialize_float`) while the context is active. With
  `dynamic=True` dynamo first traces the layer's floats (RMSNorm eps, LoRA scaling, attention
  scale) as symbols, AOTAutograd traces the whole joint forward+backward graph, and then
  `_tensorify_python_scalars` gives up on one of them and dynamo restarts the frame with it
  specialised: a second full trace of the training graph in every process, the one
  AOTAutograd cache miss of a warm run. These floats are the same in every layer of a class,
  so constants cost no recompiles (measured, tiny LLaVA + LoRA on CPU, inductor: first
  compiled forward+backward 48.1 -> 37.0 s cold, 6.5 -> 4.0 s on a warm cache; same log-probs).
- Entering the context for a model whose layers are already compiled (nested use) is a no-op
  for those layers; the outer context restores them.
- Known graph break: on torch 2.11 (the GPU image) dynamo cannot trace `ContextVar.get` in the
  output-capturing hook transformers 5.17 puts on CLIP's attention, so each CLIP layer is two
  graphs. Measured on the H200 (LLaVA-7B shape), removing those hooks changed neither the
  update nor the prefill throughput, so they are left alone. torch 2.15 traces it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError

if TYPE_CHECKING:
    import torch

    from mbpo_bench.models.protocol import VisionLanguageModel

RECOMPILE_LIMIT = 64
# the KV-cache argument of a decoder layer across transformers versions (5.24, 5.17, older)
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")
_MARK = "_mbpo_compiled_layer"


def _language_model(inner: Any) -> Any:
    lm = getattr(inner, "language_model", None)
    if lm is None and hasattr(inner, "get_decoder"):
        lm = inner.get_decoder()
    return lm


def _vision_tower(inner: Any) -> Any:
    """LLaVA's CLIP / SigLIP tower; None for Qwen2-VL (`visual`, see the module docstring)."""
    return getattr(inner, "vision_tower", None)


def _layer_list(root: Any, what: str) -> torch.nn.ModuleList:
    """The longest ModuleList under `root` whose entries are all of one class."""
    import torch

    lists = [
        m
        for m in root.modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) and len({type(x) for x in m}) == 1
    ]
    if not lists:
        raise UserError(
            f"no {what} layers found in {type(root).__name__} — compiled layers support LLaVA "
            "and Qwen2-VL models; run without compilation"
        )
    return max(lists, key=len)


def _qwen_vision_mlps(inner: Any) -> list[torch.nn.Module]:
    """The MLP of every Qwen2-VL / Qwen2.5-VL vision block (empty for other towers)."""
    blocks = getattr(getattr(inner, "visual", None), "blocks", None)
    return [b.mlp for b in blocks] if blocks is not None else []


def decoder_layers(model: Any, *, vision: bool = True, qwen_vision: bool = False) -> list[Any]:
    """The language model's decoder layers (and, with `vision`, LLaVA's vision encoder layers;
    with `qwen_vision`, the MLPs of Qwen's vision blocks).

    `model` is the transformers model, possibly under a peft wrapper (`VisionLanguageModel.model`).
    The MLPs compile on their own for calls whose images differ in size: transformers' attention
    splits the packed images with `cu_seqlens.tolist()` (a data-dependent graph break, and the
    image lengths it returns would specialise the graph after it per batch composition), so
    those blocks run eager around the compiled MLP. Calls whose images share one size compile
    the blocks whole (`compiled_layers`, `qwen_vision.py`). Evaluation asks for it; training
    does not (its compile plan and recompile count are measured without it).
    """
    from mbpo_bench.models.common import unwrap

    hf = unwrap(model)
    inner = getattr(hf, "model", hf)
    lm = _language_model(inner)
    if lm is None:
        raise UserError(
            f"{type(hf).__name__} has no language model to compile — compiled layers support "
            "LLaVA and Qwen2-VL models; run without compilation"
        )
    out: list[Any] = [_layer_list(lm, "decoder")]  # ModuleLists (and a list of MLPs)
    tower = _vision_tower(inner) if vision else None
    if tower is not None:
        out.append(_layer_list(tower, "vision encoder"))
    mlps = _qwen_vision_mlps(inner) if vision and qwen_vision else []
    if mlps:
        out.append(mlps)
    return out


_COMPILED: dict[tuple[type, str], Callable[..., Any]] = {}


def _compiled_forward(cls: type[torch.nn.Module], backend: str) -> Callable[..., Any]:
    """torch.compile of the class's forward, made once per (class, backend) in this process."""
    import torch

    key = (cls, backend)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(cls.forward, dynamic=True, backend=backend)
    return _COMPILED[key]


def _cached(kwargs: dict[str, Any]) -> bool:
    return any(kwargs.get(k) is not None for k in CACHE_KWARGS)


def _bind(
    layer: torch.nn.Module, backend: str, eager_when: Callable[[dict[str, Any]], bool] = _cached
) -> Callable[..., Any]:
    """The layer's forward through the compiled function; eager when `eager_when(kwargs)` (by
    default: given a KV cache) or when dynamo is already tracing the caller (a compiled Qwen
    vision block inlines its MLP's plain forward instead of nesting a compiled function)."""
    import torch

    eager = type(layer).forward
    compiled = _compiled_forward(type(layer), backend)

    def forward(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling() or eager_when(kwargs):
            return eager(layer, *args, **kwargs)
        return compiled(layer, *args, **kwargs)

    setattr(forward, _MARK, True)
    return forward


def _install(
    layer: torch.nn.Module, backend: str, forward: Callable[..., Any] | None = None
) -> bool:
    """Bind the compiled forward (or `forward`, marked as ours); False when this layer already
    has ours (nested use)."""
    own = vars(layer).get("forward")
    if own is not None:
        if getattr(own, _MARK, False):
            return False
        raise UserError(
            f"{type(layer).__name__} already has its own forward (accelerate hooks from a "
            "device_map or offloading?) — load the model on one device, or run without "
            "compilation"
        )
    if forward is None:
        forward = _bind(layer, backend)
    else:
        setattr(forward, _MARK, True)
    layer.forward = forward  # type: ignore[method-assign]
    return True


def _qwen_vision_forwards(
    model: Any, backend: str
) -> list[tuple[torch.nn.Module, Callable[..., Any]]]:
    """(module, forward) to bind for Qwen's vision tower compiled whole (`qwen_vision.py`): the
    tower marks a uniform segment length per call, each whole-image attention reads it, and a
    block whose attention is marked runs compiled, else eager (its MLP compiled on its own)."""
    from mbpo_bench.models import qwen_vision as qv
    from mbpo_bench.models.common import unwrap

    hf = unwrap(model)
    vision = qv.find(getattr(hf, "model", hf))
    if vision is None:
        return []
    out: list[tuple[torch.nn.Module, Callable[..., Any]]] = [
        (vision.tower, qv.marking_tower(vision))
    ]
    out += [(attn, qv.batched_attention(attn)) for attn in vision.full]
    for block in vision.blocks:
        out.append((block, _bind(block, backend, functools.partial(_unbatched, block))))
    return out


def _unbatched(block: Any, kwargs: dict[str, Any]) -> bool:
    """A Qwen vision block runs eager unless its attention is batched in this call."""
    from mbpo_bench.models.qwen_vision import batched

    return not batched(block)


CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def default_compile_cache() -> Path:
    """$XDG_CACHE_HOME/mbpo-bench/torch-compile (~/.cache/... without XDG_CACHE_HOME)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mbpo-bench" / "torch-compile"


def use_compile_cache(setting: str) -> Path | None:
    """Point torch's compile caches at a folder that outlives the process (runtime.compile_cache).

    Why: the first compiled step of a 7B run spends minutes in inductor (code generation, Triton
    kernel builds, autotuning); inductor's FX graph cache, the AOTAutograd cache and Triton's
    kernel cache keep those results on disk under TORCHINDUCTOR_CACHE_DIR, so a later process
    with the same shapes and versions loads them and only re-traces with dynamo. torch's own
    default folder is /tmp/torchinductor_<user>, which a reboot or a fresh container loses.

    `setting`: "auto" = $TORCHINDUCTOR_CACHE_DIR when the user set it, else
    `default_compile_cache()`; "off" = torch's defaults untouched; anything else is the folder.
    Must run before the first compilation (inductor reads the variable when it first needs the
    folder). Returns the folder in use (None for "off")."""
    import os

    if setting == "off":
        return None
    folder = Path(setting).expanduser()
    if setting == "auto":  # inductor creates it when it first writes
        folder = Path(os.environ.get(CACHE_ENV) or default_compile_cache())
    try:
        if setting != "auto":
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"runtime.compile_cache folder {folder} cannot be created ({exc.strerror}) — "
            "give a writable folder, or runtime.compile_cache=off"
        ) from exc
    os.environ[CACHE_ENV] = str(folder)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return folder


def _dynamo_settings() -> Any:
    """The recompile limit raised and Python floats specialised (module docstring)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    return cfg.patch(**{name: max(RECOMPILE_LIMIT, getattr(cfg, name)), "specialize_float": True})


@contextlib.contextmanager
def compiled_layers(
    vlm: VisionLanguageModel,
    *,
    enabled: bool = True,
    backend: str = "inductor",
    vision: bool = True,
    qwen_vision: bool = False,
) -> Iterator[None]:
    """While active, `vlm`'s decoder layers (and LLaVA's vision encoder layers when `vision`)
    run through torch.compile (`backend`; "eager" traces with dynamo but skips inductor, for tests).
    `qwen_vision` (with `vision`): Qwen's vision blocks too, whole when a call's images share one
    size (batched attention, `qwen_vision.py`), else their MLPs only.

    Use it around full-sequence scoring passes (answer log-probs, choice prefill) and their
    backward; around `generate` only the vision layers compile (LM layers given a KV cache run
    eager). The original forwards are restored on exit, also when the block raises.
    `enabled=False` is a no-op.
    """
    if not enabled:
        yield
        return
    from mbpo_bench.models.qwen_vision import ATTRIBUTES

    groups = decoder_layers(vlm.model, vision=vision, qwen_vision=qwen_vision)
    layers = [layer for group in groups for layer in group]
    extra = _qwen_vision_forwards(vlm.model, backend) if vision and qwen_vision else []
    installed: list[torch.nn.Module] = []
    try:
        for layer in layers:
            if _install(layer, backend):
                installed.append(layer)
        for module, forward in extra:
            if _install(module, backend, forward):
                installed.append(module)
        for module, forward in extra:  # attention modules: no segment marks between calls
            if getattr(forward, "reads_segment", False):
                for name in ATTRIBUTES:
                    vars(module).setdefault(name, None)
        with _dynamo_settings():
            yield
    finally:
        for layer in installed:
            del layer.forward
            for name in ATTRIBUTES:
                vars(layer).pop(name, None)
