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
- `prefill-choice compiled` (--compile), after the other rows: prefill-choice with
  `compiled_layers(vlm)` (mbpo_bench.models.compile: each decoder / vision layer torch.compiled)
  active; its warm-up is one whole pass (every padded length compiles there, not in the timed
  pass), warm-up minus timed pass = the compile seconds, stated separately. The candidate fix
  before/after in one process; a missing module makes only this row an error.
- `generate compiled` (--compile with `generate` in --paths): generate inside the same context,
  as `mbpo-bench eval --compile` runs it (vision tower compiled, LM layers eager on the KV cache),
  texts checked against the eager generate row.
`--static-cache`: a `generate, static cache` row per batch size > 1 (StaticCache, eager decode:
rollout_speed's `static-eager`), texts checked against the default DynamicCache row.
`--generate-anatomy`: one generate batch at the largest batch size split into set-up, prefill
(vision apart), decode forwards and the rest (generate_anatomy.py), eager.
`--max-batch-tokens N`: batch sizes > 1 capped by the eval's token budget (its own rule), what a
batch of large images becomes under `mbpo-bench eval`'s default.
`--paths` picks the rows (`generate` is the reference of the checks); `--no-stock` skips the
stock wrapper (a profiling call: the markdown points to the committed comparison instead).
`--profile`: torch.profiler on the largest batch of prefill-choice (and of the compiled row):
operator classes, wall time, device-busy share (profile_ops.py), plus the batch's anatomy
(eval_anatomy.py): CPU input preparation vs vision tower vs language model, in seconds.
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
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lmms_stock
from bench_models import build
from eval_rows import (
    CHOICES,
    PATHS,
    ROOFLINE_FLOPS,
    Counts,
    Row,
    State,
    agreement,
    best_row,
    choice_ids,
    count_parameters,
    greedy,
    identical,
    make_prompts,
    measure,
    parse_yesno,
    plant_answer_head,
    prefill_choice,
    prompt_lengths,
    remember,
    sample_flops,
    score_choice,
    to_markdown,
    write,
)

from mbpo_bench.models import Prompt


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

    w = 0 if b == 1 else args.input_workers  # batch 1: inputs in the main process, as stock
    texts = None
    if "generate" in args.paths:
        texts = measure(
            state, row("generate", p + n - 1, n, 1), lambda: greedy(vlm, prompts, first, b, n, w),
            lambda: greedy(vlm, prompts, items, b, n, w), args, vlm.hf_model,
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
    if texts is not None and args.static_cache:
        static_row(vlm, prompts, items, row("generate, static cache", p + n - 1, n, 1), texts,
                   state, args)  # fmt: skip
    if "prefill-choice" in args.paths:
        prefill_row(vlm, prompts, items, row("prefill-choice", p, 1, 1), state, args)
        if args.input_workers and b == max(args.sizes):  # the same row, inputs in-process
            prefill_row(vlm, prompts, items, row(NO_WORKERS, p, 1, 1), state, args)
    if "score-choice" in args.paths:
        score_row(vlm, prompts, items, row("score-choice", 2 * (p + 2), 4, 2), state, args)
    write(state, args.out)


def static_row(
    vlm: Any, prompts: list[Prompt], items: list[int], row: Row, texts: list[str], state: State,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Greedy generate with transformers' StaticCache, decode eager (rollout_speed's
    `static-eager`): the KV cache allocated once a call and written in place, where the
    default DynamicCache concatenates every layer's keys and values at every step."""
    from mbpo_bench.models.rollout_speed import GenerationSpeed

    b, n, w = row.batch, args.new_tokens, args.input_workers
    speed = GenerationSpeed(cache="static", compile=False)
    static = measure(
        state, row, lambda: greedy(vlm, prompts, items[:b], b, n, w, speed),
        lambda: greedy(vlm, prompts, items, b, n, w, speed), args, vlm.hf_model,
    )  # fmt: skip
    if static is not None:
        same = sum(static[i] == texts[i] for i in items)
        parsed = sum(parse_yesno(static[i]) == parse_yesno(texts[i]) for i in items)
        row.check = (f"= dynamic-cache generate: texts {same}/{len(items)}, parsed answers "
                     f"{parsed}/{len(items)}")  # fmt: skip
        write(state, args.out)


def prefill_row(
    vlm: Any, prompts: list[Prompt], items: list[int], row: Row, state: State,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Time prefill-choice over `items`; check its answers against greedy (and, compiled,
    against the eager row). The compiled row warms up on the whole pass (every padded length)."""
    b = row.batch
    first = items if row.path.endswith("compiled") else items[:b]
    w = 0 if row.path == NO_WORKERS else args.input_workers
    choice = measure(
        state, row, lambda: prefill_choice(vlm, prompts, first, b, w),
        lambda: prefill_choice(vlm, prompts, items, b, w), args, vlm.hf_model,
    )  # fmt: skip
    if choice is None:
        return
    remember(state, f"{row.path} batch {b}", items, [choice[i] for i in items])
    texts = state.texts.get(b)
    checks = [agreement([choice[i] for i in items], [texts[i] for i in items])] if texts else []
    eager = state.answers.get(f"prefill-choice batch {b}", {})
    if row.path != "prefill-choice" and eager:
        same = sum(eager.get(i) == choice[i] for i in items)
        checks.append(f"= eager prefill-choice answers {same}/{len(items)}")
    row.check = "; ".join(checks)


def score_row(
    vlm: Any, prompts: list[Prompt], items: list[int], row: Row, state: State,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    b, first = row.batch, items[: row.batch]
    w = args.input_workers
    scored = measure(
        state, row, lambda: score_choice(vlm, prompts, first, b, w),
        lambda: score_choice(vlm, prompts, items, b, w), args, vlm.hf_model,
    )  # fmt: skip
    if scored is not None:
        remember(state, f"score-choice batch {b}", items, [scored[0][i] for i in items])
    texts = state.texts.get(b)
    if scored is not None and texts is not None:
        greedy_items = [texts[i] for i in items]
        row.check = (
            "first token " + agreement([scored[0][i] for i in items], greedy_items)
            + "; answer+EOS sum " + agreement([scored[1][i] for i in items], greedy_items)
        )  # fmt: skip


NO_WORKERS = "prefill-choice, inputs in-process"  # the row without the loader's workers
TINY_QWEN_SIDE = 112  # a multiple of the tiny patch unit (16) and of qwen_vl_utils' factor (28)


def build_model(args: argparse.Namespace, tmp: Path) -> Any:
    if args.shape == "tiny" and args.family.startswith("qwen") and args.stock_samples:
        from mbpo_bench.models import build_tiny_model, load_model

        folder = build_tiny_model(args.family, tmp / args.family, image_size=TINY_QWEN_SIDE)
        vlm = load_model(folder, device=args.device)
        vlm.name = f"tiny {args.family}"
        return vlm
    return build(args.shape, args.family, args.device, tmp)


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
                        lambda: lmms_stock.generate(lm, reqs), args, lm.model)  # fmt: skip
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


COMMITTED = Path(__file__).resolve().parents[1] / "reports" / "perf" / "h200"


def committed_peer(shape: str) -> str:
    """Where the stock-wrapper comparison of this shape is committed (from an earlier run)."""
    path = COMMITTED / f"eval_{shape}.md"
    rel = path.relative_to(COMMITTED.parents[2])
    if path.exists():
        return f"the peer figure on this workload is committed in `{rel}`"
    return f"no peer figure is committed for shape {shape} (the 7B shapes: {rel.parent}/eval_*.md)"


def peer_header(args: argparse.Namespace) -> str:
    if args.no_stock:
        return (f"stock wrapper NOT run in this call (--no-stock: a profiling call); "
                f"{committed_peer(args.shape)}")  # fmt: skip
    if args.stock_samples:
        return ("the stock wrapper runs in this run (row `lmms-eval ... (stock)`, section below); "
                "`generate` at batch 1 is our own batch-1 path")  # fmt: skip
    return ("stock wrappers not run (--stock-samples 0); `generate` at batch 1 stands in for them "
            "(their default and, for llava_hf, only batch size)")  # fmt: skip


def make_header(
    vlm: Any, prompts: list[Prompt], counts: Counts, lengths: list[int], args: argparse.Namespace
) -> dict[str, str]:
    import transformers

    device = args.device
    dev = torch.cuda.get_device_name() if device.startswith("cuda") else platform.machine()
    sample = lengths[: args.samples]
    p, n = float(np.mean(sample)), args.new_tokens
    gen = sample_flops(counts, p + n - 1, n, 1)
    total = sum(x.numel() for x in vlm.hf_model.parameters())
    image = prompts[0].image
    seen = vlm.processed_size(image)
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "shape": args.shape,
        "model": f"{vlm.name} ({vlm.family}, {total / 1e6:.1f}M params: decoder layers "
        f"{counts.body / 1e6:.1f}M, vocabulary projection {counts.head / 1e6:.1f}M, vision "
        f"{counts.vision / 1e6:.1f}M; {vlm.dtype})",
        "images": f"{image.size[0]}x{image.size[1]} random pixels, protocol {vlm.protocol}: the "
        f"model sees {seen[1]}x{seen[0]}, {vlm.num_image_tokens(seen)} image tokens, "
        f"{counts.vision_tokens} vision-tower tokens",
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
        "input preparation": f"batches > 1: {args.input_workers} DataLoader worker processes "
        "(mbpo_bench/evaluation/loader.py, as `mbpo-bench eval --set input_workers=N` runs; the "
        "protocol's image step for batch k+1 while the model runs batch k, pinned, non-blocking "
        "copies); batch 1 and "
        f"the row `{NO_WORKERS}`: in the main process"
        if args.input_workers
        else "in the main process (--input-workers 0)",
        "lmms-eval": peer_header(args),
        "timing": "one warm-up call on the first batch, then one timed pass over all samples"
        + ("; CPU shared with other jobs, expect noise" if device == "cpu" else ""),
    }


def image_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise argparse.ArgumentTypeError(f"image size '{text}' is not WxH, e.g. 640x480")
    return int(w), int(h)


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
    parser.add_argument("--image-size", type=image_size, default=None,
                        help="WxH of the random images (default: the model's square side); the "
                        "model's input protocol (native) does the geometry")  # fmt: skip
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="cap each batch size > 1 at the prompts that fit this many prompt "
                        "tokens (image + question), the eval's own rule (plan.token_chunks; "
                        "`mbpo-bench eval` defaults to 32768): the batch large images get")  # fmt: skip
    parser.add_argument("--plant-scale", type=float, default=1000.0)
    parser.add_argument("--input-workers", type=int, default=None,
                        help="worker processes preparing batch inputs (default: 0 on CPU, "
                        "loader.available_workers() on CUDA, up to 8, beside the in-process row; "
                        "eval itself defaults to 0)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--profile", action="store_true",
                        help="append a torch.profiler breakdown of one prefill-choice batch "
                             "at the largest batch size (matmul / attention / other, busy "
                             "share) and its anatomy (input preparation / vision / LM)")  # fmt: skip
    parser.add_argument("--static-cache", action="store_true",
                        help="one more generate row per batch size > 1 with transformers' "
                             "StaticCache (eager decode), texts checked against the default")  # fmt: skip
    parser.add_argument("--generate-anatomy", action="store_true",
                        help="split one generate batch at the largest batch size into set-up, "
                             "prefill (vision inside), decode steps and the rest "
                             "(generate_anatomy.py), eager")  # fmt: skip
    parser.add_argument("--paths", default=",".join(PATHS),
                        help="rows to measure, comma-separated from " + ", ".join(PATHS))  # fmt: skip
    parser.add_argument("--no-stock", action="store_true",
                        help="skip lmms-eval's stock wrapper (its figure is committed)")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="one more prefill-choice row per batch size with compiled_layers "
                             "(mbpo_bench.models.compile) active")  # fmt: skip
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend for --compile (eager: wiring tests)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mbpo_bench.evaluation.loader import available_workers, default_workers
    from mbpo_bench.models.loading import resolve_device

    args.device = resolve_device(args.device)
    if args.input_workers is None and args.device.startswith("cuda"):
        args.input_workers = available_workers()  # the workers row beside the in-process one
    args.input_workers = default_workers(args.device, args.input_workers)
    args.baseline_samples = min(args.baseline_samples, args.samples)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        parser.error(f"--paths: unknown {unknown}; choose from {', '.join(PATHS)}")
    args.sizes = [int(b) for b in args.batch_sizes.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        vlm = build_model(args, Path(tmp))
    plant_answer_head(vlm, args.plant_scale, args.seed)
    prompts = make_prompts(args.samples, args.image_size or vlm.image_size, args.seed)
    k = 0 if args.no_stock else min(args.stock_samples, args.samples)
    peer = lmms_stock.prepare(vlm, prompts, k)  # k = 0: only the prompts as the peer sees them
    lengths = prompt_lengths(vlm, prompts)
    counts = count_parameters(vlm, prompts[0].image)
    state = State(header=make_header(vlm, prompts, counts, lengths, args))
    if args.max_batch_tokens:
        state.header["batch sizes"] = cap_batch_sizes(vlm, prompts, lengths, args)
    for b in args.sizes:
        run_batch_size(vlm, prompts, lengths, counts, b, state, args)
    if args.profile:
        profile_batch(vlm, prompts, lengths, counts, state, args, compiled=False)
    if args.generate_anatomy and "generate" in args.paths:
        generate_section(vlm, prompts, lengths, counts, state, args)
    if args.compile:
        run_compiled(vlm, prompts, lengths, counts, state, args)
    if args.no_stock:
        state.peer_title = "lmms-eval's stock wrapper: not run in this call"
        state.peer.append(peer_header(args))
    elif peer.error:
        summarize_peer(state, peer, None)
    else:
        run_stock(vlm, peer, prompts, lengths, counts, state, args)
    write(state, args.out)
    print(to_markdown(state))
    return 0


def run_stock(
    vlm: Any, peer: lmms_stock.Peer, prompts: list[Prompt], lengths: list[int], counts: Counts,
    state: State, args: argparse.Namespace,
) -> None:  # fmt: skip
    """Save our model for the stock wrapper, free ours, run the wrapper on the saved copy."""
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


def cap_batch_sizes(
    vlm: Any, prompts: list[Prompt], lengths: list[int], args: argparse.Namespace
) -> str:
    """Batch sizes > 1 cut to the largest batch the eval's token budget lets through (its own
    rule and cost: image tokens + question tokens a prompt, over prompts in length order);
    rewrites args.sizes and says what it did."""
    from mbpo_bench.evaluation.plan import token_chunks

    tok = vlm.tokenizer
    items = sorted_items(lengths, args.samples)
    cost = [vlm.num_image_tokens(vlm.processed_size(prompts[i].image))
            + len(tok(prompts[i].text, add_special_tokens=False)["input_ids"])
            for i in items]  # fmt: skip
    said = []
    for k, b in enumerate(args.sizes):
        if b > 1:
            chunks = token_chunks(items, cost, b, args.max_batch_tokens)
            args.sizes[k] = max(len(c) for c in chunks)
            said.append(f"{b} -> {args.sizes[k]}")
    return (f"capped by --max-batch-tokens {args.max_batch_tokens} (the eval's token budget, "
            f"mbpo_bench.evaluation.plan.token_chunks; {min(cost)}-{max(cost)} image + question "
            f"tokens a prompt): batch {', '.join(said)} prompts")  # fmt: skip


def sorted_items(lengths: list[int], n: int) -> list[int]:
    return sorted(range(n), key=lambda i: (lengths[i], i))


def profile_batch(
    vlm: Any, prompts: list[Prompt], lengths: list[int], counts: Counts, state: State,
    args: argparse.Namespace, *, compiled: bool,
) -> None:  # fmt: skip
    """Profile and dissect the largest batch of prefill-choice (inside the caller's compiled
    context when `compiled`): operator classes and busy share, then the batch's anatomy."""
    from eval_anatomy import anatomy_lines, measure_anatomy
    from profile_ops import profile_section

    b = max(args.sizes)
    first = sorted_items(lengths, args.samples)[:b]
    label = "compiled layers" if compiled else "eager"
    state.extra.append(profile_section(
        lambda: prefill_choice(vlm, prompts, first, b), args.device,
        f"one prefill-choice batch of {len(first)} ({label})",
    ))  # fmt: skip
    write(state, args.out)
    batch = [prompts[i] for i in first]
    anatomy = measure_anatomy(vlm, batch, lambda: prefill_choice(vlm, prompts, first, b),
                              choice_ids(vlm.tokenizer), args.device)  # fmt: skip
    vision = 2.0 * counts.vision * counts.vision_tokens * len(first)
    lm = 2.0 * counts.body * sum(lengths[i] for i in first) + 2.0 * counts.head * len(first)
    title = f"{len(first)} prompts ({label})"
    state.extra.append("\n".join(anatomy_lines(anatomy, title, vision, lm, ROOFLINE_FLOPS)))
    write(state, args.out)


def generate_section(
    vlm: Any, prompts: list[Prompt], lengths: list[int], counts: Counts, state: State,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """The anatomy of one eager generate batch at the largest batch size (generate_anatomy.py)."""
    from generate_anatomy import generate_lines, measure_generate

    b = max(args.sizes)
    first = sorted_items(lengths, args.samples)[:b]
    n = args.new_tokens
    p = float(np.mean([lengths[i] for i in first]))
    try:
        a = measure_generate(
            vlm.hf_model, lambda: greedy(vlm, prompts, first, b, n), args.device, repeats=1
        )
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        state.extra.append(f"## Anatomy of one generate batch: out of GPU memory at batch {b}")
        return
    prefill = len(first) * sample_flops(counts, p, 1, 1)
    title = f"{len(first)} prompts, {n} new tokens (eager, inputs in-process)"
    state.extra.append("\n".join(generate_lines(a, title, prefill, ROOFLINE_FLOPS)))
    write(state, args.out)


def generate_compiled_rows(
    vlm: Any, prompts: list[Prompt], lengths: list[int], counts: Counts, state: State,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """`generate` inside the compiled context (as `mbpo-bench eval --compile` runs it): the LM
    layers get a KV cache and run eager, the vision tower compiled; texts checked against the
    eager generate row."""
    n = args.new_tokens
    items = sorted_items(lengths, args.samples)
    p = float(np.mean([lengths[i] for i in items]))
    for b in [b for b in args.sizes if b > 1]:
        row = Row("generate compiled", b, len(items), flops=sample_flops(counts, p + n - 1, n, 1))
        w = args.input_workers
        texts = measure(
            state, row, lambda b=b, w=w: greedy(vlm, prompts, items[:b], b, n, w),
            lambda b=b, w=w: greedy(vlm, prompts, items, b, n, w), args, vlm.hf_model,
        )  # fmt: skip
        eager = state.texts.get(b)
        if texts is None or eager is None:
            continue
        same = sum(texts[i] == eager[i] for i in items)
        parsed = sum(parse_yesno(texts[i]) == parse_yesno(eager[i]) for i in items)
        row.check = (
            f"= eager generate: texts {same}/{len(items)}, parsed answers {parsed}/{len(items)}"
        )
        write(state, args.out)


def run_compiled(
    vlm: Any, prompts: list[Prompt], lengths: list[int], counts: Counts, state: State,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """The candidate fix in the same process: prefill-choice rows with compiled layers, then
    (with --profile) the compiled batch's profile and anatomy; notes on compile time and dynamo."""
    from bench_compile import dynamo_delta, dynamo_snapshot, load_compiled_layers

    sizes = [b for b in args.sizes if b > 1]
    items = sorted_items(lengths, args.samples)
    p = float(np.mean([lengths[i] for i in items]))
    flops = sample_flops(counts, p, 1, 1)
    notes = [f"`compiled_layers(vlm, backend={args.compile_backend!r}, qwen_vision=True)` "
             "around the rows below (LLaVA: LM + CLIP layers; Qwen: LM layers + the vision "
             "blocks whole, their attention one batched call when a batch's images share one "
             "size, else each block's MLP: mbpo_bench/models/compile.py, qwen_vision.py)"]  # fmt: skip
    try:
        compiled_layers = load_compiled_layers()
    except RuntimeError as exc:
        for b in sizes:
            state.rows.append(Row("prefill-choice compiled", b, len(items), flops=flops,
                                  error=str(exc).replace("|", "/")))  # fmt: skip
        state.extra.append("\n".join(["## Compiled layers (--compile)", "", f"- {exc}"]))
        write(state, args.out)
        return
    before = dynamo_snapshot()
    section = len(state.extra)
    state.extra.append("")  # the notes go here once known; profiles follow
    import inspect

    qwen = (
        {"qwen_vision": True}
        if "qwen_vision" in inspect.signature(compiled_layers).parameters
        else {}
    )
    with compiled_layers(vlm, backend=args.compile_backend, **qwen):
        for b in sizes:
            row = Row("prefill-choice compiled", b, len(items), flops=flops)
            prefill_row(vlm, prompts, items, row, state, args)
            eager = next((r for r in state.rows if r.path == "prefill-choice" and r.batch == b
                          and not r.error), None)  # fmt: skip
            if not row.error:
                vs = f"; x eager {row.rate / eager.rate:.2f}" if eager else ""
                notes.append(f"batch {b}: warm-up pass {row.warm_seconds:.1f} s (compilation "
                             f"included), timed pass {row.seconds:.2f} s: compile ~"
                             f"{row.warm_seconds - row.seconds:.1f} s{vs}")  # fmt: skip
        if "generate" in args.paths:
            generate_compiled_rows(vlm, prompts, lengths, counts, state, args)
        notes.append(dynamo_delta(before) + " during the compiled rows")
        state.extra[section] = "\n".join(["## Compiled layers (--compile)", "",
                                          *[f"- {n}" for n in notes]])  # fmt: skip
        write(state, args.out)
        if args.profile and any(not r.error for r in state.rows if r.path.endswith("compiled")):
            profile_batch(vlm, prompts, lengths, counts, state, args, compiled=True)


if __name__ == "__main__":
    raise SystemExit(main())
