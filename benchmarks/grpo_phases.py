"""The GRPO step's phases one at a time: bench_grpo_step.py's --profile and --update-only.

The step rows time rollout, reference and update inside one trainer step. To see what bounds the
update on its own (its operator split and device-busy share, not blended with decoding) and to get
a steadier tokens/s than two timed steps give, the phases run here apart, on the trainer's code:
- rollout: `grpo.rollout`, as in the step;
- reference alone: the reference forwards as `policy_update` runs them (micro-batches of
  ceil(n / grad_accum) sequences, adapter disabled, no gradients; `_chunk_loss`'s first lines,
  repeated here because the trainer never runs them apart);
- update alone: `policy_update` with beta = 0 (no reference forwards; the policy forward and
  backward are the same compute, only the loss lacks its KL term) + the optimizer step, which is
  what the step rows call "update";
- update-only runs: `policy_update` as in the step (reference included) + the optimizer step,
  repeated on ONE rollout with no rollout in between; the reference seconds are split out as in
  the step rows, so "update tokens/s" means the same thing in both tables.
Every phase runs inside the variant's `layers()` context (its compiled layers, or nothing), as the
step's reference and update do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from bench_models import sync

Layers = Callable[[], AbstractContextManager[Any]]


def reference_passes(policy: Any, ro: Any, s: Any, grad_accum: int) -> None:
    """The reference log-prob forwards of one `policy_update` on `ro`, nothing else."""
    from mbpo_bench.trainers.hybrid import flatten

    if s.skip_zero_variance:
        raise ValueError("reference_passes mirrors policy_update without skip_zero_variance")
    from mbpo_bench.trainers.grpo import prepare_chunks

    flat = flatten(ro.groups)
    responses = [ids if ids is not None else text
                 for ids, text in zip(flat.token_ids, flat.responses, strict=True)]  # fmt: skip
    size = -(-len(responses) // grad_accum)
    group_ids = [int(g) for g in flat.group_ids]
    policy.train_mode(True)
    batches = prepare_chunks(policy, ro, group_ids, responses, size, s.packed_scoring)
    for batch in batches:  # as policy_update
        with torch.no_grad(), policy.mixed_precision(), policy.reference() as reference:
            reference.prepared_logprobs(batch, temperature=s.temperature)


def update_alone(
    policy: Any, ro: Any, s: Any, grad_accum: int, opt: tuple[Any, Any, Any, Any], step: int,
    clock: Any = None,
) -> Any:  # fmt: skip
    """`policy_update` without the reference (beta 0) + the optimizer step; named phases on
    `clock` (a profile_ops.PhaseClock) when given."""
    from contextlib import nullcontext

    from mbpo_bench.trainers import grpo
    from mbpo_bench.trainers.loop import optimizer_step

    params, optimizer, scheduler, cfg = opt
    phase = clock.phase if clock is not None else (lambda name: nullcontext())
    with phase("policy forward + backward"):
        res = grpo.policy_update(policy, ro, dataclasses.replace(s, beta=0.0), grad_accum)
    with phase("optimizer step"):
        optimizer_step(params, optimizer, scheduler, cfg, step, res.loss, None)
    return res


def profile_sections(
    policy: Any, items: list[Any], ro: Any, s: Any, grad_accum: int,
    opt: tuple[Any, Any, Any, Any], device: str, label: str, layers: Layers,
    phases: tuple[str, ...] = ("rollout", "reference", "update"),
) -> list[str]:  # fmt: skip
    """One profile_section per phase (rollout on `items` first when asked, whose rollout then
    feeds the others; otherwise `ro`)."""
    from mbpo_bench.trainers import grpo
    from profile_ops import PhaseClock, profile_section

    out = []
    if "rollout" in phases:
        got: dict[str, Any] = {}
        out.append(profile_section(
            lambda: got.update(ro=grpo.rollout(policy, items, [], s, None)), device,
            f"rollout ({label}): {len(items)} prompts x G = {s.num_generations}",
        ))  # fmt: skip
        ro = got["ro"]
    if "reference" in phases:
        with layers():
            out.append(profile_section(
                lambda: reference_passes(policy, ro, s, grad_accum), device,
                f"reference forwards ({label}), as one policy_update runs them",
            ))  # fmt: skip
    if "update" in phases:
        clock = PhaseClock(device)
        with layers():
            out.append(profile_section(
                lambda: update_alone(policy, ro, s, grad_accum, opt, 0, clock), device,
                f"update ({label}): policy forward + backward (no reference) + optimizer step",
                phases=clock,
            ))  # fmt: skip
    return out


@dataclass
class UpdateRun:
    reference: float
    update: float  # policy passes + backward + optimizer step, reference excluded
    tokens: int  # prompt + re-tokenized completion + EOS, all sequences


def update_runs(
    policy: Any, ro: Any, s: Any, grad_accum: int, opt: tuple[Any, Any, Any, Any], n: int,
    device: str, layers: Layers, prompt_tokens: int,
) -> list[UpdateRun]:  # fmt: skip
    """`n` updates (reference included) + optimizer steps on the same rollout, timed."""
    from mbpo_bench.trainers import grpo
    from mbpo_bench.trainers.loop import optimizer_step

    params, optimizer, scheduler, cfg = opt
    runs = []
    for i in range(n):
        policy.ref_seconds = 0.0
        sync(device)
        start = time.perf_counter()
        with layers():
            res = grpo.policy_update(policy, ro, s, grad_accum)
        optimizer_step(params, optimizer, scheduler, cfg, i, res.loss, None)
        sync(device)
        total = time.perf_counter() - start
        runs.append(UpdateRun(policy.ref_seconds, total - policy.ref_seconds,
                              prompt_tokens + res.tokens))  # fmt: skip
    return runs


def update_table(runs: dict[str, list[UpdateRun]], body: int, roofline: float) -> list[str]:
    """Markdown section: each variant's update-only runs and their mean (MFU as in the rows)."""
    lines = [
        "## Update alone: repeated updates on one rollout (--update-only)",
        "",
        "| variant | run | reference s | update s | update tokens/s | update MFU % |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def line(label: str, run: str, ref: float, upd: float, tokens: float) -> str:
        mfu = 4 * body * tokens / upd / roofline
        return (f"| {label} | {run} | {ref:.2f} | {upd:.2f} | {tokens / upd:,.0f} | "
                f"{100 * mfu:.1f} |")  # fmt: skip

    for label, rs in runs.items():
        for i, r in enumerate(rs):
            lines.append(line(label, str(i + 1), r.reference, r.update, r.tokens))
        if rs:
            ref = sum(r.reference for r in rs) / len(rs)
            upd = sum(r.update for r in rs) / len(rs)
            tokens = sum(r.tokens for r in rs) / len(rs)
            lines.append(line(label, f"mean of {len(rs)}", ref, upd, tokens))
    return lines
