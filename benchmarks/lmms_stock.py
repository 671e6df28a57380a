"""lmms-eval's stock `llava_hf` / `qwen2_vl` wrappers on bench_eval_gpu's items, as a user runs them.

The peer rows of bench_eval_gpu.py: the benchmark's random-weight model (planted answer head
included) is saved to a folder (safetensors, with its processor and tokenizer), the stock wrapper
loads it from there with `pretrained=<folder>` and its defaults (batch size 1, its own dtype
"auto", its own prompt building and generation arguments), and its `generate_until` runs on
lmms-eval `Instance`s built from the same questions and images.

Decisions, each so that the wrapper sees token-for-token the prompts our path sees:
- llava_hf: its default `device_map=""` is refused by transformers 5 `from_pretrained`, so
  `device_map=<device>` is passed (as benchmarks/bench_eval.py does); nothing else.
- qwen2_vl: the wrapper always sends the system turn "You are a helpful assistant.", which the
  real Qwen2-VL chat template also inserts when a conversation has none; the benchmark's Qwen
  template does the same (`with_default_system`), so both sides render the same text.
- qwen2_vl: the wrapper re-encodes every PIL image as a JPEG data URL (quality 85) and decodes
  it with qwen_vl_utils. JPEG is lossy, so the compared items' images are replaced by a JPEG
  fixpoint (encode/decode with the wrapper's own functions until the pixels stop changing,
  about 15 rounds); both sides then see the same pixels. Image sides must be multiples of 28
  (qwen_vl_utils' resize factor) so its resize is a no-op.
- The saved generation config sets `min_new_tokens` = the benchmark's new tokens, as our path
  passes it: both generate exactly that many tokens (the planted head never picks EOS anyway).
- Both wrappers import `decord` at module level (video only). If it cannot be imported, a
  stub module that raises on use is installed and `ensure_decord` says so for the report.
- `generate_until` is called on Instances directly, not through `simple_evaluate`, so the
  filelock-4 break that mbpo_bench.evaluation.lmms_compat works around is never reached (checked
  with filelock 4.3), and no task YAML or dataset is involved.
lmms_eval is imported only here, lazily: the GPU image has it only when its wheels travel
(benchmarks/gpu_wheels_lmms.txt).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mbpo_bench.models import Prompt
from mbpo_bench.runs import package_versions

WRAPPERS = {
    "llava": ("lmms_eval.models.simple.llava_hf", "LlavaHf", "llava_hf"),
    "qwen2_vl": ("lmms_eval.models.simple.qwen2_vl", "Qwen2_VL", "qwen2_vl"),
}
QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."  # Qwen2-VL's template default
MAX_JPEG_ROUNDS = 60
TASK, SPLIT = "bench", "test"


def wrapper_name(family: str) -> str:
    return WRAPPERS[family][2]


def versions() -> str:
    found = package_versions(("lmms_eval", "qwen-vl-utils", "decord", "accelerate"))
    return ", ".join(f"{n} {v or '(not installed)'}" for n, v in found.items())


def ensure_decord() -> str:
    """Import decord, or install a stub that raises on use; say which for the report."""
    try:
        import decord  # noqa: F401
    except Exception as exc:  # a missing wheel or a broken shared library
        stub = types.ModuleType("decord")

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("decord is a stub here (video decoding unavailable)")

        stub.VideoReader = unavailable  # type: ignore[attr-defined]
        stub.cpu = unavailable  # type: ignore[attr-defined]
        sys.modules["decord"] = stub
        return (f"STUB: `import decord` failed ({type(exc).__name__}: {exc}); the wrappers "
                "import it at module level but use it only for video, never for these items")  # fmt: skip
    return "real decord (imported by the wrappers at module level, used only for video)"


def wrapper_class(family: str) -> Any:
    """The stock wrapper class (imports lmms_eval; raises ImportError if it is missing)."""
    if family not in WRAPPERS:
        raise ValueError(f"no stock lmms-eval wrapper for family '{family}'")
    module, cls, _ = WRAPPERS[family]
    return getattr(importlib.import_module(module), cls)


def wrapper_default(family: str, arg: str) -> Any:
    return inspect.signature(wrapper_class(family).__init__).parameters[arg].default


def with_default_system(template: str, system: str = QWEN_DEFAULT_SYSTEM) -> str:
    """A ChatML template that opens with a system turn `system` when the conversation has none."""
    turn = f"<|im_start|>system\\n{system}<|im_end|>\\n"
    return ("{%- if messages[0]['role'] != 'system' -%}{{ '" + turn + "' }}{%- endif -%}"
            + template)  # fmt: skip


def jpeg_fixpoint(image: Image.Image) -> tuple[Image.Image, int | None]:
    """(image the qwen2_vl wrapper sees unchanged, rounds taken; None: no fixpoint found)."""
    import numpy as np
    from qwen_vl_utils import fetch_image

    cls = wrapper_class("qwen2_vl")
    lo, hi = wrapper_default("qwen2_vl", "min_pixels"), wrapper_default("qwen2_vl", "max_pixels")
    current = image.convert("RGB")
    for rounds in range(MAX_JPEG_ROUNDS):
        url = cls._encode_image_data_url(None, current)  # the wrapper's own encoder (no state)
        seen = fetch_image({"type": "image", "image": url, "min_pixels": lo, "max_pixels": hi})
        if seen.size == current.size and np.array_equal(np.asarray(seen), np.asarray(current)):
            return current, rounds
        current = seen
    return current, None


def untie_for_saving(hf: Any) -> None:
    """The planted head differs from the embeddings: save and load it as its own tensor."""
    for cfg in (hf.config, hf.config.get_text_config()):
        if getattr(cfg, "tie_word_embeddings", False):
            cfg.tie_word_embeddings = False


def stock_processor(vlm: Any) -> Any:
    """A processor AutoProcessor can load: Qwen's image-only stand-in becomes the real class."""
    proc = vlm.processor
    if vlm.family != "qwen2_vl" or type(proc).__name__ == "Qwen2VLProcessor":
        return proc
    import transformers as tf

    improc = proc.image_processor
    video = tf.Qwen2VLVideoProcessor(patch_size=improc.patch_size, merge_size=improc.merge_size)
    return tf.Qwen2VLProcessor(
        image_processor=improc, tokenizer=vlm.tokenizer, video_processor=video,
        chat_template=proc.chat_template,
    )  # fmt: skip


def save_checkpoint(vlm: Any, folder: Path, new_tokens: int) -> float:
    """Save model (safetensors), processor and tokenizer to `folder`; return seconds taken."""
    start = time.perf_counter()
    hf = vlm.hf_model
    untie_for_saving(hf)
    hf.generation_config.min_new_tokens = new_tokens
    hf.save_pretrained(folder)
    stock_processor(vlm).save_pretrained(folder)
    vlm.tokenizer.save_pretrained(folder)
    return time.perf_counter() - start


def model_args(family: str, device: str) -> dict[str, str]:
    """Arguments given to the wrapper beyond `pretrained`; everything else stays default."""
    if family == "llava":  # default device_map "" is refused by transformers 5
        return {"device": device, "device_map": device}
    if device == wrapper_default(family, "device"):
        return {}
    return {"device": device, "device_map": device}


def load_wrapper(family: str, folder: Path, device: str) -> tuple[Any, str, float]:
    """(wrapper instance, its model_args string, load seconds)."""
    extra = model_args(family, device)
    args = ",".join([f"pretrained={folder}", *(f"{k}={v}" for k, v in extra.items())])
    start = time.perf_counter()
    lm = wrapper_class(family)(pretrained=str(folder), **extra)
    return lm, args, time.perf_counter() - start


def head_rows(hf: Any, ids: Sequence[int]) -> torch.Tensor:
    return hf.lm_head.weight[list(ids)].detach().float().cpu()


def generation_kwargs(new_tokens: int) -> dict[str, Any]:
    """lmms-eval POPE's generation_kwargs, with max_new_tokens set to the benchmark's."""
    return {"max_new_tokens": new_tokens, "temperature": 0, "top_p": 1.0, "num_beams": 1,
            "do_sample": False}  # fmt: skip


def instances(
    lm: Any, texts: Sequence[str], images: Sequence[Image.Image | None], new_tokens: int
) -> list[Any]:
    """One `generate_until` Instance per item (doc i = item i), docs registered on `lm`."""
    from lmms_eval.api.instance import Instance

    lm.task_dict = {TASK: {SPLIT: {i: {"image": img} for i, img in enumerate(images)}}}

    def visual(doc: dict[str, Any]) -> list[Image.Image | None]:
        return [doc["image"]]

    out = []
    for i, text in enumerate(texts):
        args = (text, generation_kwargs(new_tokens), visual, i, TASK, SPLIT)
        out.append(Instance("generate_until", args, 0, {"task": TASK, "doc_id": i, "repeats": 1}))
    return out


def generate(lm: Any, reqs: list[Any]) -> list[str]:
    return [str(getattr(r, "text", r)) for r in lm.generate_until(reqs)]


def spy_inputs(lm: Any, reqs: list[Any]) -> dict[str, torch.Tensor]:
    """Run `generate_until(reqs)`, keeping the tensors the wrapper hands to the first generate."""
    model = lm.model
    inner = model.generate
    seen: dict[str, torch.Tensor] = {}

    def spy(*args: Any, **kwargs: Any) -> Any:
        if not seen:
            seen.update({k: v.detach().cpu() for k, v in kwargs.items() if torch.is_tensor(v)})
        return inner(*args, **kwargs)

    model.generate = spy
    try:
        lm.generate_until(reqs)
    finally:
        del model.generate
    return seen


def input_check(seen: dict[str, torch.Tensor], ids: list[int], pixels: torch.Tensor) -> str:
    """Compare the wrapper's first generate inputs with ours for the same item."""
    if "input_ids" not in seen or "pixel_values" not in seen:
        return f"the wrapper's generate inputs were not seen (got {sorted(seen)})"
    theirs = seen["input_ids"][0].tolist()
    same = theirs == ids
    got = seen["pixel_values"].float()
    if got.shape != pixels.shape:
        diff = f"shape {tuple(got.shape)} vs ours {tuple(pixels.shape)}"
    else:
        diff = f"max |diff| {float((got - pixels).abs().max()):.3g}"
    return (f"first item as the wrapper passes it to generate: input ids identical to ours: "
            f"{same} ({len(theirs)} vs {len(ids)} tokens); pixel_values {diff}")  # fmt: skip


@dataclass
class Peer:
    """The stock wrapper's items, notes, and what its checks need once our model is gone."""

    family: str
    items: list[int]
    notes: list[str]
    error: str = ""
    head: torch.Tensor | None = None  # planted lm_head rows, to check the saved copy
    ids: list[int] = field(default_factory=list)  # our prompt ids of the first item
    pixels: torch.Tensor | None = None  # our pixel_values of the first item


def prepare(vlm: Any, prompts: list[Prompt], k: int) -> Peer:
    """Make the first `k` items' prompts and pixels what the stock wrapper will see."""
    peer = Peer(vlm.family, list(range(k)), [])
    if vlm.family.startswith("qwen"):
        template = with_default_system(vlm.tokenizer.chat_template)
        vlm.tokenizer.chat_template = vlm.processor.chat_template = template
        peer.notes.append(f"chat template: opens with the system turn '{QWEN_DEFAULT_SYSTEM}' when "
                          "a conversation has none, as the real Qwen2-VL template does (our "
                          "prompts too)")  # fmt: skip
    if not peer.items:
        peer.error = "not run (--stock-samples 0)"
    elif vlm.family not in WRAPPERS:
        peer.error = f"not run: no stock wrapper compared for family '{vlm.family}'"
    elif importlib.util.find_spec("lmms_eval") is None:
        peer.error = "not run: lmms-eval is not installed (carry its wheels: gpu_wheels_lmms.txt)"
    if peer.error:
        return peer
    try:
        peer.notes.append(f"decord: {ensure_decord()}")
        wrapper_class(vlm.family)
        if vlm.family == "qwen2_vl":
            rounds = []
            for i in peer.items:
                image, r = jpeg_fixpoint(prompts[i].image)  # type: ignore[arg-type]
                prompts[i] = Prompt(prompts[i].text, image)
                rounds.append(r)
            done = [r for r in rounds if r is not None]
            peer.notes.append(
                f"images of the {len(peer.items)} compared items: JPEG-q85 fixpoints of the random "
                f"images (the wrapper re-encodes each image as JPEG); {len(done)} converged, "
                f"{max(done, default=0)} rounds at most")  # fmt: skip
    except Exception as exc:  # lmms-eval or one of its imports missing
        peer.error = f"not run: {type(exc).__name__}: {exc}".splitlines()[0]
    return peer


def save_for_peer(
    vlm: Any, peer: Peer, prompts: list[Prompt], folder: Path, new_tokens: int, ids: list[int]
) -> None:
    """Keep what the checks need from our model (`ids`: the planted rows), then save it."""
    peer.head = head_rows(vlm.hf_model, ids)
    first = prompts[peer.items[0]]
    peer.ids = vlm.prompt_ids(vlm.render([first], True))[0]
    with torch.no_grad():
        pixels = vlm.pixels_to_inputs(vlm.images_to_tensor([first.image]))["pixel_values"]
    peer.pixels = pixels.float().cpu()
    seconds = save_checkpoint(vlm, folder, new_tokens)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**30
    peer.notes.append(f"checkpoint: our model saved with processor and tokenizer to a temporary "
                      f"folder ({size:.2f} GiB safetensors, {seconds:.1f} s), then freed; "
                      f"generation_config.min_new_tokens = {new_tokens}")  # fmt: skip
