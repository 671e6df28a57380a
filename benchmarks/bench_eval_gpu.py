"""Close-ended (POPE-style) evaluation throughput of our batched path on 7B-shaped models.

    python3 benchmarks/bench_eval_gpu.py --shape llava-7b --device cuda --out $OUT/eval_llava.md
    python3 benchmarks/bench_eval_gpu.py --shape tiny --family qwen2_vl --device cpu \\
        --samples 16 --baseline-samples 4 --batch-sizes 1,8 --stock-samples 8 --out /tmp/e.md

Workload: N yes/no questions ("Is there a {object} in the image?" + POPE's answer instruction),
one random image each at model resolution, greedy decoding of exactly `--new-tokens` tokens
(min_new_tokens = max_new_tokens). Paths, each timed after one discarded warm-up call:
- `generate` at batch 1: our path one sample at a time, as lmms-eval's stock llava_hf /
  qwen2_vl wrappers run at their defaults (llava_hf asserts batch_size == 1).
- `lmms-eval <wrapper> (stock)`, last: the REAL stock wrapper (lmms_stock.py), loading this
  model from a saved folder with its defaults, on the first `--stock-samples` items, timed
  around its `generate_until`; our model is saved and freed first. Its section gives ours (the
  fastest batched row) / stock, the parsed-answer and text agreement on the common items, and
  whether its first generate call got our prompt ids and pixels. Without lmms-eval the row says
  why it did not run, and `generate` at batch 1 stands in.
- `generate` at batch B: `VisionLanguageModel.generate` over prompts sorted by token length
  (the eval runner's order), B prompts per call.
- `prefill-choice`: `choice_logprobs`, one prompt-only prefill reading the log-probs of the
  choices' first tokens ("yes" / "no") at the last position; answer = the larger.
- `score-choice`: `answer_logprobs` on prompt+"yes" and prompt+"no" (2B rows, one call).
Checks: batch-B greedy texts against batch 1 on the first `--baseline-samples` items; each
choice path's answer against greedy generation's parsed answer (yesno verifier).

Random weights would not answer yes/no, so the lm_head rows of the choices' first tokens are
planted as +K*u and -K*u (u a random unit vector, K = `--plant-scale`): the model then answers
"yes" or "no" by the sign of u.h, and the parsed-answer checks mean something. Two rows of the
vocabulary projection change; the compute does not.

FLOPs a sample (stated in the output): 2*N_body*T_lm + 2*N_head*T_logits + 2*N_vision*T_vision,
with N_body the decoder layers' parameters (input embeddings are a lookup), T_lm the tokens the
LM processes (prompt + new - 1 for generate), N_head the vocabulary projection applied at
T_logits positions, N_vision the vision tower + projector over its patch tokens. Attention
scores are not counted (about 2-3% at these lengths), so the roofline fraction is conservative.
The markdown written to --out starts with the exact command line; it is rewritten after every
configuration, so a crash keeps the rows measured before it.
"""

from __future__ import annotations

import argparse
import gc
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lmms_stock
from bench_models import build

from mbpo_bench.models import Prompt

ROOFLINE_FLOPS = 790e12  # bf16 matrix rate measured on the H200 (issue 8)
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
class Row:
    path: str
    batch: int
    samples: int
    seconds: float = float("nan")
    flops: float = float("nan")  # per sample
    peak_gib: float | None = None
    check: str = ""
    error: str = ""

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


@dataclass
class State:
    """Everything measured so far, so a crash or OOM keeps the rows before it."""

    header: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    texts: dict[int, list[str]] = field(default_factory=dict)  # batch -> greedy text per item
    answers: dict[str, dict[int, str | None]] = field(default_factory=dict)  # row -> item -> answer
    peer: list[str] = field(default_factory=list)  # lines of the stock-wrapper section
    extra: list[str] = field(default_factory=list)  # appended sections (profile)


def make_prompts(n: int, side: int, seed: int) -> list[Prompt]:
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
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


def count_parameters(vlm: Any) -> Counts:
    hf = vlm.hf_model
    lm = hf.model.language_model
    embed = lm.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in lm.parameters()) - embed
    head = hf.lm_head.weight.numel()
    total = sum(p.numel() for p in hf.parameters())
    tied = hf.lm_head.weight is lm.get_input_embeddings().weight
    vision = total - body - embed - (0 if tied else head)
    return Counts(body=body, head=head, vision=vision, vision_tokens=vision_tokens(vlm))


def vision_tokens(vlm: Any) -> int:
    """Tokens the vision tower runs on per image (patches; CLIP adds its CLS token)."""
    if vlm.family == "llava":
        cfg = vlm.hf_model.config.vision_config
        cls = 1 if cfg.model_type == "clip_vision_model" else 0
        return int((vlm.image_size // cfg.patch_size) ** 2 + cls)
    return int((vlm.image_size // vlm.patch) ** 2)


def sample_flops(c: Counts, lm_tokens: float, logit_positions: float, images: float) -> float:
    return (
        2 * c.body * lm_tokens
        + 2 * c.head * logit_positions
        + 2 * c.vision * c.vision_tokens * images
    )


def prompt_lengths(vlm: Any, prompts: Sequence[Prompt]) -> list[int]:
    return [len(ids) for ids in vlm._prompt_ids(vlm.render(prompts, True))]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def greedy(vlm: Any, prompts: Sequence[Prompt], order: list[int], b: int, n: int) -> list[str]:
    out = [""] * len(prompts)
    for idx in batches(order, b):
        texts = vlm.generate([prompts[i] for i in idx], max_new_tokens=n, min_new_tokens=n,
                             batch_size=b)  # fmt: skip
        for i, t in zip(idx, texts, strict=True):
            out[i] = t[0]
    return out


def prefill_choice(vlm: Any, prompts: Sequence[Prompt], order: list[int], b: int) -> list[str]:
    out = [""] * len(prompts)
    for idx in batches(order, b):
        logp = vlm.choice_logprobs([prompts[i] for i in idx], CHOICES, batch_size=b)
        for i, k in zip(idx, logp.argmax(-1).tolist(), strict=True):
            out[i] = CHOICES[k].strip()
    return out


def score_choice(
    vlm: Any, prompts: Sequence[Prompt], order: list[int], b: int
) -> tuple[list[str], list[str]]:
    """(first-token rule, answer+EOS sum rule) choices from 2B-row answer_logprobs calls."""
    first, total = [""] * len(prompts), [""] * len(prompts)
    for idx in batches(order, b):
        rows = [prompts[i] for i in idx for _ in CHOICES]
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
) -> Any:
    """Warm up, time `full`, record the row (an OOM becomes the row's error) and rewrite --out."""
    out = None
    try:
        warm()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        out, row.seconds = timed(full, args.device)
        if args.device.startswith("cuda"):
            row.peak_gib = torch.cuda.max_memory_allocated() / 2**30
    except torch.OutOfMemoryError:
        row.error = "out of GPU memory"
        torch.cuda.empty_cache()
    state.rows.append(row)
    write(state, args.out)
    label = f"{row.rate:.1f} samples/s" if not row.error else row.error
    print(f"{row.path:>15} batch {row.batch:>4}: {label}", flush=True)
    return out


def run_batch_size(
    vlm: Any, prompts: list[Prompt], lengths: list[int], counts: Counts, b: int,
    state: State, args: argparse.Namespace,
) -> None:  # fmt: skip
    n = args.new_tokens
    if b == 1:
        items = list(range(args.baseline_samples))
    else:
        items = sorted(range(args.samples), key=lambda i: (lengths[i], i))
    p = float(np.mean([lengths[i] for i in items]))
    first = items[:b]

    def row(path: str, lm: float, logits: float, images: float) -> Row:
        return Row(path, b, len(items), flops=sample_flops(counts, lm, logits, images))

    texts = measure(
        state, row("generate", p + n - 1, n, 1),
        lambda: greedy(vlm, prompts, first, b, n), lambda: greedy(vlm, prompts, items, b, n), args,
    )  # fmt: skip
    if texts is not None:
        state.texts[b] = texts
        remember(state, f"generate batch {b}", items, [parse_yesno(texts[i]) for i in items])
        if b == 1:
            state.rows[-1].check = "reference for the checks"
        elif 1 in state.texts:
            single = {i: state.texts[1][i] for i in range(args.baseline_samples)}
            state.rows[-1].check = identical(texts, single)
    if b == 1:
        return
    choice = measure(
        state, row("prefill-choice", p, 1, 1),
        lambda: prefill_choice(vlm, prompts, first, b),
        lambda: prefill_choice(vlm, prompts, items, b), args,
    )  # fmt: skip
    if choice is not None:
        remember(state, f"prefill-choice batch {b}", items, [choice[i] for i in items])
    if choice is not None and texts is not None:
        state.rows[-1].check = agreement([choice[i] for i in items], [texts[i] for i in items])
    scored = measure(
        state, row("score-choice", 2 * (p + 2), 4, 2),
        lambda: score_choice(vlm, prompts, first, b),
        lambda: score_choice(vlm, prompts, items, b), args,
    )  # fmt: skip
    if scored is not None:
        remember(state, f"score-choice batch {b}", items, [scored[0][i] for i in items])
    if scored is not None and texts is not None:
        greedy_items = [texts[i] for i in items]
        state.rows[-1].check = (
            "first token " + agreement([scored[0][i] for i in items], greedy_items)
            + "; answer+EOS sum " + agreement([scored[1][i] for i in items], greedy_items)
        )  # fmt: skip
    write(state, args.out)


def to_markdown(state: State) -> str:
    h = state.header
    lines = [f"`{h['command']}`", ""]
    lines += [f"- {k}: {v}" for k, v in h.items() if k != "command"]
    base = next((r.rate for r in state.rows if r.path == "generate" and r.batch == 1
                 and not r.error), None)  # fmt: skip
    lines += [
        "",
        "| path | batch | samples | samples/s | x batch 1 | TFLOP/sample | TFLOP/s "
        "| % of 790 TFLOP/s | peak GiB | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in state.rows:
        if r.error:
            lines.append(f"| {r.path} | {r.batch} | {r.samples} | {r.error} | | | | | | |")
            continue
        rate = r.flops * r.rate
        speedup = f"{r.rate / base:.2f}" if base else "-"
        peak = "-" if r.peak_gib is None else f"{r.peak_gib:.1f}"
        lines.append(
            f"| {r.path} | {r.batch} | {r.samples} | {r.rate:.2f} | {speedup} | "
            f"{r.flops / 1e12:.4f} | {rate / 1e12:.2f} | {100 * rate / ROOFLINE_FLOPS:.1f} | "
            f"{peak} | {r.check} |"
        )
    if state.peer:
        lines += ["", "## Against lmms-eval's stock wrapper (same run, same model, same items)", ""]
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


TINY_QWEN_SIDE = 112  # a multiple of the tiny patch unit (16) and of qwen_vl_utils' factor (28)


def build_model(args: argparse.Namespace, tmp: Path) -> Any:
    if args.shape == "tiny" and args.family.startswith("qwen") and args.stock_samples:
        from mbpo_bench.models import build_tiny_model, load_model

        folder = build_tiny_model(args.family, tmp / args.family, image_size=TINY_QWEN_SIDE)
        vlm = load_model(folder, device=args.device)
        vlm.name = f"tiny {args.family}"
        return vlm
    return build(args.shape, args.family, args.device, tmp)


def choice_ids(tokenizer: Any) -> list[int]:
    return [tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in CHOICES]


def best_row(state: State) -> Row | None:
    ours = [r for r in state.rows if r.batch > 1 and not r.error and r.seconds == r.seconds]
    return max(ours, key=lambda r: r.rate, default=None)


def peer_checks(state: State, peer: lmms_stock.Peer, texts: list[str], baseline: int) -> list[str]:
    """Parsed-answer agreement of the stock wrapper with our rows, on the common items."""
    stock = dict(zip(peer.items, [parse_yesno(t) for t in texts], strict=True))
    best = best_row(state)
    widest = max(state.texts, default=1)
    keys = ["generate batch 1", f"generate batch {widest}"]
    keys += [f"{best.path} batch {best.batch}"] if best else []
    out = []
    for key in dict.fromkeys(keys):
        ours = state.answers.get(key, {})
        common = [i for i in peer.items if i in ours]
        same = sum(stock[i] is not None and stock[i] == ours[i] for i in common)
        out.append(f"parsed answers = {key} {same}/{len(common)}")
    for b in dict.fromkeys([1, widest]):
        if b in state.texts:
            common = [i for i in peer.items if b > 1 or i < baseline]
            same = sum(texts[i].strip() == state.texts[b][i].strip() for i in common)
            out.append(f"texts = generate batch {b} {same}/{len(common)}")
    unparsed = sum(a is None for a in stock.values())
    empty = sum(not t.strip() for t in texts)
    return [*out, f"{unparsed} unparsed, {empty} empty (a generation error reads as '')"]


def run_peer(
    state: State, peer: lmms_stock.Peer, folder: Path, lengths: list[int], counts: Counts,
    prompts: list[Prompt], args: argparse.Namespace,
) -> None:  # fmt: skip
    """Load the stock wrapper from `folder`, time its generate_until, record row and notes."""
    n, k = args.new_tokens, len(peer.items)
    p = float(np.mean([lengths[i] for i in peer.items]))
    row = Row(f"lmms-eval {lmms_stock.wrapper_name(peer.family)} (stock)", 1, k,
              flops=sample_flops(counts, p + n - 1, n, 1))  # fmt: skip
    try:
        lm, margs, load_s = lmms_stock.load_wrapper(peer.family, folder, args.device)
        rows = lmms_stock.head_rows(lm.model, choice_ids(lm.tokenizer))
        same = peer.head is not None and torch.equal(rows, peer.head)
        peer.notes.append(f"wrapper: `{type(lm).__module__}.{type(lm).__name__}({margs})`, all "
                          f"other arguments default; loaded in {load_s:.1f} s as {lm.model.dtype}; "
                          f"planted head rows identical after save/load: {same}")  # fmt: skip
        reqs = lmms_stock.instances(
            lm, [prompts[i].text for i in peer.items], [prompts[i].image for i in peer.items], n
        )
        seen: dict[str, torch.Tensor] = {}
        texts = measure(state, row, lambda: seen.update(lmms_stock.spy_inputs(lm, reqs[:1])),
                        lambda: lmms_stock.generate(lm, reqs), args)  # fmt: skip
        if peer.pixels is not None:
            peer.notes.append(lmms_stock.input_check(seen, peer.ids, peer.pixels))
    except Exception as exc:
        import traceback

        traceback.print_exc()
        row.error = f"failed: {type(exc).__name__}: {exc}".splitlines()[0].replace("|", "/")
        if row not in state.rows:
            state.rows.append(row)
        texts = None
    if texts is not None:
        row.check = "; ".join(peer_checks(state, peer, texts, args.baseline_samples))
    summarize_peer(state, peer, row)
    write(state, args.out)


def summarize_peer(state: State, peer: lmms_stock.Peer, row: Row | None) -> None:
    state.peer += [f"lmms-eval: {lmms_stock.versions()}", *peer.notes]
    best = best_row(state)
    if row is None or row.error or best is None:
        state.peer.append(
            f"stock wrapper: {peer.error or (row.error if row else '')}; "
            "`generate` at batch 1 stands in for it (its default batch size)"
        )
    else:
        base = next((r for r in state.rows if r.path == "generate" and r.batch == 1), None)
        vs1 = f"; our generate at batch 1 / stock: {base.rate / row.rate:.2f}x" if base else ""
        state.peer.append(
            f"**ours / stock: {best.rate / row.rate:.2f}x** (best batched path: {best.path} at "
            f"batch {best.batch}, {best.rate:.2f} samples/s; stock {row.rate:.2f} samples/s over "
            f"{row.samples} items after one warm-up item){vs1}")  # fmt: skip


def peer_header(args: argparse.Namespace) -> str:
    if args.stock_samples:
        return ("the stock wrapper runs in this run (row `lmms-eval ... (stock)`, section below); "
                "`generate` at batch 1 is our own batch-1 path")  # fmt: skip
    return ("stock wrappers not run (--stock-samples 0); `generate` at batch 1 stands in for them "
            "(their default and, for llava_hf, only batch size)")  # fmt: skip


def make_header(
    vlm: Any, counts: Counts, lengths: list[int], args: argparse.Namespace
) -> dict[str, str]:
    import transformers

    device = args.device
    dev = torch.cuda.get_device_name() if device.startswith("cuda") else platform.machine()
    sample = lengths[: args.samples]
    p, n = float(np.mean(sample)), args.new_tokens
    gen = sample_flops(counts, p + n - 1, n, 1)
    total = sum(x.numel() for x in vlm.hf_model.parameters())
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "shape": args.shape,
        "model": f"{vlm.name} ({vlm.family}, {total / 1e6:.1f}M params: decoder layers "
        f"{counts.body / 1e6:.1f}M, vocabulary projection {counts.head / 1e6:.1f}M, vision "
        f"{counts.vision / 1e6:.1f}M; {vlm.dtype}, {vlm.image_size} px, "
        f"{vlm.num_image_tokens()} image tokens, {counts.vision_tokens} vision-tower tokens)",
        "device": f"{device} {dev} ({torch.get_num_threads()} CPU threads)",
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
        "workload": f"{args.samples} yes/no questions (batch 1: the first "
        f"{args.baseline_samples}), prompt {min(sample)}-{max(sample)} tokens (mean {p:.1f}), "
        f"greedy, exactly {n} new tokens; batches of prompts sorted by token length",
        "answer head": f"lm_head rows of {CHOICES} planted as +/-{args.plant_scale:g}*u "
        "(random weights otherwise; compute unchanged)",
        "FLOPs a sample": "2*N_body*T_lm + 2*N_head*T_logits + 2*N_vision*T_vision "
        "(T_lm: generate P+new-1, prefill-choice P, score-choice 2*(P+2); T_logits: new, 1, 4; "
        f"images: 1, 1, 2); generate at the mean prompt: {gen / 1e12:.3f} TFLOP, "
        f"roofline {ROOFLINE_FLOPS / gen:.1f} samples/s at 790 TFLOP/s",
        "lmms-eval": peer_header(args),
        "timing": "one warm-up call on the first batch, then one timed pass over all samples"
        + ("; CPU shared with other jobs, expect noise" if device == "cpu" else ""),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="tiny", choices=["tiny", "llava-7b", "qwen2vl-7b"])
    parser.add_argument("--family", default="llava", help="tiny shape only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default="1,32,64,128", help="comma-separated")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--baseline-samples", type=int, default=32)
    parser.add_argument("--stock-samples", type=int, default=32,
                        help="items through lmms-eval's stock wrapper (0: skip it)")  # fmt: skip
    parser.add_argument("--stock-dir", type=Path, default=None,
                        help="where the temporary checkpoint for the stock wrapper goes")  # fmt: skip
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--plant-scale", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--profile", action="store_true",
                        help="append a torch.profiler breakdown of one prefill-choice batch "
                             "at the largest batch size (matmul / attention / other)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mbpo_bench.models.loading import resolve_device

    args.device = resolve_device(args.device)
    args.baseline_samples = min(args.baseline_samples, args.samples)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        vlm = build_model(args, Path(tmp))
    plant_answer_head(vlm, args.plant_scale, args.seed)
    prompts = make_prompts(args.samples, vlm.image_size, args.seed)
    peer = lmms_stock.prepare(vlm, prompts, min(args.stock_samples, args.samples))
    lengths = prompt_lengths(vlm, prompts)
    counts = count_parameters(vlm)
    state = State(header=make_header(vlm, counts, lengths, args))
    for b in (int(b) for b in args.batch_sizes.split(",")):
        run_batch_size(vlm, prompts, lengths, counts, b, state, args)
    if args.profile:
        from profile_ops import profile_section

        b = max(int(b) for b in args.batch_sizes.split(","))
        first = sorted(range(args.samples), key=lambda i: (lengths[i], i))[:b]
        state.extra.append(profile_section(
            lambda: prefill_choice(vlm, prompts, first, b), args.device,
            f"one prefill-choice batch of {len(first)}",
        ))  # fmt: skip
        write(state, args.out)
    if peer.error:
        summarize_peer(state, peer, None)
    else:
        folder = Path(tempfile.mkdtemp(prefix="bench_eval_stock_", dir=args.stock_dir))
        try:
            ids = choice_ids(vlm.tokenizer)
            lmms_stock.save_for_peer(vlm, peer, prompts, folder, args.new_tokens, ids)
        except Exception as exc:  # a full disk, say: keep our rows, say why the peer is missing
            peer.error = f"not run: saving failed: {type(exc).__name__}: {exc}".splitlines()[0]
            summarize_peer(state, peer, None)
        else:
            del vlm  # the stock wrapper loads its own copy from the folder
            gc.collect()
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            run_peer(state, peer, folder, lengths, counts, prompts, args)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    write(state, args.out)
    print(to_markdown(state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
