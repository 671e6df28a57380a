"""Where one greedy `generate` batch's wall time goes: its fixed cost against its forwards.

Why: at 4 new tokens a call is one prefill plus 3 decode steps, and on the H200 generate ran at
about half the samples/s of one-prefill choice scoring on the same batches (issue 19), while the
3 decode steps' arithmetic is a fraction of a percent of the prefill's. This splits one call
(`VisionLanguageModel.generate`, what the rows time) with device-synchronised forward hooks on
the transformers model and its vision tower:
- before the first forward: input preparation (template, tokens, pixels; the same work as
  choice scoring's) plus transformers' generate set-up (config, logits processors, cache);
- the prefill forward; the vision tower's time is shown apart (inside the prefill on
  transformers 5.17; newer versions may run it before the first forward);
- each decode forward (one token, KV cache);
- between and after the forwards: token selection, stopping criteria, cache bookkeeping, the
  copy of the ids to the host and detokenising.
The synchronisations in the hooks serialise CPU and device, so the parts add up to a little more
than an unhooked call (also timed, the fastest of `repeats`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench_models import sync
from eval_anatomy import fastest


@dataclass
class GenerateAnatomy:
    whole: float  # seconds of an unhooked call (fastest of the repeats)
    hooked: float = 0.0  # the hooked call, end to end
    before: float = 0.0  # call start -> first forward
    prefill: float = 0.0
    vision: float = 0.0  # the vision tower, wherever generate ran it
    decodes: list[float] = field(default_factory=list)
    between: float = 0.0  # hooked - before - forwards


def measure_generate(
    hf: Any, call: Callable[[], Any], device: str, repeats: int = 2
) -> GenerateAnatomy:
    """Time `call` (one generate batch) unhooked, then once with the forward hooks."""
    best = fastest(call, device, repeats)
    inner = getattr(hf, "model", None)
    vision = getattr(inner, "vision_tower", None) or getattr(inner, "visual", None)
    marks: list[tuple[str, float]] = []

    def mark(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            sync(device)
            marks.append((name, time.perf_counter()))

        return hook

    handles = [hf.register_forward_pre_hook(mark("in")), hf.register_forward_hook(mark("out"))]
    if vision is not None:
        handles += [vision.register_forward_pre_hook(mark("vin")),
                    vision.register_forward_hook(mark("vout"))]  # fmt: skip
    try:
        sync(device)
        start = time.perf_counter()
        call()
        sync(device)
        end = time.perf_counter()
    finally:
        for h in handles:
            h.remove()
    a = GenerateAnatomy(whole=best, hooked=end - start)
    for (name, t), (nxt, t2) in itertools.pairwise(marks):
        if name == "vin" and nxt == "vout":
            a.vision += t2 - t
    forwards = [t for n, t in marks if n in ("in", "out")]
    pairs = list(zip(forwards[::2], forwards[1::2], strict=False))
    if pairs:
        a.before = pairs[0][0] - start
        a.prefill = pairs[0][1] - pairs[0][0]
        a.decodes = [t2 - t for t, t2 in pairs[1:]]
    a.between = a.hooked - a.before - a.prefill - sum(a.decodes)
    return a


def generate_lines(
    a: GenerateAnatomy, title: str, prefill_flops: float, roofline: float
) -> list[str]:
    """Markdown: heading, table of the parts, the verdict in one line."""

    def row(part: str, seconds: float, flops: float | None = None) -> str:
        share = 100 * seconds / a.hooked if a.hooked else float("nan")
        rate = "" if flops is None else f"{100 * flops / max(seconds, 1e-9) / roofline:.1f}"
        return f"| {part} | {seconds:.3f} | {share:.1f} | {rate} |"

    dec = sum(a.decodes)
    each = ", ".join(f"{1000 * d:.1f}" for d in a.decodes)
    fixed = a.before + a.between
    return [
        f"## Anatomy of one generate batch: {title}",
        "",
        "| part | seconds | share of the hooked call % | % of roofline |",
        "|---|---:|---:|---:|",
        row("whole `generate` call, no hooks", a.whole),
        row("whole call with the synchronising hooks", a.hooked),
        row("before the first forward (input preparation + generate set-up)", a.before),
        row("prefill forward (vision + LM, logits at the last position)", a.prefill, prefill_flops),
        row(
            "- vision tower (inside the prefill, or before it where generate runs it first)",
            a.vision,
        ),
        row(f"{len(a.decodes)} decode forwards ({each} ms)", dec),
        row(
            "between and after the forwards (selection, stopping, ids to host, detokenise)",
            a.between,
        ),
        "",
        f"- verdict: the prefill forward is {100 * a.prefill / a.hooked:.1f}% of the call, the "
        f"decode forwards {100 * dec / a.hooked:.1f}%, the rest (preparation, set-up, "
        f"bookkeeping) {100 * fixed / a.hooked:.1f}%",
    ]
