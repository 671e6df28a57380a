"""One GRPO step of our trainer on 7B-shaped models: rollout, reference log-probs, update.

    python3 benchmarks/bench_grpo_step.py --shape llava-7b --device cuda --out $OUT/grpo_llava.md
    python3 benchmarks/bench_grpo_step.py --shape tiny --device cpu --prompts 2 \\
        --new-tokens 8 --grad-accum 2 --out /tmp/grpo_tiny.md
    python3 benchmarks/bench_grpo_step.py --shape llava-7b --device cuda \\
        --variants default,merged,merged+static,merged+static+shared --out $OUT/grpo_llava.md

Rollout speed variants (`GRPOSettings` fields, `mbpo_bench.models.rollout_speed`): `merged`
(--merge-lora-rollout: LoRA folded into fresh copies of the base weights while sampling),
`static` (--rollout-cache static: StaticCache, decode compiled by transformers on CUDA;
`static-eager` with --no-rollout-compile), `shared` (--shared-prefill: one prefill per prompt,
KV cache repeated G times), joined with "+". `--variants a,b,...` runs each in turn on the same
model (built once) and items, each with its own warm-up step and fresh optimizer, into one
report with a side-by-side summary; without it the flags make the single variant.
A variant token `compile` (e.g. `merged+static+shared+compile`; --compile-layers for the single
variant) sets the variant's `RuntimeConfig.compile_layers`, handed to the policy as the trainer
does (`Policy.compile_layers`), so `policy_update`'s own `policy.compiled()` runs the reference
and update passes through `compiled_layers` (mbpo_bench.models.compile); the bench wraps them once
more only to pass --compile-backend (a nested compiled_layers is a no-op). The token is not a
rollout option (stripped before `parse_label`); the compilation happens in the variant's warm-up
step, whose extra seconds and dynamo's counters are stated in the notes, so the timed steps
exclude it. A missing module or field makes only that variant an error line. A token `packed`
(--packed-scoring for the single variant) sets `GRPOSettings.packed_scoring`: the reference and
update passes score each group's answers behind one copy of its prompt (`models.packing`).

`--profile`: each variant's reference and update phases, each under its own profiler section
(operator split and device-busy share; grpo_phases.py), on its last rollout; the last variant's
rollout too. `--update-only N`: N more updates (reference included) + optimizer steps per variant
on its last rollout, no rollout in between: a steadier update tokens/s than the timed steps give.
Both run right after their variant's steps, so a time limit hit later keeps them.

The measured code is the trainer's own: `trainers.grpo.rollout` (G sampled completions per
prompt through `VisionLanguageModel.generate`, verifier rewards), `trainers.grpo.policy_update`
(advantages; per micro-batch the reference log-probs with the adapter disabled, the policy
log-probs with gradients, the clipped surrogate + k3 KL, backward) and the loop's
`optimizer_step` (gradient clipping, AdamW, schedule). The model is the random-weight 7B shape of
`bench_models.build` (bf16 on the GPU) with a fresh LoRA adapter (`apply_lora`, r=64, alpha=128,
every language-model linear). Phases:
- rollout: `rollout()` (image decode, generate, rewards), with min_new_tokens = max_new_tokens
  injected into `generate` so every completion has exactly `--new-tokens` tokens;
- reference: the reference forwards inside `policy_update` (timed by wrapping
  `Policy.reference`); the old policy needs no forward (one update per batch, ratio 1); each
  micro-batch's inputs (template, tokens, pixels) are prepared once before it, for both passes,
  and that preparation counts in the update;
- update: the rest of `policy_update` (policy forward + backward) plus the optimizer step.
Each phase is bracketed by a device synchronisation. One warm-up step, then `--steps` timed ones.

Stand-in tokenizer: the random model samples from the whole 32k/152k vocabulary, but the tiny
tokenizer knows ~470 tokens and byte tokens do not round-trip through decode/encode. Sampling is
therefore restricted (generation_config.suppress_tokens) to the tokenizer's whole-word tokens
(" word" that encodes back to itself), so the update re-tokenizes completions to the sampled
length. A real checkpoint needs no restriction; the suppression costs one masked fill per step.

Counting: tokens/s = sequences x (prompt + completion) tokens / step seconds (the verl/EasyR1
convention; completion = the sampled `--new-tokens`). Update MFU = 4 * N_body * T / seconds /
790 TFLOP/s with T = the tokens the update's forwards run: the sequences' prompt + completion +
EOS tokens, or with packed scoring each micro-batch's prompts once plus the completions (the
"update tokens/s" column keeps the sequences' count, the workload's). A frozen base with LoRA runs
the forward (2N) and the activation gradients (2N) but no weight gradients; N_body = decoder
layers (the vocabulary projection runs only at completion positions, the vision tower without
gradients: neither is counted, nor attention scores or the LoRA matmuls, so the MFU is a lower
bound). Decode memory bound: (LM weights + LoRA + KV cache at the mean context) / 4.3 TB/s.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import build, sync
from grpo_report import (
    ROOFLINE_FLOPS,
    StepRow,
    make_header,
    mean_row,
    step_line,
    to_markdown,
    trl_note,
    write,
)
from mbpo_bench.trainers.policy import Policy, autocast_enabled

from mbpo_bench.data.items import TaskItem
from mbpo_bench.models.lora import LoraSettings, apply_lora
from mbpo_bench.models.rollout_speed import GenerationSpeed, parse_label

BANDWIDTH = 4.3e12  # bytes/s, HBM bandwidth measured on the H200 (issue 8)
QUESTION = "Is there a {} in the image?\nAnswer the question using a single word or phrase."
OBJECTS = ("dog", "cat", "person", "traffic light", "dining table", "umbrella", "car", "bench")


@dataclass
class TimedPolicy(Policy):
    """The trainer's Policy; time spent inside `reference()` (synchronised) is accumulated, and
    the peak memory inside it apart from the peak of the update around it."""

    device: str = "cpu"
    ref_seconds: float = 0.0
    ref_peak: float | None = None  # GiB, max over this step's reference passes
    update_peak: float | None = None  # GiB, the update's peak up to the last reference pass

    def reset_step(self) -> None:
        self.ref_seconds, self.ref_peak, self.update_peak = 0.0, None, None

    @contextlib.contextmanager
    def reference(self) -> Iterator[Any]:
        sync(self.device)
        self.update_peak = _max(self.update_peak, peak_gib(self.device))
        start = time.perf_counter()
        with super().reference() as ref:
            yield ref
        sync(self.device)
        self.ref_seconds += time.perf_counter() - start
        self.ref_peak = _max(self.ref_peak, peak_gib(self.device))


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class Variant:
    """One rollout-speed configuration's steps (warm-up first) and its decode probe."""

    speed: GenerationSpeed
    settings: Any  # GRPOSettings carrying `speed`
    compile: bool = False  # the `compile` token: runtime.compile_layers
    packed: bool = False  # the `packed` token: grpo.packed_scoring
    runtime: Any = None  # RuntimeConfig (None when it could not be made; see error)
    error: str = ""  # why the variant did not run
    rows: list[StepRow] = field(default_factory=list)
    decode: str = ""  # the decode probe's line
    decode_ms: float = float("nan")
    bound_ms: float = float("nan")
    last: tuple[Any, int] | None = None  # the last step's rollout and its prompt tokens

    @property
    def label(self) -> str:
        return (self.speed.label() + ("+compile" if self.compile else "")
                + ("+packed" if self.packed else ""))  # fmt: skip


@dataclass
class Bench:
    policy: TimedPolicy
    items: list[TaskItem]
    args: argparse.Namespace
    header: dict[str, str] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)
    generate_seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # appended sections (profile)
    compiled_layers: Callable[..., Any] | None = None  # mbpo_bench.models.compile's, if needed
    update_runs: dict[str, list[Any]] = field(default_factory=dict)  # --update-only, by variant
    update_section: int | None = None  # its index in `extra`

    def layers(self, var: Variant) -> contextlib.AbstractContextManager[Any]:
        """Make `var` the policy's configuration (`Policy.compile_layers` from its runtime: the
        trainer's own `policy.compiled()` inside `policy_update`) and return the bench's outer
        context, which only adds --compile-backend: an inner compiled_layers on layers already
        compiled is a no-op, so the outer backend holds (inductor, the trainer's, by default)."""
        on = bool(getattr(var.runtime, "compile_layers", False))
        self.policy.compile_layers = on
        if self.compiled_layers is None or not on:
            return contextlib.nullcontext()
        return self.compiled_layers(self.policy.vlm, enabled=True,  # type: ignore[no-any-return]
                                    backend=self.args.compile_backend,
                                    vision=self.policy.compile_vision)  # fmt: skip


def word_tokens(tok: Any) -> list[int]:
    """Ids of " word" tokens that encode back to themselves (safe to concatenate and re-encode)."""
    out = []
    for i in range(len(tok)):
        text = tok.decode([i])
        if re.fullmatch(r" [a-z]+", text) and tok(text, add_special_tokens=False)["input_ids"] == [
            i
        ]:
            out.append(i)
    return out


def restrict_sampling(vlm: Any) -> int:
    """Suppress every vocabulary id but the tokenizer's word tokens; returns how many remain."""
    allowed = set(word_tokens(vlm.tokenizer))
    vocab = vlm.hf_model.lm_head.weight.shape[0]
    vlm.hf_model.generation_config.suppress_tokens = [i for i in range(vocab) if i not in allowed]
    return len(allowed)


def instrument_generate(vlm: Any, new_tokens: int, record: list[float], device: str) -> None:
    """`generate` with min_new_tokens = max_new_tokens by default, its time appended to record
    (wraps `generate_completions`, which `generate` and the GRPO rollout both go through)."""
    original = vlm.generate_completions

    def generate(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("min_new_tokens", new_tokens)
        sync(device)
        start = time.perf_counter()
        out = original(*args, **kwargs)
        sync(device)
        record.append(time.perf_counter() - start)
        return out

    vlm.generate_completions = generate


def make_items(n: int, side: int, folder: Path, seed: int) -> list[TaskItem]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        path = folder / f"{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        items.append(
            TaskItem(task="bench", doc_id=str(i), question=QUESTION.format(OBJECTS[i % 8]),
                     target="yes" if i % 2 else "no", verifier="yesno", image_path=path)
        )  # fmt: skip
    return items


def prompt_tokens(vlm: Any, items: list[TaskItem]) -> list[int]:
    from mbpo_bench.trainers.data import item_prompts

    prompts = item_prompts(items)
    return [len(ids) for ids in vlm.prompt_ids(vlm.render(prompts, True))]


def peak_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    value = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return value


def run_step(bench: Bench, var: Variant, step: int, opt: tuple[Any, Any, Any, Any]) -> StepRow:
    """One trainer step on this step's prompts, phase by phase."""
    from mbpo_bench.trainers import grpo
    from mbpo_bench.trainers.loop import optimizer_step

    params, optimizer, scheduler, cfg = opt
    a, policy, s = bench.args, bench.policy, var.settings
    items = bench.items[step * a.prompts : (step + 1) * a.prompts]
    row = StepRow(step=step)
    policy.reset_step()
    peak_gib(a.device)
    sync(a.device)
    c0 = compile_seconds()
    t0 = time.perf_counter()
    ro = grpo.rollout(policy, items, [], s, None)
    sync(a.device)
    t1 = time.perf_counter()
    c1 = compile_seconds()
    row.compile_rollout = {k: c1[k] - c0.get(k, 0.0) for k in c1}
    row.rollout, row.generate = t1 - t0, bench.generate_seconds[-1]
    row.peak_rollout = peak_gib(a.device)
    with bench.layers(var):
        res = grpo.policy_update(policy, ro, s, a.grad_accum)
    optimizer_step(params, optimizer, scheduler, cfg, step, res.loss, None)
    sync(a.device)
    row.reference = policy.ref_seconds
    row.update = time.perf_counter() - t1 - row.reference
    c2 = compile_seconds()
    row.compile_update = {k: c2[k] - c1.get(k, 0.0) for k in c2}
    row.peak_update = _max(policy.update_peak, peak_gib(a.device))
    row.peak_reference = policy.ref_peak
    row.loss = res.loss
    prompt_sum = a.generations * sum(prompt_tokens(policy.vlm, items))
    var.last = (ro, prompt_sum)
    row.tokens = prompt_sum + a.generations * len(items) * a.new_tokens
    row.update_tokens = prompt_sum + res.tokens
    row.completion_tokens = res.tokens
    if s.packed_scoring:
        lengths = prompt_tokens(policy.vlm, items)
        row.model_tokens = packed_prompt_tokens(ro, lengths, a.grad_accum) + res.tokens
    return row


def packed_prompt_tokens(ro: Any, lengths: list[int], grad_accum: int) -> int:
    """Prompt tokens the packed update runs: each group's prompt once per micro-batch that holds
    any of its samples (`policy_update`'s split: consecutive chunks of ceil(n / grad_accum))."""
    owner = [g for g, group in enumerate(ro.groups) for _ in group.samples]
    size = -(-len(owner) // grad_accum)
    chunks = [set(owner[k : k + size]) for k in range(0, len(owner), size)]
    return sum(lengths[g] for chunk in chunks for g in chunk)


def body_parameters(vlm: Any) -> int:
    """Decoder-layer parameters of the base language model (no embeddings, no LoRA)."""
    lm = vlm.hf_model.model.language_model
    embed = lm.get_input_embeddings().weight.numel()
    return sum(p.numel() for n, p in lm.named_parameters() if "lora_" not in n) - embed


def decode_bound(bench: Bench, var: Variant, body: int, mean_prompt: float) -> None:
    """Measured decode step (generate minus a 1-token prefill probe, same speed options) against
    its memory bound; fills `var.decode`, `var.decode_ms`, `var.bound_ms`."""
    from mbpo_bench.trainers.data import item_prompts

    a, vlm = bench.args, bench.policy.vlm
    prompts = item_prompts(bench.items[: a.prompts])
    bench.policy.train_mode(False)
    with torch.no_grad():
        vlm.generate(prompts, max_new_tokens=1, min_new_tokens=1, do_sample=True,
                     num_samples=a.generations, batch_size=a.prompts, speed=var.speed)  # fmt: skip
    prefill = bench.generate_seconds[-1]
    timed = [r.generate for r in var.rows[1:] if not r.error] or [var.rows[0].generate]
    step = (float(np.mean(timed)) - prefill) / max(a.new_tokens - 1, 1)
    tc = vlm.hf_model.config.text_config
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    size = torch.finfo(vlm.dtype).bits // 8
    rows = a.prompts * a.generations
    context = mean_prompt + a.new_tokens / 2
    kv = rows * context * 2 * tc.num_hidden_layers * tc.num_key_value_heads * head_dim * size
    head = vlm.hf_model.lm_head.weight.numel()
    lora = sum(p.numel() * p.element_size() for p in vlm.model.parameters() if p.requires_grad)
    weights = (body + head) * size + (0 if var.speed.merge_lora else lora)
    bound = (weights + kv) / BANDWIDTH
    var.decode_ms, var.bound_ms = 1e3 * step, 1e3 * bound
    var.decode = (
        f"{rows} rows: 1-token prefill probe {prefill:.3f} s; decode step ~{1e3 * step:.1f} ms "
        f"((generate - prefill) / {a.new_tokens - 1}); memory bound {1e3 * bound:.1f} ms = "
        f"(LM weights {weights / 1e9:.1f} GB {'merged' if var.speed.merge_lora else 'incl. LoRA'}"
        f" + KV cache {kv / 1e9:.1f} GB at the mean context {context:.0f}) / "
        f"{BANDWIDTH / 1e12:.1f} TB/s; ratio {step / bound:.2f}x"
    )


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    """The workload both GRPO-step benchmarks share (ours here, TRL's in bench_grpo_trl.py)."""
    parser.add_argument("--shape", default="tiny", choices=["tiny", "llava-7b", "qwen2vl-7b"])
    parser.add_argument("--family", default="llava", help="tiny shape only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompts", type=int, default=8, help="prompts (groups) per step")
    parser.add_argument("--generations", type=int, default=8, help="G")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    parser.add_argument("--grad-accum", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--lora-alpha", type=int, default=128)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(parser)
    parser.add_argument("--no-tf32", action="store_true",
                        help="fp32 matmuls (the LoRA adapters) without TF32, as before "
                             "runtime.tf32 existed (the trainer's default is TF32 on)")  # fmt: skip
    parser.add_argument("--autocast", default="auto", choices=["auto", "on", "off"],
                        help="runtime.autocast: reference and update forwards under bf16 "
                             "autocast (auto: a bf16 model on CUDA, as the trainer)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument(
        "--merge-lora-rollout",
        action="store_true",
        help="sample with LoRA merged into copies of the base weights",
    )
    parser.add_argument("--rollout-cache", default="dynamic", choices=["dynamic", "static"])
    parser.add_argument(
        "--no-rollout-compile",
        action="store_true",
        help="static cache without transformers' compiled decode step",
    )
    parser.add_argument(
        "--shared-prefill",
        action="store_true",
        help="one prefill per prompt, its KV cache repeated G times",
    )
    parser.add_argument("--profile", action="store_true",
                        help="profile each variant's reference and update phases (and the last "
                             "variant's rollout) one section each (matmul / attention / other, "
                             "device-busy share)")  # fmt: skip
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated rollout variants run in turn on one model, e.g. "
        "default,merged,merged+static,merged+static+shared (overrides the flags); a '+compile' "
        "part compiles the decoder layers for the reference and update passes, a '+packed' "
        "part packs each group's answers behind one copy of its prompt",
    )
    parser.add_argument("--packed-scoring", action="store_true",
                        help="single variant: grpo.packed_scoring (see --variants)")  # fmt: skip
    parser.add_argument("--compile-layers", action="store_true",
                        help="single variant: RuntimeConfig.compile_layers (see --variants)")  # fmt: skip
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend of the compiled layers (eager: wiring tests)")  # fmt: skip
    parser.add_argument("--compile-cache", default="", metavar="DIR",
                        help="torch's compile caches in DIR (runtime.compile_cache; a second "
                             "process with the same DIR reuses the compiled artifacts); empty: "
                             "torch's default folder")  # fmt: skip
    parser.add_argument("--update-only", type=int, default=0, metavar="N",
                        help="N more updates per variant on its last rollout, timed")  # fmt: skip
    args = parser.parse_args(argv)
    if args.variants:
        labels = [v for v in args.variants.split(",") if v.strip()]
        args.speeds = [parse_label(strip_compile(strip_packed(v)[0])[0]) for v in labels]
        args.compiles = [strip_compile(strip_packed(v)[0])[1] for v in labels]
        args.packs = [strip_packed(v)[1] for v in labels]
    else:
        args.speeds = [
            GenerationSpeed(
                merge_lora=args.merge_lora_rollout,
                cache=args.rollout_cache,
                compile=not args.no_rollout_compile,
                shared_prefill=args.shared_prefill,
            )
        ]
        args.compiles = [args.compile_layers]
        args.packs = [args.packed_scoring]
    return args


def strip_token(label: str, token: str) -> tuple[str, bool]:
    """("merged+static", True) for ("merged+static+compile", "compile"): `compile` and `packed`
    are not rollout options."""
    parts = [p.strip() for p in label.split("+")]
    rest = [p for p in parts if p != token]
    return "+".join(rest) or "default", len(rest) < len(parts)


def strip_compile(label: str) -> tuple[str, bool]:
    return strip_token(label, "compile")


def strip_packed(label: str) -> tuple[str, bool]:
    return strip_token(label, "packed")


def setup(args: argparse.Namespace, folder: Path) -> tuple[Bench, int, int]:
    """Model, LoRA, timed policy and items; returns (bench, N_body, allowed tokens)."""
    from mbpo_bench.trainers.grpo import GRPOSettings

    from mbpo_bench.models.common import unwrap

    vlm = build(args.shape, args.family, args.device, folder)
    body = body_parameters(vlm)
    allowed = restrict_sampling(vlm)
    apply_lora(vlm, LoraSettings(r=args.lora_r, alpha=args.lora_alpha))
    if args.gradient_checkpointing:
        unwrap(vlm.model).gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    policy = TimedPolicy(vlm=vlm, lora=True, base=vlm.name, device=args.device)
    setting = {"on": True, "off": False}.get(args.autocast, "auto")
    policy.autocast = autocast_enabled(setting, args.device, str(vlm.dtype).split(".")[-1])
    images = folder / "images"
    images.mkdir()
    items = make_items((args.steps + 1) * args.prompts, vlm.image_size, images, args.seed)
    bench = Bench(policy=policy, items=items, args=args)
    for speed, compiled, packed in zip(args.speeds, args.compiles, args.packs, strict=True):
        settings = GRPOSettings(
            num_generations=args.generations, max_new_tokens=args.new_tokens,
            generation_batch_size=args.prompts, beta=args.beta,
            merge_lora_for_rollout=speed.merge_lora, rollout_cache=speed.cache,
            rollout_compile=speed.compile, shared_prefill=speed.shared_prefill,
            packed_scoring=packed,
        )  # fmt: skip
        assert settings.generation_speed() == speed
        var = Variant(speed=speed, settings=settings, compile=compiled, packed=packed)
        make_runtime(bench, var)
        bench.variants.append(var)
    instrument_generate(vlm, args.new_tokens, bench.generate_seconds, args.device)
    return bench, body, allowed


def make_runtime(bench: Bench, var: Variant) -> None:
    """The variant's RuntimeConfig (compile_layers from its `compile` token); with compile, also
    the compiled_layers context manager, whose absence becomes the variant's error."""
    from mbpo_bench.trainers.loop import RuntimeConfig

    tf32 = not bench.args.no_tf32
    if not var.compile:
        var.runtime = RuntimeConfig(tf32=tf32)
        return
    try:
        var.runtime = RuntimeConfig(tf32=tf32, compile_layers=True)
    except TypeError as exc:
        var.error = f"not run: RuntimeConfig has no compile_layers field here ({exc})"
        return
    if bench.compiled_layers is None:
        from bench_compile import load_compiled_layers

        try:
            bench.compiled_layers = load_compiled_layers()
        except RuntimeError as exc:
            var.error = str(exc)


def optimizer_parts(bench: Bench) -> tuple[Any, Any, Any, Any]:
    from mbpo_bench.trainers.loop import OptimConfig, build_optimizer, build_scheduler

    from mbpo_bench.models.lora import trainable_parameters

    a = bench.args
    cfg = OptimConfig(lr=5e-5, steps=a.steps + 1, batch_size=a.prompts, grad_accum=a.grad_accum)
    params = list(trainable_parameters(bench.policy.vlm).values())
    optimizer = build_optimizer(params, cfg)
    return params, optimizer, build_scheduler(optimizer, cfg), cfg


def guarded(bench: Bench, what: str, fn: Callable[[], Any], catch_all: bool = False) -> Any:
    """fn(); an out-of-memory (or, with catch_all, any failure: a compile error, say) becomes a
    note and None, so the measurements before it are kept."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        bench.notes.append(f"{what}: out of GPU memory")
        torch.cuda.empty_cache()
        return None
    except Exception as exc:
        if not catch_all:
            raise
        import traceback

        traceback.print_exc()
        bench.notes.append(f"{what}: failed: {type(exc).__name__}: {exc}".splitlines()[0])
        return None


def run_variant(bench: Bench, var: Variant, body: int, lengths: list[int]) -> None:
    """Warm-up + timed steps of one variant (stops at the first failure), then its probe."""
    from bench_compile import dynamo_delta, dynamo_snapshot

    label = var.label
    if var.error:
        bench.notes.append(f"{label}: {var.error}")
        var.rows.append(StepRow(step=0, error=var.error.replace("|", "/")))
        write(bench, body)
        return
    opt = optimizer_parts(bench)
    tracked = var.compile or var.speed.cache == "static"
    counts = dynamo_snapshot() if tracked else {}
    for step in range(bench.args.steps + 1):
        before, before_caches = dynamo_snapshot(), cache_counts()
        row = guarded(bench, f"{label} step {step}",
                      functools.partial(run_step, bench, var, step, opt), var.compile)  # fmt: skip
        var.rows.append(row or StepRow(step=step, error="failed or out of GPU memory (notes)"))
        if row is not None:
            row.graphs = dynamo_snapshot()["unique graphs"] - before["unique graphs"]
        write(bench, body)
        print(step_line(var.rows[-1], label, str(step), body), flush=True)
        if row is not None:
            caches = cache_delta(before_caches)
            print(f"step {step}: {row.graphs} graph(s) compiled"
                  + (" (recompiles after step 0)" if step else "") + f"; {caches}",
                  flush=True)  # fmt: skip
            if step == 0 or row.graphs:
                split = compile_split(row)
                print(f"step {step}: {split}", flush=True)
                bench.notes.append(f"{label}, step {step}: {row.graphs} graph(s); {caches}; "
                                   f"{split}")  # fmt: skip
        if row is None:
            break
        if tracked and step in (0, bench.args.steps):
            when = "warm-up step" if step == 0 else "timed steps"
            bench.notes.append(f"{label}, {when}: {dynamo_delta(counts)}")
            counts = dynamo_snapshot()
    if var.compile:
        bench.notes.append(compile_note(var))
    bench.notes.append(first_step_note(var))
    if var.rows and not var.rows[0].error:
        probe = functools.partial(decode_bound, bench, var, body, float(np.mean(lengths)))
        guarded(bench, f"{label} decode probe", probe)
    if var.speed.cache == "static":
        bench.notes.append(f"{label}: {compile_counters()}")


def first_step_note(var: Variant) -> str:
    """The first step against the steady state (target: within 2x when the compile cache is
    warm, i.e. a second run of the same shapes), and the recompiles after step 0."""
    steady = mean_row(var.rows[1:])
    first = var.rows[0] if var.rows else None
    if steady is None or first is None or first.error:
        return f"{var.label}: first step vs steady state unknown (no steady step)"
    late = [f"step {r.step} +{r.graphs}" for r in var.rows[1:] if r.graphs]
    spent = [
        f"{name} +{a - b:.1f} s (torch.compile {c.get('entire_frame_compile', float('nan')):.1f})"
        for name, a, b, c in [
            ("rollout", first.rollout, steady.rollout, first.compile_rollout),
            ("reference + update", first.reference + first.update,
             steady.reference + steady.update, first.compile_update),
        ]
    ]  # fmt: skip
    return (f"{var.label}: first step {first.total:.2f} s = {first.total / steady.total:.2f}x the "
            f"steady state {steady.total:.2f} s (compile-cache target: within 2x on a second run); "
            f"over the steady state: {', '.join(spent)}, the rest of each is first-call work "
            "outside torch.compile (CUDA-graph recording, first kernel launches); "
            f"graphs compiled in step 0: {first.graphs}; after step 0: "
            + (", ".join(late) if late else "none"))  # fmt: skip


def compile_note(var: Variant) -> str:
    """The compile seconds of the warm-up step: its reference + update over the timed mean."""
    timed = mean_row(var.rows[1:])
    first = var.rows[0] if var.rows else None
    if timed is None or first is None or first.error:
        return f"{var.label}: compile seconds unknown (no warm-up step and timed step to compare)"
    extra = first.reference + first.update - timed.reference - timed.update
    late = sum(r.graphs for r in var.rows[1:])
    clean = ("excluded from the timed steps" if not late else
             f"timed steps compiled {late} more graph(s) (a state the warm-up step did not see, "
             "e.g. a micro-batch without padding): such a step is marked and left out of the "
             "mean unless all did; the update-only runs show their own dynamo line")  # fmt: skip
    return (f"{var.label}: layer compilation ~{extra:.1f} s (warm-up step's reference + update "
            f"{first.reference + first.update:.2f} s minus the timed mean "
            f"{timed.reference + timed.update:.2f} s); {clean}")  # fmt: skip


def profile_variant(bench: Bench, var: Variant, body: int, rollout: bool) -> None:
    """Per-phase profiles of one extra step of `var` on its last rollout (a fresh rollout of
    the last step's prompts first when `rollout`); not counted in the rows."""
    from grpo_phases import profile_sections

    a = bench.args
    if var.last is None:
        return
    phases = ("rollout", "reference", "update") if rollout else ("reference", "update")
    items = bench.items[a.steps * a.prompts : (a.steps + 1) * a.prompts]
    fn = functools.partial(
        profile_sections, bench.policy, items, var.last[0], var.settings, a.grad_accum,
        optimizer_parts(bench), a.device, var.label, functools.partial(bench.layers, var), phases,
    )  # fmt: skip
    bench.extra.extend(guarded(bench, f"{var.label} profile", fn, True) or [])
    write(bench, body)


def update_only(bench: Bench, var: Variant, body: int) -> None:
    """--update-only N: N timed updates of `var` on its last rollout, into the shared table."""
    from bench_compile import dynamo_delta, dynamo_snapshot
    from grpo_phases import update_runs, update_table

    a = bench.args
    if var.last is None:
        return
    ro, prompt_sum = var.last
    tracked = var.compile or var.speed.cache == "static"
    counts = dynamo_snapshot() if tracked else {}
    fn = functools.partial(
        update_runs, bench.policy, ro, var.settings, a.grad_accum, optimizer_parts(bench),
        a.update_only, a.device, functools.partial(bench.layers, var), prompt_sum,
    )  # fmt: skip
    bench.update_runs[var.label] = guarded(bench, f"{var.label} update-only", fn, True) or []
    if tracked:
        bench.notes.append(f"{var.label}, update-only runs: {dynamo_delta(counts)}")
    table = "\n".join(update_table(bench.update_runs, body, ROOFLINE_FLOPS))
    if bench.update_section is None:
        bench.update_section = len(bench.extra)
        bench.extra.append(table)
    bench.extra[bench.update_section] = table
    write(bench, body)


CACHE_COUNTERS = (("inductor", "fxgraph_cache_hit", "FX graph cache hits"),
                  ("inductor", "fxgraph_cache_miss", "FX graph cache misses"),
                  ("aot_autograd", "autograd_cache_hit", "AOTAutograd cache hits"),
                  ("aot_autograd", "autograd_cache_miss", "AOTAutograd cache misses"))  # fmt: skip


COMPILE_TIMERS = ("entire_frame_compile", "backend_compile", "inductor_compile")


def compile_seconds() -> dict[str, float]:
    """torch.compile's cumulative seconds in this process by dynamo's own timers: a frame's
    whole compile (dynamo tracing + backend), the backend's part (AOTAutograd + inductor, cache
    loads included) and inductor's lowering + code generation, beside every other timer torch
    keeps (named by the function it times); {} where torch lacks them."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        spent = calculate_time_spent()
    except (ImportError, AttributeError, TypeError):
        return {}
    return {**{k: 0.0 for k in COMPILE_TIMERS}, **{k: float(v) for k, v in spent.items()}}


def compile_split(row: StepRow) -> str:
    """Where a step's compile seconds went, per phase: dynamo tracing (a frame's compile minus
    its backend), the backend (AOTAutograd + inductor, cache loads), and the rest of the phase's
    extra time over the steady state is not compilation (CUDA-graph recording, first launches)."""

    def one(name: str, c: dict[str, float]) -> str:
        if not c:
            return f"{name}: no timers"
        frame, backend = c["entire_frame_compile"], c["backend_compile"]
        others = sorted(((v, k) for k, v in c.items()
                         if k not in (*COMPILE_TIMERS, "total_wall_time") and v >= 0.05),
                        reverse=True)[:4]  # fmt: skip
        return (f"{name} {frame:.1f} s in torch.compile (dynamo tracing {frame - backend:.1f}, "
                f"backend {backend:.1f}, of it inductor {c['inductor_compile']:.1f}"
                + "".join(f", {k} {v:.1f}" for v, k in others) + ")")  # fmt: skip

    return (
        one("rollout", row.compile_rollout) + "; " + one("reference + update", row.compile_update)
    )


def cache_counts() -> dict[str, int]:
    """torch's compile-cache counters so far (a second run on a warm cache: hits, no misses)."""
    from torch._dynamo.utils import counters

    return {name: int(counters[group][key]) for group, key, name in CACHE_COUNTERS}


def cache_delta(before: dict[str, int]) -> str:
    now = cache_counts()
    return "compile caches: " + ", ".join(f"{k} {now[k] - before[k]}" for k in now)


def compile_counters() -> str:
    """torch.compile's running totals (graphs compiled, CUDA-graph skips): a skip means decoding
    ran compiled but WITHOUT CUDA graphs (the launch overhead the static cache is meant to cut)."""
    from torch._dynamo.utils import counters

    stats = {"unique graphs": counters["stats"]["unique_graphs"]}
    stats.update({k: v for k, v in counters["inductor"].items() if "cudagraph" in k})
    return "torch.compile totals so far: " + ", ".join(f"{k} {v}" for k, v in stats.items())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile_cache:  # before anything compiles, as the trainer's setup_runtime
        from mbpo_bench.models.compile import use_compile_cache

        use_compile_cache(args.compile_cache)
    torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32  # as the trainer's setup_runtime
    from mbpo_bench.models.loading import resolve_device

    args.device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        bench, body, allowed = setup(args, Path(tmp))
        lengths = prompt_tokens(bench.policy.vlm, bench.items)
        bench.header = make_header(bench, body, allowed, lengths)
        for var in bench.variants:  # each variant's extras before the next variant (a
            run_variant(bench, var, body, lengths)  # time limit then keeps the earlier ones)
            if args.update_only:
                update_only(bench, var, body)
            if args.profile:
                profile_variant(bench, var, body, rollout=var is bench.variants[-1])
        done = [r for v in bench.variants for r in v.rows if not r.error]
        if done:
            per = np.mean([r.completion_tokens for r in done]) / (args.prompts * args.generations)
            bench.notes.append(f"completion tokens scored by the update: {per:.2f} each (the "
                               f"sampled ids, {args.new_tokens} sampled; EOS only where one was "
                               "sampled; compiled passes add one pad token per row, not counted)")  # fmt: skip
        if any(v.speed.cache == "static" for v in bench.variants):
            bench.notes.append("static cache: attention reads the whole preallocated cache "
                               "(prompt + new tokens rounded up to 64); the memory bound counts "
                               "the mean context only")  # fmt: skip
        bench.notes.append(trl_note())
        write(bench, body)
    print(to_markdown(bench, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
