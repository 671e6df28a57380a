"""The workload and measurement primitives of bench_eval_gpu.py (its docstring says what is measured).

Prompts with random images, the planted answer head, FLOP counting, the three paths (`generate`,
`prefill-choice`, `score-choice`) and their answer checks, one timed row (warm-up call, then the
timed pass; an out-of-memory becomes the row's error) and the markdown the benchmark writes after
every row. Kept apart from the script so the script reads as its runs: rows, profile, compiled
rows, the stock wrapper.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_models import sync
from PIL import Image

from mbpo_bench.models import Prompt

ROOFLINE_FLOPS = 790e12  # bf16 matrix rate measured on the H200 (issue 8)
PATHS = ("generate", "prefill-choice", "score-choice")
# Candidate answers as the stand-in tokenizer's word tokens: the planted model then writes
# "yes no yes ..." (space-separated, so the yesno verifier parses its first word).
CHOICES = (" yes", " no")
INSTRUCTION = "\nAnswer the question using a single word or phrase."
OBJECTS = (
    "dog", "cat", "person", "car", "bicycle", "traffic light", "dining table", "potted plant",
    "fire hydrant", "baseball glove", "tennis racket", "cell phone", "teddy bear", "hair drier",
    "toothbrush", "umbrella", "parking meter", "sports ball", "wine glass", "motorcycle",
)  # fmt: skip


@dataclass
class Counts:
    """Parameters of each part of the model, and the vision tower's tokens per image."""

    body: int
    head: int
    vision: int
    vision_tokens: int


@dataclass
class PhasePeaks:
    """Peak allocated GPU memory (GiB, weights included) of each phase of a batch, the maximum
    over the pass: input preparation (from the language model's last call to the vision tower's
    first: padding, host-to-device copies, normalisation, patchify), vision tower, language
    model (prefill and every decode step; the image features' merge counts here)."""

    prep: float = 0.0
    vision: float = 0.0
    lm: float = 0.0

    def text(self) -> str:
        return f"prep {self.prep:.1f} / vision {self.vision:.1f} / LM {self.lm:.1f}"


@contextlib.contextmanager
def phase_peaks(hf: Any, device: str) -> Iterator[PhasePeaks | None]:
    """Forward hooks on the vision tower and the language model of transformers model `hf`
    that read and reset CUDA's peak-memory counter at each phase boundary (None off CUDA)."""
    inner = getattr(hf, "model", None)
    vision = getattr(inner, "vision_tower", None) or getattr(inner, "visual", None)
    lm = getattr(inner, "language_model", None)
    if not device.startswith("cuda") or vision is None or lm is None:
        yield None
        return
    peaks = PhasePeaks()

    def reader(phase: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            seen = torch.cuda.max_memory_allocated() / 2**30
            setattr(peaks, phase, max(getattr(peaks, phase), seen))
            torch.cuda.reset_peak_memory_stats()

        return hook

    handles = [vision.register_forward_pre_hook(reader("prep")),
               vision.register_forward_hook(reader("vision")),
               lm.register_forward_hook(reader("lm"))]  # fmt: skip
    torch.cuda.reset_peak_memory_stats()
    try:
        yield peaks
    finally:
        for h in handles:
            h.remove()


@dataclass
class Row:
    path: str
    batch: int
    samples: int
    seconds: float = float("nan")
    flops: float = float("nan")  # per sample
    peak_gib: float | None = None
    check: str = ""
    error: str = ""
    warm_seconds: float = float("nan")  # the discarded warm-up call
    phases: PhasePeaks | None = None  # peak GiB by phase over the timed pass (CUDA)

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


@dataclass
class State:
    """Everything measured so far, so a crash or OOM keeps the rows before it."""

    header: dict[str, str]
    peer_title: str = "Against lmms-eval's stock wrapper (same run, same model, same items)"
    rows: list[Row] = field(default_factory=list)
    texts: dict[int, list[str]] = field(default_factory=dict)  # batch -> greedy text per item
    answers: dict[str, dict[int, str | None]] = field(default_factory=dict)  # row -> item -> answer
    peer: list[str] = field(default_factory=list)  # lines of the stock-wrapper section
    extra: list[str] = field(default_factory=list)  # appended sections (profile)


def make_prompts(n: int, size: int | tuple[int, int], seed: int) -> list[Prompt]:
    """`n` yes/no prompts, each with a random image of `size` (a square side, or (W, H))."""
    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        text = f"Is there a {OBJECTS[i % len(OBJECTS)]} in the image?{INSTRUCTION}"
        prompts.append(Prompt(text, Image.fromarray(pixels)))
    return prompts


def plant_answer_head(vlm: Any, scale: float, seed: int) -> None:
    """Rows of the choices' first tokens := +scale*u / -scale*u (untied from the embeddings)."""
    hf = vlm.hf_model
    head = hf.lm_head
    if head.weight is hf.get_input_embeddings().weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(head.weight.shape[1], generator=gen)
    u = (u / u.norm()).to(head.weight.device, head.weight.dtype)
    ids = choice_ids(vlm.tokenizer)
    with torch.no_grad():
        head.weight[ids[0]] = scale * u
        head.weight[ids[1]] = -scale * u


def count_parameters(vlm: Any, image: Any = None) -> Counts:
    """Parameter counts; the vision tokens are those of `image` as the model processes it."""
    hf = vlm.hf_model
    lm = hf.model.language_model
    embed = lm.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in lm.parameters()) - embed
    head = hf.lm_head.weight.numel()
    total = sum(p.numel() for p in hf.parameters())
    tied = hf.lm_head.weight is lm.get_input_embeddings().weight
    vision = total - body - embed - (0 if tied else head)
    return Counts(body=body, head=head, vision=vision, vision_tokens=vision_tokens(vlm, image))


def vision_tokens(vlm: Any, image: Any = None) -> int:
    """Tokens the vision tower runs on per image (patches; CLIP adds its CLS token): Qwen's
    depend on the image's processed size (None: an `image_size` square)."""
    if vlm.family == "llava":
        cfg = vlm.hf_model.config.vision_config
        cls = 1 if cfg.model_type == "clip_vision_model" else 0
        return int((vlm.image_size // cfg.patch_size) ** 2 + cls)
    h, w = (vlm.image_size,) * 2 if image is None else vlm.processed_size(image)
    return int((h // vlm.patch) * (w // vlm.patch))


def sample_flops(c: Counts, lm_tokens: float, logit_positions: float, images: float) -> float:
    return (
        2 * c.body * lm_tokens
        + 2 * c.head * logit_positions
        + 2 * c.vision * c.vision_tokens * images
    )


def prompt_lengths(vlm: Any, prompts: Sequence[Prompt]) -> list[int]:
    return [len(ids) for ids in vlm.prompt_ids(vlm.render(prompts, True))]


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def prompt_batches(
    vlm: Any, prompts: Sequence[Prompt], order: list[int], b: int, workers: int = 0
) -> Iterator[tuple[list[int], list[Prompt]]]:
    """(item indices, their prompts) per batch of `b`; with `workers` > 0 the prompts' images
    come prepared from the evaluation loader's worker processes (mbpo_bench/evaluation/loader.py,
    what `mbpo-bench eval` runs), batch k+1 while the model runs batch k."""
    groups = batches(order, b)
    if workers <= 0:
        yield from ((idx, [prompts[i] for i in idx]) for idx in groups)
        return
    from mbpo_bench.evaluation.loader import prepared_entries

    def build(k: int, start: int, stop: int) -> list[Prompt]:
        return [prompts[i] for i in groups[k][start:stop]]

    ready = prepared_entries(vlm, [len(g) for g in groups], build, workers=workers)
    yield from zip(groups, ready, strict=True)


def greedy(
    vlm: Any, prompts: Sequence[Prompt], order: list[int], b: int, n: int, workers: int = 0,
    speed: Any = None,
) -> list[str]:  # fmt: skip
    """Greedy texts of exactly `n` new tokens; `speed` a GenerationSpeed (None: plain generate)."""
    out = [""] * len(prompts)
    extra = {} if speed is None else {"speed": speed}
    for idx, batch in prompt_batches(vlm, prompts, order, b, workers):
        texts = vlm.generate(batch, max_new_tokens=n, min_new_tokens=n, batch_size=b, **extra)
        for i, t in zip(idx, texts, strict=True):
            out[i] = t[0]
    return out


def prefill_choice(
    vlm: Any, prompts: Sequence[Prompt], order: list[int], b: int, workers: int = 0
) -> list[str]:
    out = [""] * len(prompts)
    for idx, batch in prompt_batches(vlm, prompts, order, b, workers):
        logp = vlm.choice_logprobs(batch, CHOICES, batch_size=b)
        for i, k in zip(idx, logp.argmax(-1).tolist(), strict=True):
            out[i] = CHOICES[k].strip()
    return out


def score_choice(
    vlm: Any, prompts: Sequence[Prompt], order: list[int], b: int, workers: int = 0
) -> tuple[list[str], list[str]]:
    """(first-token rule, answer+EOS sum rule) choices from 2B-row answer_logprobs calls."""
    first, total = [""] * len(prompts), [""] * len(prompts)
    for idx, batch in prompt_batches(vlm, prompts, order, b, workers):
        rows = [p for p in batch for _ in CHOICES]
        answers = [c for _ in idx for c in CHOICES]
        with torch.no_grad():
            lp = vlm.answer_logprobs(rows, answers)
        by_first = lp.logps[:, 0].view(len(idx), len(CHOICES)).argmax(-1).tolist()
        by_sum = lp.sum().view(len(idx), len(CHOICES)).argmax(-1).tolist()
        for i, kf, ks in zip(idx, by_first, by_sum, strict=True):
            first[i], total[i] = CHOICES[kf].strip(), CHOICES[ks].strip()
    return first, total


def agreement(ours: Sequence[str], greedy_texts: Sequence[str]) -> str:
    from mbpo_bench.tasks.verifiers import parse

    parsed = [parse("yesno", t) for t in greedy_texts]
    pairs = [(o, p) for o, p in zip(ours, parsed, strict=True) if p is not None]
    same = sum(o == p for o, p in pairs)
    yes = sum(o == "yes" for o in ours)
    return (f"= greedy parsed answer {same}/{len(pairs)} ({len(ours) - len(pairs)} unparsed; "
            f"'yes' {yes}/{len(ours)})")  # fmt: skip


def identical(batched: Sequence[str], single: dict[int, str]) -> str:
    from mbpo_bench.tasks.verifiers import parse

    texts = sum(batched[i] == t for i, t in single.items())
    answers = sum(parse("yesno", batched[i]) == parse("yesno", t) for i, t in single.items())
    return f"= batch 1: texts {texts}/{len(single)}, parsed answers {answers}/{len(single)}"


def parse_yesno(text: str) -> str | None:
    from mbpo_bench.tasks.verifiers import parse

    return parse("yesno", text)


def remember(state: State, key: str, items: list[int], answers: Sequence[str | None]) -> None:
    state.answers[key] = dict(zip(items, answers, strict=True))


def measure(
    state: State,
    row: Row,
    warm: Callable[[], Any],
    full: Callable[[], Any],
    args: argparse.Namespace,
    hf: Any = None,
) -> Any:
    """Warm up, time `full`, record the row (an OOM becomes the row's error) and rewrite --out;
    with `hf` (the transformers model) the peak memory of each phase of the timed pass too."""
    out = None
    try:
        _, row.warm_seconds = timed(warm, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with phase_peaks(hf, args.device) as phases:
            out, row.seconds = timed(full, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
            row.peak_gib = torch.cuda.max_memory_allocated() / 2**30
        if phases is not None:
            row.phases = phases
            row.peak_gib = max(row.peak_gib or 0.0, phases.prep, phases.vision, phases.lm)
    except torch.OutOfMemoryError:
        row.error = "out of GPU memory"
        torch.cuda.empty_cache()
    except Exception as exc:  # a failed compile, say: the row says why, the run goes on
        if not row.path.endswith("compiled"):
            raise
        import traceback

        traceback.print_exc()
        row.error = f"failed: {type(exc).__name__}: {exc}".splitlines()[0].replace("|", "/")
    state.rows.append(row)
    write(state, args.out)
    label = f"{row.rate:.1f} samples/s" if not row.error else row.error
    print(f"{row.path:>15} batch {row.batch:>4}: {label}", flush=True)
    return out


def to_markdown(state: State) -> str:
    h = state.header
    lines = [f"`{h['command']}`", ""]
    lines += [f"- {k}: {v}" for k, v in h.items() if k != "command"]
    base = next((r.rate for r in state.rows if r.path == "generate" and r.batch == 1
                 and not r.error), None)  # fmt: skip
    lines += [
        "",
        "| path | batch | samples | samples/s | x batch 1 | TFLOP/sample | TFLOP/s "
        "| % of 790 TFLOP/s | peak GiB (by phase) | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in state.rows:
        if r.error:
            lines.append(f"| {r.path} | {r.batch} | {r.samples} | {r.error} | | | | | | |")
            continue
        rate = r.flops * r.rate
        speedup = f"{r.rate / base:.2f}" if base else "-"
        peak = "-" if r.peak_gib is None else f"{r.peak_gib:.1f}"
        peak += f" ({r.phases.text()})" if r.phases is not None else ""
        lines.append(
            f"| {r.path} | {r.batch} | {r.samples} | {r.rate:.2f} | {speedup} | "
            f"{r.flops / 1e12:.4f} | {rate / 1e12:.2f} | {100 * rate / ROOFLINE_FLOPS:.1f} | "
            f"{peak} | {r.check} |"
        )
    if state.peer:
        lines += ["", f"## {state.peer_title}", ""]
        lines += [f"- {line}" for line in state.peer]
    for section in state.extra:
        lines += ["", section.rstrip("\n")]
    return "\n".join(lines) + "\n"


def write(state: State, out: Path | None) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Close-ended evaluation throughput: {state.header['shape']}\n\n"
                   + to_markdown(state))  # fmt: skip


def choice_ids(tokenizer: Any) -> list[int]:
    return [tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in CHOICES]


def best_row(state: State) -> Row | None:
    ours = [r for r in state.rows if r.batch > 1 and not r.error and r.seconds == r.seconds]
    return max(ours, key=lambda r: r.rate, default=None)
