"""Where one prefill-choice batch's wall time goes: CPU input preparation, vision tower, LM.

`VisionLanguageModel.choice_logprobs` runs, per batch and in this order: render the chat template
and tokenise (CPU), images -> [0,1] tensor -> device, left-pad, normalise (the adapter's
`model_inputs`), then the model (vision tower + projector + language model), the vocabulary
projection at the last position, and a copy of the log-probs to the host (a synchronisation).
Nothing overlaps: while the CPU prepares a batch the GPU idles. So the preparation's share of the
batch's wall time answers "is the prefill CPU-bound?" with a number.

Measured separately on the same batch, each device-synchronised, the fastest of `repeats` calls
(after the rows' warm-up, so no first-call costs):
- whole: `choice_logprobs` on the batch (what the rows time);
- inputs: the preparation alone, the same adapter calls `choice_logprobs` makes before the model;
- model: the model + vocabulary projection + log-softmax + copy to host on those inputs;
- vision: `get_image_features` on the batch's pixel inputs (vision tower + projector);
- language model = model - vision (includes merging the image features into the embeddings).
The prompts' images are PIL images already in memory: reading and decoding image files, which a
real evaluation adds, is not part of this measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from bench_models import sync

from mbpo_bench.models import Prompt


@dataclass
class Anatomy:
    """Seconds of each part of one batch (see the module docstring)."""

    whole: float
    inputs: float
    model: float
    vision: float


def fastest(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """The best of `repeats` synchronised wall times of `fn` (s): the least-disturbed call."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def choice_inputs(vlm: Any, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
    """The model inputs of one image batch, as `choice_logprobs` prepares them."""
    pixels = vlm.images_to_tensor([p.image for p in prompts])
    sizes = vlm.image_sizes(prompts, pixels)
    texts = vlm.render(prompts, True, sizes)
    with torch.no_grad():
        inputs: dict[str, torch.Tensor] = vlm.model_inputs(vlm.prompt_ids(texts), pixels, sizes)
    return inputs


def model_call(vlm: Any, inputs: dict[str, torch.Tensor], token_ids: list[int]) -> torch.Tensor:
    """Model + vocabulary projection at the last position + log-softmax, copied to the host."""
    hf = vlm.hf_model
    with torch.no_grad():
        hidden = hf.model(**inputs, use_cache=False).last_hidden_state
        logits = hf.lm_head(hidden[:, -1]).float()
        return torch.log_softmax(logits, dim=-1)[:, token_ids].cpu()


def vision_call(vlm: Any, inputs: dict[str, torch.Tensor]) -> Any:
    """Vision tower + projector on the batch's pixel inputs."""
    pix = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if k in inputs}
    with torch.no_grad():
        return vlm.hf_model.model.get_image_features(**pix)


def measure_anatomy(
    vlm: Any,
    prompts: Sequence[Prompt],
    whole: Callable[[], Any],
    token_ids: list[int],
    device: str,
    repeats: int = 2,
) -> Anatomy:
    """Time the batch whole and by part (see the module docstring)."""
    inputs = choice_inputs(vlm, prompts)
    return Anatomy(
        whole=fastest(whole, device, repeats),
        inputs=fastest(lambda: choice_inputs(vlm, prompts), device, repeats),
        model=fastest(lambda: model_call(vlm, inputs, token_ids), device, repeats),
        vision=fastest(lambda: vision_call(vlm, inputs), device, repeats),
    )


def anatomy_lines(
    a: Anatomy, title: str, vision_flops: float, lm_flops: float, roofline: float
) -> list[str]:
    """Markdown: a section heading, a table of the parts, and the verdict in one line."""

    def row(part: str, seconds: float, flops: float | None) -> str:
        share = 100 * seconds / a.whole
        if flops is None:
            return f"| {part} | {seconds:.3f} | {share:.1f} | | | |"
        rate = flops / max(seconds, 1e-9)
        return (f"| {part} | {seconds:.3f} | {share:.1f} | {flops / 1e12:.2f} | "
                f"{rate / 1e12:.1f} | {100 * rate / roofline:.1f} |")  # fmt: skip

    lm = a.model - a.vision
    rest = a.whole - a.inputs - a.model
    total = vision_flops + lm_flops
    return [
        f"## Anatomy of one prefill-choice batch: {title}",
        "",
        "| part | seconds | share of the batch % | TFLOP | TFLOP/s | % of roofline |",
        "|---|---:|---:|---:|---:|---:|",
        row("whole `choice_logprobs` call", a.whole, total),
        row("input preparation (CPU: template, tokenise, pad, pixels to device)", a.inputs, None),
        row("model call (vision + LM + head + copy to host)", a.model, total),
        row("- vision tower + projector", a.vision, vision_flops),
        row("- language model (model call - vision)", lm, lm_flops),
        row("unaccounted (whole - preparation - model call)", rest, None),
        "",
        f"- verdict: input preparation is {100 * a.inputs / a.whole:.1f}% of the batch's wall "
        f"time (the GPU idles meanwhile); the model call alone runs at "
        f"{100 * total / a.model / roofline:.1f}% of the roofline, the language model at "
        f"{100 * lm_flops / max(lm, 1e-9) / roofline:.1f}%, the vision tower at "
        f"{100 * vision_flops / max(a.vision, 1e-9) / roofline:.1f}%",
    ]
