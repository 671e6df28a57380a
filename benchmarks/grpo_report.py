"""The markdown of bench_grpo_step.py (its docstring says what is measured and how it is counted).

Step rows, the mean of the timed steps, the variants side by side, the header and notes, written
after every step so a crash keeps what was measured. Kept apart from the script so the script reads
as its runs. `StepRow` lives here because the mean row is built here; the script re-exports it.
"""

from __future__ import annotations

import importlib.util
import platform
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from bench_grpo_step import Bench

ROOFLINE_FLOPS = 790e12  # bf16 matrix rate measured on the H200 (issue 8)
TRL_WHEELS = "trl, datasets, pyarrow, dill, multiprocess, xxhash, fsspec"


@dataclass
class StepRow:
    step: int
    rollout: float = float("nan")
    generate: float = float("nan")  # part of rollout
    reference: float = float("nan")
    update: float = float("nan")
    tokens: int = 0  # prompt + sampled completion, all sequences
    update_tokens: int = 0  # prompt + re-tokenized completion + EOS, all sequences
    completion_tokens: int = 0  # re-tokenized completion + EOS, all sequences
    # tokens the update's forwards ran: update_tokens, or with packed scoring each micro-batch's
    # prompts once + the completions (what the MFU counts); 0 = update_tokens
    model_tokens: int = 0
    peak_rollout: float | None = None
    peak_reference: float | None = None  # max over the step's reference passes
    peak_update: float | None = None
    loss: float = float("nan")
    error: str = ""
    graphs: int = 0  # graphs dynamo compiled during the step (every variant counts)
    # torch.compile's own seconds in the rollout / in reference + update (`compile_seconds`)
    compile_rollout: dict[str, float] = field(default_factory=dict)
    compile_update: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.rollout + self.reference + self.update


def peaks_cell(rollout: float | None, reference: float | None, update: float | None) -> str:
    """ "rollout / reference / update" GiB ("-" on CPU, where no peak is tracked)."""
    if rollout is None:
        return "-"
    return " / ".join("-" if v is None else f"{v:.1f}" for v in (rollout, reference, update))


def step_line(r: StepRow, variant: str, label: str, body: int) -> str:
    if r.error:
        return f"| {variant} | {label} | {r.error} | | | | | | | | | |"
    mfu = 4 * body * (r.model_tokens or r.update_tokens) / r.update / ROOFLINE_FLOPS
    peaks = peaks_cell(r.peak_rollout, r.peak_reference, r.peak_update)
    graphs = str(r.graphs)  # a mean row: the sum over the steps it averages
    return (
        f"| {variant} | {label} | {r.rollout:.2f} ({r.generate:.2f}) | {r.reference:.2f} | "
        f"{r.update:.2f} | {r.total:.2f} | {r.tokens / r.total:,.0f} | {r.update_tokens / r.update:,.0f} | "
        f"{100 * mfu:.1f} | {peaks} | {graphs} | {r.loss:.4f} |"
    )


def timed(rows: list[StepRow]) -> list[StepRow]:
    """The timed steps a mean uses: those without errors, and of those the ones that compiled
    nothing (a step that compiled a graph the warm-up did not see times the compiler), unless
    every step compiled."""
    ok = [r for r in rows if not r.error]
    return [r for r in ok if not r.graphs] or ok


def mean_label(rows: list[StepRow]) -> str:
    used, ok = len(timed(rows)), len([r for r in rows if not r.error])
    return f"**mean of {used}**" + (f" ({ok - used} that compiled left out)" if used < ok else "")


def first_label(rows: list[StepRow]) -> str:
    ok = [r for r in rows if not r.error]
    return f"**first {len(ok)} steps** (warm-up incl.)"


def mean_row(rows: list[StepRow], every: bool = False) -> StepRow | None:
    """Mean of the timed steps (`timed`), or with `every` of all error-free steps: the mean
    over the first N steps of a run, compilation included."""
    ok = [r for r in rows if not r.error] if every else timed(rows)
    if not ok:
        return None
    out = StepRow(step=-1)
    for name in ("rollout", "generate", "reference", "update", "loss"):
        setattr(out, name, float(np.mean([getattr(r, name) for r in ok])))
    out.tokens = int(np.mean([r.tokens for r in ok]))
    out.update_tokens = int(np.mean([r.update_tokens for r in ok]))
    out.model_tokens = int(np.mean([r.model_tokens or r.update_tokens for r in ok]))
    peaks = [r.peak_rollout for r in ok if r.peak_rollout is not None]
    if peaks:
        out.peak_rollout = max(peaks)
        out.peak_reference = max(r.peak_reference or 0.0 for r in ok)
        out.peak_update = max(r.peak_update or 0.0 for r in ok)
    out.graphs = sum(r.graphs for r in ok)
    return out


def summary(bench: Bench) -> list[str]:
    """The variants side by side: mean of the timed steps, decode step against its bound."""
    lines = [
        "| variant | rollout s | generate s | decode ms / step | x memory bound | step s "
        "| tokens/s | step speed-up vs the first row |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    first = None
    for var in bench.variants:
        m = mean_row(var.rows[1:])
        if m is None:
            lines.append(f"| {var.label} | no timed step | | | | | | |")
            continue
        first = first or m.total
        lines.append(
            f"| {var.label} | {m.rollout:.2f} | {m.generate:.2f} | {var.decode_ms:.1f} | "
            f"{var.decode_ms / var.bound_ms:.2f} | {m.total:.2f} | {m.tokens / m.total:,.0f} | "
            f"{first / m.total:.2f}x |"
        )
    return lines


def to_markdown(bench: Bench, body: int) -> str:
    h = bench.header
    lines = [f"`{h['command']}`", ""] + [f"- {k}: {v}" for k, v in h.items() if k != "command"]
    if len(bench.variants) > 1:
        lines += ["", *summary(bench)]
    lines += [
        "",
        "| variant | step | rollout s (generate s) | reference s | update s | step s | tokens/s "
        "| update tokens/s | update MFU % | peak GiB rollout / reference / update "
        "| graphs compiled | loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for var in bench.variants:
        name = var.label
        for r in var.rows:
            label = "warm-up" if r.step == 0 else str(r.step)
            lines.append(step_line(r, name, label, body))
        mean = mean_row(var.rows[1:])
        if mean is not None:
            lines.append(step_line(mean, name, mean_label(var.rows[1:]), body))
        first = mean_row(var.rows, every=True)
        if first is not None and len(var.rows) > 1:
            lines.append(step_line(first, name, first_label(var.rows), body))
    decode = [f"rollout decode ({v.label}): {v.decode}" for v in bench.variants if v.decode]
    lines += ["", *[f"- {n}" for n in decode + bench.notes]]
    for section in bench.extra:
        lines += ["", section.rstrip("\n")]
    return "\n".join(lines) + "\n"


def write(bench: Bench, body: int) -> None:
    out = bench.args.out
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        title = f"# GRPO step: {bench.args.shape}\n\n"
        out.write_text(title + to_markdown(bench, body))


def trl_note() -> str:
    if importlib.util.find_spec("trl") is None:
        return (f"TRL GRPOTrainer comparison: NOT run — trl is not installed here; it needs these "
                f"wheels carried to the machine: {TRL_WHEELS} (those the image lacks)")  # fmt: skip
    return ("TRL GRPOTrainer comparison: benchmarks/bench_grpo_trl.py --ours <this file> runs "
            "TRL on the same workload and writes the side-by-side table")  # fmt: skip


def make_header(bench: Bench, body: int, allowed: int, lengths: list[int]) -> dict[str, str]:
    import transformers

    a, vlm = bench.args, bench.policy.vlm
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.machine()
    seqs = a.prompts * a.generations
    lora = sum(p.numel() for p in vlm.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in vlm.model.parameters())
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "model": f"{vlm.name} ({vlm.family}, {(total - lora) / 1e6:.1f}M base params, decoder "
        f"layers N_body = {body / 1e6:.1f}M; {vlm.dtype}, {vlm.image_size} px, "
        f"{vlm.num_image_tokens()} image tokens)",
        "device": f"{a.device} {dev} ({torch.get_num_threads()} CPU threads)",
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
        "workload": f"{a.prompts} prompts per step x G = {a.generations} = {seqs} sequences; "
        f"prompt {min(lengths)}-{max(lengths)} tokens (mean {np.mean(lengths):.1f}, image "
        f"included); completion exactly {a.new_tokens} sampled tokens (temperature 1.0); "
        f"update micro-batch {-(-seqs // a.grad_accum)} sequences (grad_accum {a.grad_accum})"
        + (", gradient checkpointing" if a.gradient_checkpointing else ""),
        "training": f"LoRA r={a.lora_r} alpha={a.lora_alpha} on every language-model linear "
        f"({lora / 1e6:.1f}M trainable, fp32), beta (k3 KL) {a.beta}, AdamW lr 5e-5, clip 1.0; "
        + (
            "reference and update forwards under bf16 autocast (runtime.autocast, TRL's bf16=True:"
            " LoRA matmuls in bf16, fp32 master weights and gradients)"
            if bench.policy.autocast
            else "no autocast (runtime.autocast), fp32 LoRA matmuls "
            + ("without TF32 (--no-tf32)" if a.no_tf32 else "on TF32 (runtime.tf32)")
        ),
        "sampling": f"restricted to the stand-in tokenizer's {allowed} whole-word tokens "
        "(suppress_tokens), see the script's docstring",
        "counting": "tokens/s = sequences x (prompt + sampled completion) / step s; update "
        "tokens/s uses every sequence's prompt + scored completion tokens; MFU = 4 N_body T / s /"
        " 790 TFLOP/s with T the tokens the update's forwards run (the same, or with packed "
        "scoring each micro-batch's prompts once + the completions), frozen base + LoRA; vision,"
        " lm_head, attention scores, LoRA not counted",
        "rollout variants": ", ".join(v.label for v in bench.variants)
        + " (merged: LoRA folded into copies of the base weights while sampling; static: "
        "StaticCache, decode compiled by transformers on CUDA, static-eager: not compiled; "
        "shared: one prefill per prompt, KV cache repeated G times; compile: reference and update "
        f"passes in compiled_layers, backend {a.compile_backend}; packed: reference and update "
        "score each group's answers behind one copy of its prompt, grpo.packed_scoring); each "
        "from its own warm-up "
        "step (compilation included there) with a fresh optimizer, same model and items",
        "timing": f"one warm-up step, then {a.steps} timed steps; each phase device-synchronised;"
        " steady state = mean of the timed steps that compiled nothing, first N steps = mean of"
        " all steps, warm-up (compilation) included; graphs compiled = dynamo's unique graphs"
        " made during the step (after step 0 each is a recompile); peak GiB per phase ="
        " torch.cuda.max_memory_allocated within it (reference: over its micro-batch passes)"
        + (f"; compile cache {a.compile_cache}" if a.compile_cache else "")
        + ("; CPU shared with other jobs, expect noise" if a.device == "cpu" else ""),
    }
