"""TRL's GRPOTrainer (HF generation, no vLLM) on the workload of bench_grpo_step.py, and the
side-by-side comparison with our trainer.

    python3 benchmarks/bench_grpo_trl.py --shape llava-7b --device cuda \\
        --out $OUT/grpo_trl_llava-7b.md --ours $OUT/grpo_llava-7b.md
    python3 benchmarks/bench_grpo_trl.py --shape tiny --device cpu --prompts 2 --generations 4 \\
        --new-tokens 8 --grad-accum 2 --steps 1 --out /tmp/trl_tiny.md
    python3 benchmarks/bench_grpo_trl.py --combine OURS.md TRL.json --out compare.md

Same workload as bench_grpo_step.py, built by its own helpers: the random-weight 7B shape of
`bench_models.build` (bf16 on the GPU), the same items (`make_items`, same seed: the same
questions and random images, decoded at the model's resolution), LoRA r=64 alpha=128 on every
language-model linear (the LoraConfig of `apply_lora`, given to TRL as `peft_config` so that the
reference is the base with the adapter disabled, as ours), P prompts x G generations per step,
exactly `--new-tokens` sampled tokens (`generation_kwargs` min_new_tokens = max_completion_length)
restricted to the stand-in tokenizer's whole-word tokens (`generation_kwargs` suppress_tokens:
the list `restrict_sampling` gives ours), beta 0.04 (k3 KL), loss_type "grpo" (ours' default
aggregation), AdamW lr 5e-5, clip 1.0, no gradient checkpointing. The reward is the yesno
verifier that ours uses (correctness + format); a random model cannot answer, only the cost
matters. Every GRPOConfig value that matters is read back from the trainer and printed.

Timing (one warm-up optimizer step, then `--steps` timed ones; every boundary synchronised):
- step: wall time between consecutive optimizer steps (`on_step_end`), so everything TRL does
  in a step counts (data loading and image decode, logging, optimizer);
- generate: `_generate_single_turn` (HF `generate` on P x G rows, each prompt repeated G times);
- reference: the no-grad `_get_per_token_logps_and_entropies` calls (adapter disabled);
- rollout: `_generate_and_score_completions` minus reference (tokenising and processing the
  prompts twice, generate, rewards, advantages); update: step minus that (forward + backward
  of the micro-batches, clipping, AdamW).
Counting as ours: tokens/s = sequences x (prompt + sampled completion) tokens / step seconds,
prompt and completion lengths as TRL tokenised and sampled them; update MFU = 4 N_body T /
update seconds / 790 TFLOP/s with T the tokens TRL scores (prompt + sampled completion; ours
re-tokenises and appends EOS).

Output: markdown (starting with the exact command line) and a JSON beside it; with `--ours`
(bench_grpo_step.py's markdown, written earlier in the same device run) the markdown gains the
side-by-side table ours vs TRL with the ratios and a check that both used the same settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_grpo_step as ours_bench
from bench_grpo_step import ROOFLINE_FLOPS, body_parameters, make_items, peak_gib, sync, word_tokens
from bench_models import build
from grpo_report import peaks_cell

# GRPOConfig fields listed in the output, read back from the trainer (resolved values)
CONFIG_KEYS = (
    "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
    "generation_batch_size", "num_generations", "max_completion_length", "num_iterations",
    "beta", "loss_type", "epsilon", "epsilon_high", "scale_rewards", "temperature", "top_p",
    "top_k", "min_p", "repetition_penalty", "mask_truncated_completions", "importance_sampling_level",
    "bf16", "gradient_checkpointing", "cast_lm_head_to_fp32", "use_vllm",
    "use_transformers_continuous_batching", "cache_implementation", "learning_rate", "optim",
    "max_grad_norm", "lr_scheduler_type", "warmup_steps", "weight_decay", "shuffle_dataset",
    "seed", "max_steps", "logging_steps", "report_to",
)  # fmt: skip
# bench_grpo_step.py settings that must agree for the comparison to be valid
SHARED = (
    "shape", "family", "device", "prompts", "generations", "new_tokens", "grad_accum", "lora_r",
    "lora_alpha", "beta", "gradient_checkpointing", "seed",
)  # fmt: skip
TARGET_SPEEDUP = 2.5  # issue 19: at least 2.5x TRL's whole-step throughput (steady state)


@dataclass
class TrlRow:
    step: int
    step_s: float = float("nan")
    gen_score: float = 0.0  # _generate_and_score_completions, reference included
    generate: float = 0.0
    reference: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    sequences: int = 0
    peak_rollout: float | None = None
    peak_reference: float | None = None
    peak_update: float | None = None
    loss: float = float("nan")
    error: str = ""

    @property
    def rollout(self) -> float:
        return self.gen_score - self.reference

    @property
    def update(self) -> float:
        return self.step_s - self.gen_score

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Recorder:
    """Per-step timings filled by the trainer subclass and the step callback."""

    device: str
    rows: list[TrlRow] = field(default_factory=list)
    current: TrlRow = field(default_factory=lambda: TrlRow(step=0))
    last: float = 0.0
    on_step: Callable[[], None] = lambda: None
    on_log: Callable[[], None] = lambda: None

    def mark(self) -> float:
        sync(self.device)
        return time.perf_counter()

    def start(self) -> None:
        peak_gib(self.device)
        self.last = self.mark()

    def end_step(self) -> None:
        now = self.mark()
        row = self.current
        row.step_s, self.last = now - self.last, now
        row.peak_update = peak_gib(self.device)
        self.rows.append(row)
        self.current = TrlRow(step=row.step + 1)
        self.on_step()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ours_bench.add_workload_args(parser)
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--json", type=Path, default=None, help="JSON (default: --out's .json)")
    parser.add_argument("--ours", type=Path, default=None,
                        help="bench_grpo_step.py's markdown: add the side-by-side table")  # fmt: skip
    parser.add_argument("--combine", nargs=2, type=Path, metavar=("OURS_MD", "TRL_JSON"),
                        help="only write the comparison of two existing results to --out")  # fmt: skip
    args = parser.parse_args(argv)
    seqs = args.prompts * args.generations
    if args.combine is None and seqs % args.grad_accum:
        parser.error(f"--grad-accum {args.grad_accum} must divide prompts x generations = {seqs} "
                     "(TRL's per-device batch is a whole number of sequences)")  # fmt: skip
    return args


# ---- the TRL run ---------------------------------------------------------------------------------
def yesno_reward(completions: list[Any], target: list[str], **_: Any) -> list[float]:
    """Ours' reward (correctness + format) of each completion against its item's target."""
    from mbpo_bench.tasks.verifiers import reward

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [reward("yesno", t.strip(), y) for t, y in zip(texts, target, strict=True)]


def make_dataset(vlm: Any, args: argparse.Namespace, folder: Path) -> Any:
    """The items of bench_grpo_step.py as a conversational dataset with an image column."""
    from datasets import Dataset
    from mbpo_bench.trainers.data import item_image

    images = folder / "images"
    images.mkdir()
    items = make_items((args.steps + 1) * args.prompts, vlm.image_size, images, args.seed)
    rows = [{"prompt": [{"role": "user", "content": it.question}],
             "image": item_image(it), "target": it.target} for it in items]  # fmt: skip
    return Dataset.from_list(rows)


def grpo_config(args: argparse.Namespace, folder: Path, suppress: list[int]) -> Any:
    from trl import GRPOConfig

    cuda = args.device.startswith("cuda")
    seqs = args.prompts * args.generations
    return GRPOConfig(
        output_dir=str(folder / "trl"), report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=args.seed, max_steps=args.steps + 1,
        per_device_train_batch_size=seqs // args.grad_accum,
        gradient_accumulation_steps=args.grad_accum, num_generations=args.generations,
        max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0,
        generation_kwargs={"min_new_tokens": args.new_tokens, "suppress_tokens": suppress},
        beta=args.beta, loss_type="grpo", epsilon=0.2, scale_rewards="group", num_iterations=1,
        mask_truncated_completions=False, learning_rate=5e-5, optim="adamw_torch",
        max_grad_norm=1.0, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        bf16=cuda, use_cpu=not cuda, gradient_checkpointing=args.gradient_checkpointing,
        shuffle_dataset=False, dataloader_num_workers=0, log_completions=False,
    )  # fmt: skip


def timed_trainer(rec: Recorder) -> Any:
    """GRPOTrainer whose generation, scoring and reference forwards are timed into `rec`."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
        def _generate_and_score_completions(self, inputs: Any) -> Any:
            start = rec.mark()
            out = super()._generate_and_score_completions(inputs)
            rec.current.gen_score += rec.mark() - start
            return out

        def _generate_single_turn(self, *a: Any, **k: Any) -> Any:
            start = rec.mark()
            out = super()._generate_single_turn(*a, **k)
            rec.current.generate += rec.mark() - start
            rec.current.peak_rollout = _max(rec.current.peak_rollout, peak_gib(rec.device))
            return out

        def _generate(self, prompts: list[Any]) -> Any:
            out = super()._generate(prompts)
            prompt_ids, completion_ids = out[0], out[1]
            rec.current.prompt_tokens += sum(len(p) for p in prompt_ids)
            rec.current.completion_tokens += sum(len(c) for c in completion_ids)
            rec.current.sequences += len(completion_ids)
            return out

        def _get_per_token_logps_and_entropies(self, *a: Any, **k: Any) -> Any:
            if torch.is_grad_enabled():
                return super()._get_per_token_logps_and_entropies(*a, **k)
            start = rec.mark()
            row = rec.current
            row.peak_rollout = _max(row.peak_rollout, peak_gib(rec.device))
            out = super()._get_per_token_logps_and_entropies(*a, **k)
            rec.current.reference += rec.mark() - start
            row.peak_reference = _max(row.peak_reference, peak_gib(rec.device))
            return out

    return TimedGRPOTrainer


def step_clock(rec: Recorder) -> Any:
    """A TrainerCallback that closes a row at every optimizer step and keeps the logged loss."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            rec.start()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            rec.end_step()

        def on_log(self, *a: Any, logs: dict[str, float] | None = None, **k: Any) -> None:
            if logs and "loss" in logs and rec.rows:
                rec.rows[-1].loss = float(logs["loss"])
                rec.on_log()

    return StepClock()


def lora_config(args: argparse.Namespace) -> Any:
    """The LoraConfig `apply_lora` builds for ours (same targets, dropout, bias)."""
    from peft import LoraConfig

    from mbpo_bench.models.lora import LoraSettings

    s = LoraSettings(r=args.lora_r, alpha=args.lora_alpha)
    return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                      target_modules=s.target_regex(), bias="none")  # fmt: skip


def build_trainer(args: argparse.Namespace, folder: Path, rec: Recorder) -> tuple[Any, Any, int]:
    """(trainer, vlm, N_body): the model of bench_models.build handed to TRL as an object."""
    vlm = build(args.shape, args.family, args.device, folder)
    body = body_parameters(vlm)
    allowed = set(word_tokens(vlm.tokenizer))
    vocab = vlm.hf_model.lm_head.weight.shape[0]
    suppress = [i for i in range(vocab) if i not in allowed]
    processor = vlm.processor
    if getattr(processor, "chat_template", None) is None:  # ours renders with the tokenizer's
        processor.chat_template = vlm.tokenizer.chat_template
    cls = timed_trainer(rec)
    trainer = cls(
        model=vlm.hf_model, reward_funcs=yesno_reward, args=grpo_config(args, folder, suppress),
        train_dataset=make_dataset(vlm, args, folder), processing_class=processor,
        peft_config=lora_config(args), callbacks=[step_clock(rec)],
    )  # fmt: skip
    trainer.allowed_tokens = len(allowed)
    return trainer, vlm, body


# ---- results -------------------------------------------------------------------------------------
def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def mean_row(rows: list[TrlRow]) -> TrlRow | None:
    ok = [r for r in rows if not r.error]
    if not ok:
        return None
    out = TrlRow(step=-1)
    for name in ("step_s", "gen_score", "generate", "reference", "loss"):
        setattr(out, name, float(np.mean([getattr(r, name) for r in ok])))
    for name in ("prompt_tokens", "completion_tokens", "sequences"):
        setattr(out, name, int(np.mean([getattr(r, name) for r in ok])))
    peaks = [r.peak_rollout for r in ok if r.peak_rollout is not None]
    if peaks:
        out.peak_rollout = max(peaks)
        out.peak_reference = max(r.peak_reference or 0.0 for r in ok)
        out.peak_update = max(r.peak_update or 0.0 for r in ok)
    return out


def summary(r: TrlRow, body: int) -> dict[str, float | None]:
    """The figures of a row under the names the comparison uses (seconds, tokens/s, GiB)."""
    return {
        "rollout_s": r.rollout, "generate_s": r.generate, "reference_s": r.reference,
        "update_s": r.update, "step_s": r.step_s, "tokens_per_s": r.tokens / r.step_s,
        "update_tokens_per_s": r.tokens / r.update,
        "update_mfu": 4 * body * r.tokens / r.update / ROOFLINE_FLOPS,
        "peak_rollout_gib": r.peak_rollout, "peak_reference_gib": r.peak_reference,
        "peak_update_gib": r.peak_update, "prompt_tokens_mean": r.prompt_tokens / max(r.sequences, 1),
        "completion_tokens_mean": r.completion_tokens / max(r.sequences, 1), "loss": r.loss,
    }  # fmt: skip


def row_line(r: TrlRow, label: str, body: int) -> str:
    if r.error:
        return f"| {label} | {r.error} | | | | | | | | |"
    s = summary(r, body)
    peaks = peaks_cell(r.peak_rollout, r.peak_reference, r.peak_update)
    return (
        f"| {label} | {r.rollout:.2f} ({r.generate:.2f}) | {r.reference:.2f} | {r.update:.2f} | "
        f"{r.step_s:.2f} | {s['tokens_per_s']:,.0f} | {s['update_tokens_per_s']:,.0f} | "
        f"{100 * float(s['update_mfu'] or 0):.1f} | {peaks} | {r.loss:.4f} |"
    )


def to_markdown(header: dict[str, str], rows: list[TrlRow], body: int, notes: list[str]) -> str:
    lines = [f"`{header['command']}`", ""] + [f"- {k}: {v}" for k, v in header.items()
                                               if k != "command"]  # fmt: skip
    lines += [
        "",
        "| step | rollout s (generate s) | reference s | update s | step s | tokens/s "
        "| update tokens/s | update MFU % | peak GiB rollout / reference / update | loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [row_line(r, "warm-up" if r.step == 0 else str(r.step), body) for r in rows]
    mean = mean_row(rows[1:])
    if mean is not None:
        lines.append(row_line(mean, f"**mean of {len(rows) - 1}**", body))
    first = mean_row(rows)
    if first is not None and len(rows) > 1:
        lines.append(row_line(first, f"**first {len(rows)} steps** (warm-up incl.)", body))
    lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def versions() -> str:
    from mbpo_bench.runs import package_versions

    names = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow")
    return ", ".join(f"{n} {v or '-'}" for n, v in package_versions(names).items())


def make_header(args: argparse.Namespace, trainer: Any, vlm: Any, body: int) -> dict[str, str]:
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    model = trainer.model
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora_dtype = next(p.dtype for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    cfg = trainer.args
    values = ", ".join(f"{k}={getattr(cfg, k, 'n/a')}" for k in CONFIG_KEYS)
    seqs = args.prompts * args.generations
    gen = cfg.generation_kwargs or {}
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "trainer": "trl GRPOTrainer, HF transformers generate (no vLLM, no continuous batching)",
        "model": f"{vlm.name} ({vlm.family}, {(total - lora) / 1e6:.1f}M base params, decoder "
        f"layers N_body = {body / 1e6:.1f}M; {vlm.dtype}, {vlm.image_size} px, "
        f"{vlm.num_image_tokens()} image tokens), given to TRL as an object",
        "device": f"{args.device} {dev} ({torch.get_num_threads()} CPU threads)",
        "versions": versions(),
        "workload": f"{args.prompts} prompts per step x G = {args.generations} = {seqs} sequences"
        f" (bench_grpo_step.make_items, seed {args.seed}); completion exactly {args.new_tokens} "
        f"sampled tokens; update micro-batch {seqs // args.grad_accum} sequences "
        f"(grad_accum {args.grad_accum})",
        "training": f"LoRA r={args.lora_r} alpha={args.lora_alpha} on every language-model "
        f"linear via peft_config ({lora / 1e6:.1f}M trainable, {lora_dtype}); reference = adapter "
        "disabled",
        "GRPOConfig": values,
        "generation_kwargs": f"min_new_tokens={gen.get('min_new_tokens')}, suppress_tokens = "
        f"{len(gen.get('suppress_tokens', []))} ids (all but the stand-in tokenizer's "
        f"{trainer.allowed_tokens} whole-word tokens, the restriction of bench_grpo_step.py)",
        "reward": "yesno verifier (mbpo_bench.tasks.verifiers.reward: correctness + format)",
        "counting": "tokens/s = sequences x (prompt + sampled completion) / step s; update "
        "tokens/s and MFU use the same tokens (TRL scores the sampled ids, no EOS appended); "
        "MFU = 4 N_body T / update s / 790 TFLOP/s",
        "timing": f"one warm-up step, then {args.steps} timed steps; step = wall time between "
        "optimizer steps; phases device-synchronised"
        + ("; CPU shared with other jobs, expect noise" if args.device == "cpu" else ""),
    }


def differences(args: argparse.Namespace) -> list[str]:
    autocast = (
        "bf16=True (TRL's usual setting): forwards under bf16 autocast, so the fp32 LoRA weights "
        "peft creates run their matmuls in bf16 (ours: the same with runtime.autocast on, its "
        "file's training line says; off: LoRA matmuls in fp32); "
        if args.device.startswith("cuda")
        else ""
    )
    return [
        "differences from ours that are TRL's design, not the workload: each prompt is repeated "
        "G times in the batch (P x G rows into one generate call; ours: P prompts with "
        "num_return_sequences = G); prompts are tokenised and run through the processor twice "
        "(for generate, then for the log-prob forwards); log-probs through TRL's fused LM head; "
        "completions scored as sampled (ours re-tokenises the text and appends EOS); "
        + autocast
        + "linear schedule without warm-up (ours: 5% warm-up; no effect on cost)",
        "step s: wall time between TRL's optimizer steps (its data loading, image decode and "
        "logging included); ours' step s is the sum of its synchronised phases",
    ]


def write_outputs(args: argparse.Namespace, text: str, payload: dict[str, Any]) -> None:
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    path = args.json or (args.out.with_suffix(".json") if args.out is not None else None)
    if path is not None:
        path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def payload(args: argparse.Namespace, header: dict[str, str], rows: list[TrlRow],
            body: int) -> dict[str, Any]:  # fmt: skip
    mean = mean_row(rows[1:])
    first = mean_row(rows) if len(rows) > 1 else None
    done = [r for r in rows if not r.error]
    seqs = sum(r.sequences for r in done)
    return {
        "command": header.get("command", ""),
        "prompt_tokens_mean_all_steps": sum(r.prompt_tokens for r in done) / seqs if seqs else None,
        "args": {k: v for k, v in vars(args).items() if k in SHARED or k == "steps"},
        "header": header,
        "mean": summary(mean, body) if mean is not None else None,
        "first": summary(first, body) if first is not None else None,
        "first_steps": len(done),
        "rows": [{**asdict(r), **(summary(r, body) if not r.error else {})} for r in rows],
    }


# ---- comparison with bench_grpo_step.py ----------------------------------------------------------
def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(text: str) -> float | None:
    text = text.replace(",", "").replace("*", "").strip()
    try:
        return float(text)
    except ValueError:
        return None


def _mean_of(cell: dict[str, str]) -> dict[str, float | None]:
    rollout, _, generate = cell["rollout s (generate s)"].partition("(")
    peaks = [_number(p) for p in cell.get("peak GiB rollout / reference / update", "-").split("/")]
    return {
        "rollout_s": _number(rollout), "generate_s": _number(generate.rstrip(")")),
        "reference_s": _number(cell["reference s"]), "update_s": _number(cell["update s"]),
        "step_s": _number(cell["step s"]), "tokens_per_s": _number(cell["tokens/s"]),
        "update_tokens_per_s": _number(cell["update tokens/s"]),
        "update_mfu": (_number(cell.get("update MFU %", "")) or 0.0) / 100,
        "peak_rollout_gib": peaks[0], "peak_reference_gib": peaks[1] if len(peaks) > 2 else None,
        "peak_update_gib": peaks[-1] if len(peaks) > 1 else None,
    }  # fmt: skip


def parse_ours(path: Path) -> dict[str, Any]:
    """Command, header and the mean row of each rollout variant of bench_grpo_step.py's
    markdown (one unnamed variant when it ran without --variants)."""
    lines = path.read_text().splitlines()
    command = next((ln.strip("`") for ln in lines if ln.startswith("`")), "")
    header = dict(ln[2:].split(": ", 1) for ln in lines if ln.startswith("- ") and ": " in ln)
    names = next(
        (_cells(ln) for ln in lines if ln.startswith(("| step |", "| variant | step |"))), []
    )
    means: dict[str, dict[str, float | None]] = {}
    firsts: dict[str, dict[str, float | None]] = {}
    steps: dict[str, list[dict[str, float | None]]] = {}
    in_steps = False  # inside the step table (other tables have digit labels too)
    for ln in lines:
        cells = _cells(ln)
        cell = dict(zip(names, cells, strict=False))
        label = cell.get("step", "")
        in_steps = ln.startswith("|") and (in_steps or _cells(ln) == names)
        if in_steps and _number(cell.get("step s", "")) is None:  # header, rule, error row
            continue
        if in_steps and (label == "warm-up" or label.isdigit()):
            steps.setdefault(cell.get("variant", "ours"), []).append(_mean_of(cell))
        elif names and any(c.startswith("**mean") for c in cells):
            means[cell.get("variant", "ours")] = _mean_of(cell)
        elif names and any(c.startswith("**first") for c in cells):
            firsts[cell.get("variant", "ours")] = _mean_of(cell)
            found = re.search(r"first (\d+) steps", ln)
            firsts[cell.get("variant", "ours")]["steps"] = float(found.group(1)) if found else None
    if not means:
        raise ValueError(f"{path} has no mean row (the run failed or was cut short)")
    return {"command": command, "header": header, "means": means, "firsts": firsts,
            "steps": steps}  # fmt: skip


def first_mean(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Column means of the first steps' rows (peaks: the max), as TRL's first-N row."""
    out: dict[str, float | None] = {}
    for key, kind in COLUMNS:
        values = [v for r in rows if (v := r.get(key)) is not None and v == v]
        out[key] = (max(values) if kind == "mem" else float(np.mean(values))) if values else None
    for rate, per in (("tokens_per_s", "step_s"), ("update_tokens_per_s", "update_s")):
        pairs = [(r[rate], r[per]) for r in rows if r.get(rate) and r.get(per)]
        if pairs:  # tokens over seconds of all the steps, not a mean of per-step rates
            out[rate] = sum(v * t for v, t in pairs) / sum(t for _, t in pairs)
    return out


def settings_check(ours_command: str, trl_args: dict[str, Any]) -> str:
    """Compare the settings of ours' command line (parsed by its own parser) with TRL's."""
    parts = shlex.split(ours_command)
    script = next((i for i, p in enumerate(parts) if p.endswith(".py")), None)
    if script is None:
        return "settings check: ours' command line not found"
    ours = vars(ours_bench.parse_args(parts[script + 1 :]))
    keys = [k for k in SHARED if not (k == "family" and ours.get("shape") != "tiny")]
    if str(ours.get("device")) == "auto" or str(trl_args.get("device")) == "auto":
        keys.remove("device")
    diff = [f"{k}: ours {ours.get(k)!r}, TRL {trl_args.get(k)!r}" for k in keys
            if ours.get(k) != trl_args.get(k)]  # fmt: skip
    if diff:
        return "settings check: SETTINGS DIFFER — " + "; ".join(diff)
    return "settings check: identical (" + ", ".join(f"{k}={ours.get(k)}" for k in keys) + ")"


def _fmt(value: float | None, kind: str) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.0f}" if kind == "rate" else f"{value:.2f}"


def _ratio(ours: float | None, trl: float | None, kind: str) -> str:
    """Speed-up of ours (time: TRL / ours, rate: ours / TRL); memory: ours / TRL."""
    if not ours or not trl or ours != ours or trl != trl:
        return "-"
    return f"{(trl / ours if kind == 'time' else ours / trl):.2f}x"


COLUMNS = (
    ("rollout_s", "time"), ("generate_s", "time"), ("reference_s", "time"), ("update_s", "time"),
    ("step_s", "time"), ("tokens_per_s", "rate"), ("update_tokens_per_s", "rate"),
    ("peak_rollout_gib", "mem"), ("peak_reference_gib", "mem"), ("peak_update_gib", "mem"),
)  # fmt: skip


def compare_markdown(ours: dict[str, Any], trl: dict[str, Any]) -> str:
    """Side-by-side table ours (each rollout variant) vs TRL (same run), ratios, the 1.5x
    target (judged on ours' fastest variant) and the settings."""
    b = trl["mean"]
    lines = [
        "## Ours vs TRL GRPOTrainer (same device run, same workload)",
        "",
        f"- ours: `{ours['command']}`",
        f"- TRL: `{trl['command']}`",
        f"- {settings_check(ours['command'], trl['args'])}",
        "",
        "| | rollout s | generate s | reference s | update s | step s | tokens/s "
        "| update tokens/s | peak GiB rollout | peak GiB reference | peak GiB update |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| TRL GRPOTrainer, steady state | " + " | ".join(_fmt(b[k], t) for k, t in COLUMNS) + " |",
    ]
    for label, a in ours["means"].items():
        lines += [
            f"| ours ({label}), steady state | "
            + " | ".join(_fmt(a.get(k), t) for k, t in COLUMNS) + " |",
            f"| ours ({label}) vs TRL, steady state | "
            + " | ".join(_ratio(a.get(k), b[k], t) for k, t in COLUMNS) + " |",
        ]  # fmt: skip
    tf = trl.get("first")
    n_trl = int(trl.get("first_steps") or 0)
    for label, rows in ours.get("steps", {}).items():
        n = min(n_trl, len(rows))  # the same first steps on both sides
        if tf is None or not n:
            break
        a = first_mean(rows[:n])
        note = "" if n == n_trl else f" (TRL's first {n_trl})"
        lines += [
            f"| TRL GRPOTrainer, first {n_trl} steps | "
            + " | ".join(_fmt(tf.get(k), t) for k, t in COLUMNS) + " |",
            f"| ours ({label}), first {n} steps{note} | "
            + " | ".join(_fmt(a.get(k), t) for k, t in COLUMNS) + " |",
            f"| ours ({label}) vs TRL, first steps | "
            + " | ".join(_ratio(a.get(k), tf.get(k), t) for k, t in COLUMNS) + " |",
        ]  # fmt: skip
    best_label, best = max(ours["means"].items(), key=lambda kv: kv[1]["tokens_per_s"] or 0.0)
    speedup = (best["tokens_per_s"] or 0.0) / b["tokens_per_s"] if b.get("tokens_per_s") else 0.0
    verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
    lines += [
        "",
        f"- whole-step throughput ours ({best_label}) / TRL = {speedup:.2f}x (target at least "
        f"{TARGET_SPEEDUP}x: {verdict}). Ratio rows: time columns TRL / ours, tokens/s ours / "
        "TRL (both: speed-up of ours), memory ours / TRL",
        "- phases: ours' reference is its own phase; TRL's reference forwards run inside its "
        "rollout call and are split out; both updates include the optimizer step; ours "
        "prepares each micro-batch (template, tokens, pixels) once before its reference pass "
        "and counts that in the update, TRL prepares the batch in its rollout",
    ]
    if best.get("reference_s") and b.get("reference_s"):
        ref = b["reference_s"] / best["reference_s"]
        lines.append(f"- reference pass TRL / ours = {ref:.2f}x (target at least 1.0x: "
                     f"{'met' if ref >= 1.0 else 'NOT met'})")  # fmt: skip
    rows = ours.get("steps", {}).get(best_label, [])
    n = min(n_trl, len(rows))
    first = first_mean(rows[:n]) if n else None
    if first and tf and first.get("step_s") and tf.get("step_s"):
        lines.append(f"- first {n} steps (compilation included), mean step s TRL / ours = "
                     f"{tf['step_s'] / first['step_s']:.2f}x"
                     + ("" if n == n_trl else f" (TRL's mean over its first {n_trl})"))  # fmt: skip
    lines.append(prompt_check(ours, trl))
    return "\n".join(lines) + "\n"


def prompt_check(ours: dict[str, Any], trl: dict[str, Any]) -> str:
    """Mean prompt length over all steps (warm-up included), as ours' header states it."""
    found = re.search(r"mean ([0-9.]+)", ours["header"].get("workload", ""))
    theirs = trl.get("prompt_tokens_mean_all_steps")
    if found is None or theirs is None:
        return "- prompt tokens: not comparable (missing in one of the results)"
    mine = float(found.group(1))
    same = "same tokenisation" if abs(mine - theirs) < 0.1 else "PROMPTS DIFFER"
    return f"- prompt tokens, mean over all steps: ours {mine:.1f}, TRL {theirs:.1f} ({same})"


def combine(ours_md: Path, trl_json: Path, out: Path | None) -> str:
    trl = json.loads(trl_json.read_text())
    if trl.get("mean") is None:
        raise SystemExit(f"{trl_json} has no timed step: nothing to compare")
    text = f"# GRPO step: ours vs TRL\n\n{compare_markdown(parse_ours(ours_md), trl)}"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return text


# ---- main ----------------------------------------------------------------------------------------
def comparison_section(args: argparse.Namespace, data: dict[str, Any]) -> str:
    if args.ours is None:
        return ""
    if not args.ours.is_file():
        return f"\n## Ours vs TRL\n\nours' result {args.ours} not found: no comparison.\n"
    if data["mean"] is None:
        return "\n## Ours vs TRL\n\nno timed TRL step: no comparison.\n"
    try:
        return "\n" + compare_markdown(parse_ours(args.ours), data)
    except (ValueError, KeyError) as exc:
        return f"\n## Ours vs TRL\n\nours' result {args.ours} unusable: {exc}\n"


def run_trl(args: argparse.Namespace, folder: Path) -> tuple[dict[str, str], Recorder, int]:
    rec = Recorder(device=args.device)
    trainer, vlm, body = build_trainer(args, folder, rec)
    header = make_header(args, trainer, vlm, body)
    title = f"# GRPO step, TRL GRPOTrainer: {args.shape}\n\n"

    def write() -> None:
        data = payload(args, header, rec.rows, body)
        write_outputs(args, title + to_markdown(header, rec.rows, body, differences(args)), data)

    def show() -> None:
        write()
        print(row_line(rec.rows[-1], str(rec.rows[-1].step), body), flush=True)

    rec.on_step, rec.on_log = write, show
    try:
        trainer.train()
    except torch.OutOfMemoryError:
        rec.rows.append(TrlRow(step=rec.current.step, error="out of GPU memory"))
        torch.cuda.empty_cache()
    return header, rec, body


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.combine is not None:
        print(combine(args.combine[0], args.combine[1], args.out))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    from mbpo_bench.models.loading import resolve_device

    args.device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        header, rec, body = run_trl(args, Path(tmp))
    data = payload(args, header, rec.rows, body)
    title = f"# GRPO step, TRL GRPOTrainer: {args.shape}\n\n"
    text = title + to_markdown(header, rec.rows, body, differences(args))
    text += comparison_section(args, data)
    write_outputs(args, text, data)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
