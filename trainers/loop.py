"""The mechanics every trainer shares: optimizer, schedule, accumulation, checkpoints, metrics.

A trainer owns its math and hands `train_loop` a `step_fn(step) -> StepResult` that runs the
forward and backward passes of one optimizer step (all of its micro-batches, with loss
normalisers of the whole batch, so accumulation is exact). The loop does the rest, the same way
for SFT, DPO, GRPO and MBPO: per-step seeding, a non-finite loss or gradient check BEFORE the
optimizer step, gradient averaging across ranks, clipping, AdamW, warmup + linear decay, the
metrics row (JSONL, TensorBoard when installed, rich progress), checkpoints every N steps,
`--resume`, and the final weights. Under torchrun each rank runs its shard of the global batch
(`mbpo_bench.parallel`), the step's loss and metrics are averaged over ranks before the NaN check and
the metrics row, only rank 0 writes, and a checkpoint resumes on any number of processes (it
holds the replicated weights and optimizer state, and the data position is the step count).

Determinism: each step reseeds torch and Python from (seed, step, rank), so a step's sampling
does not depend on what ran before it; checkpoints still carry the RNG states. The data order is
a pure function of (seed, step) (`IndexStream`), so the data position is the step count.

`MBPO_BENCH_DEBUG_KILL_AT_STEP=N` (environment, not config, so a resumed run keeps the same
config) makes the process SIGKILL itself right after step N: the kill -9 / resume tests use it.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from mbpo_bench.trainers import checkpoint, sharding

from mbpo_bench import parallel
from mbpo_bench.errors import UserError
from mbpo_bench.runs import (
    RunDir,
    append_jsonl,
    plain_modes,
    read_jsonl,
    write_atomic,
    write_json_atomic,
)

KILL_ENV = "MBPO_BENCH_DEBUG_KILL_AT_STEP"
METRICS = "metrics.jsonl"


@dataclass
class OptimConfig:
    """AdamW with warmup then decay. `batch_size` is per optimizer step (global, all ranks);
    each trainer says what one unit is (samples, pairs, prompts); `grad_accum` splits it."""

    lr: float = 1e-5
    steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        # ranges (steps, batch_size, grad_accum >= 1, lr > 0, ...): mbpo_bench.ranges, checked
        # where a config is parsed, with the field's full name in the message
        if self.grad_accum >= 1 and self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum


@dataclass
class RuntimeConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    gradient_checkpointing: bool = False
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    # fp32 matmuls on TF32 tensor cores (CUDA): peft keeps LoRA adapters in fp32 on a bf16
    # base, and plain fp32 GEMMs run on CUDA cores at a fraction of the tensor-core rate
    tf32: bool = True
    # the trained passes (GRPO/MBPO reference + policy forward and backward) under
    # torch.autocast at the model's bf16, TRL's `bf16=True` (accelerate's autocast): peft keeps
    # LoRA A/B in fp32 (master weights, fp32 gradients) and autocast runs their matmuls in bf16
    # instead of fp32/TF32. auto = on for a bf16 model on CUDA without FSDP (CPU runs and fp32
    # models unchanged); true = also on CPU (needs runtime.dtype=bfloat16); false = never
    autocast: bool | Literal["auto"] = "auto"
    # torch.compile each decoder layer (`models.compile.compiled_layers`) for the training
    # forward/backward passes (policy update, reference log-probs), never for rollout generation
    # or PGD mining. Off by default: the first steps pay the compile (~1 min at 7B), which long
    # runs win back (measured figures: reports/perf/h200)
    compile_layers: bool = False
    # torch's compile caches (inductor FX graphs, AOTAutograd, Triton kernels) kept in a folder
    # that outlives the process, so a second run of the same shapes skips most of the compile
    # (`models.compile.use_compile_cache`): auto = $TORCHINDUCTOR_CACHE_DIR or
    # ~/.cache/mbpo-bench/torch-compile; off = torch's defaults (/tmp); or a folder
    compile_cache: str = "auto"
    # ddp: every process holds the whole model, gradients are all-reduced (mbpo_bench.parallel);
    # fsdp: FSDP2 shards the decoder and vision layers over the processes (trainers/sharding.py),
    # for models whose weights, gradients and optimizer state outgrow one GPU; needs a launcher
    strategy: Literal["ddp", "fsdp"] = "ddp"
    fsdp_offload: bool = False  # fsdp: sharded weights, gradients and AdamW state in CPU memory
    # fsdp, GRPO/MBPO sampling: "layerwise" all-gathers each layer for each decode step (every
    # rank steps together); "gathered" all-gathers the whole weights once per rollout (one full
    # copy per GPU meanwhile, no collective per token); "auto": gathered when that copy fits
    # in half the free device memory of every rank, else layerwise (sharding.rollout_mode)
    fsdp_rollout: Literal["auto", "layerwise", "gathered"] = "auto"
    save_every: int = 50
    keep_checkpoints: int = 2
    progress: bool = True
    tensorboard: bool = True  # only when the tensorboard package is installed
    # what the policy is fed (models/families.py PROTOCOLS) and Qwen's pixel limits
    protocol: str = "native"
    min_pixels: int | None = None
    max_pixels: int | None = None


@dataclass
class StepResult:
    loss: float  # the optimizer step's total loss (what was backpropagated)
    metrics: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    tokens: int = 0


class TrainingDiverged(UserError):
    """A non-finite loss, gradient or sampling distribution: the run stops (exit code 3), the
    last good checkpoint stays. `problem` says what happened; `fix` is the advice after it
    (the CLI replaces it with the exact command to run)."""

    DEFAULT_FIX = "lower optim.lr or check the data, then rerun with --resume"

    def __init__(self, problem: str, fix: str = DEFAULT_FIX) -> None:
        self.problem = problem
        super().__init__(f"{problem} — {fix}", exit_code=3)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def setup_runtime(runtime: RuntimeConfig) -> None:
    """Threads, seeds and (under torchrun) the process group, before any model is built."""
    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    torch.backends.cuda.matmul.allow_tf32 = runtime.tf32
    if runtime.compile_layers or runtime.compile_cache != "auto":
        from mbpo_bench.models.compile import use_compile_cache

        use_compile_cache(runtime.compile_cache)
    seed_everything(runtime.seed)
    if runtime.strategy == "fsdp":
        sharding.require_process_group(runtime.device)
    parallel.setup(runtime.device)


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + parallel.rank() * 104_729) % (2**31 - 1)


@dataclass(frozen=True)
class IndexStream:
    """Deterministic batches of indices into a dataset of `n`: a fresh permutation per epoch."""

    n: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True

    def _perm(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def batch(self, step: int) -> list[int]:
        if self.n == 0:
            return []
        start = step * self.batch_size
        out: list[int] = []
        epoch, offset = divmod(start, self.n)
        while len(out) < self.batch_size:
            perm = self._perm(epoch)
            take = perm[offset : offset + self.batch_size - len(out)].tolist()
            out.extend(take)
            epoch, offset = epoch + 1, 0
        return out

    def position(self, step: int) -> dict[str, int]:
        epoch, offset = divmod(step * self.batch_size, max(self.n, 1))
        return {"step": step, "epoch": epoch, "offset": offset}


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        foreach=adamw_foreach(params),
    )


def adamw_foreach(params: Sequence[torch.nn.Parameter]) -> bool | None:
    """None (torch's choice: the fused-list kernels on CUDA) unless `params` mix sharded
    (DTensor) and plain tensors, as FSDP full fine-tuning does (layers sharded, embeddings and
    projector replicated): the list kernels refuse that mix ("got mixed torch.Tensor and
    DTensor", seen on the H200), so the per-tensor loop. One param group either way, so a
    replicated checkpoint's optimizer state still maps onto it."""
    from torch.distributed.tensor import DTensor

    kinds = {isinstance(p, DTensor) for p in params}
    return False if len(kinds) > 1 else None


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr after `step` scheduler steps: warmup, then decay to 0."""
    warmup = math.ceil(cfg.warmup_ratio * cfg.steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(cfg.steps - warmup, 1)
    if cfg.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))


class MetricsLog:
    """metrics.jsonl (+ TensorBoard when installed); rank 0 only; truncatable on resume."""

    def __init__(self, run: RunDir, tensorboard: bool) -> None:
        self.path = run.path / METRICS
        self.writer: Any = None
        if tensorboard and parallel.is_main():
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run.path / "tensorboard"))
            except ImportError:
                self.writer = None

    def truncate(self, step: int) -> None:
        """Drop rows after `step` (written by a run that died before its next checkpoint)."""
        if not parallel.is_main() or not self.path.exists():
            return
        rows = [r for r in read_jsonl(self.path) if int(r.get("step", 0)) <= step]
        import json

        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def log(self, row: dict[str, Any]) -> None:
        if not parallel.is_main():
            return
        append_jsonl(self.path, [row])
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key != "step":
                    self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress(enabled: bool, total: int, title: str) -> Any:
    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from mbpo_bench.progress import columns

    return Progress(
        *columns("steps"),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        disable=not enabled or not parallel.is_main(),
        transient=False,
    )


def _summary(row: dict[str, Any]) -> str:
    keys = ("loss", "reward_mean", "accuracy", "kl")
    return "  ".join(f"{k} {row[k]:.4g}" for k in keys if isinstance(row.get(k), int | float))


@dataclass
class LoopResult:
    steps: int
    last: dict[str, Any]
    resumed_from: int | None


def _across_ranks(result: StepResult) -> StepResult:
    """Loss and metrics averaged over ranks, samples and tokens summed (identity in one
    process). Every rank then checks the same loss, so a NaN stops all of them together."""
    if parallel.world_size() <= 1:
        return result
    parts = parallel.gather(result)
    return StepResult(
        loss=sum(p.loss for p in parts) / len(parts),
        metrics=parallel.average([p.metrics for p in parts]),
        samples=sum(p.samples for p in parts),
        tokens=sum(p.tokens for p in parts),
    )


def _check_world(optim: OptimConfig) -> None:
    world = parallel.world_size()
    if optim.batch_size % world:
        raise UserError(
            f"optim.batch_size {optim.batch_size} does not split over {world} processes — "
            f"the global batch is sharded evenly across ranks: use a multiple of {world}"
        )


# torch.multinomial's message when the sampling distribution is not finite (a diverged policy
# samples from inf/nan logits during a GRPO/MBPO rollout)
_BAD_SAMPLING = "probability tensor contains either"


def _set_aside(root: Path | None, step: int) -> Path | None:
    """Move the checkpoint written right before a diverged `step` out of `latest`'s reach.

    Step N's loss (or gradient, or rollout) is computed with the weights after update N - 1, so
    the checkpoint of step N - 1 holds the weights that produced the non-finite value: resuming
    from it would diverge again. It is renamed `diverged-step-...` (kept for inspection) and
    latest.json is pointed at the newest remaining checkpoint (or removed when none is left)."""
    if root is None:
        return None
    suspect = root / f"step-{step - 1:06d}"
    if not suspect.is_dir() or not parallel.is_main():
        return None
    aside = root / f"diverged-{suspect.name}"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(suspect, aside)
    (root / checkpoint.LATEST).unlink(missing_ok=True)
    good = checkpoint.latest(root)
    if good is not None:
        write_json_atomic(root / checkpoint.LATEST, {"step": good.step, "dir": good.path.name})
    return aside


def _diverged(what: str, value: Any, step: int, root: Path | None) -> None:
    """Raise TrainingDiverged; `root` is the run's checkpoints folder (None: no checkpoints)."""
    aside = _set_aside(root, step)
    last = checkpoint.latest(root) if root is not None else None
    keep = (
        f"the last good checkpoint is {last.path} (step {last.step})"
        if last is not None
        else "no good checkpoint was written yet (a resume starts from the beginning)"
    )
    if aside is not None:
        keep += f"; {aside.name}, whose weights gave this value, was set aside"
    raise TrainingDiverged(
        f"{what} is {value} at step {step}; training stopped before the optimizer step, {keep}"
    )


def _params_finite(params: list[torch.nn.Parameter]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def _run_step(step_fn: Callable[[int], StepResult], step: int, root: Path) -> StepResult:
    """`step_fn(step)`, with a non-finite sampling distribution reported as divergence."""
    try:
        return step_fn(step)
    except RuntimeError as exc:
        if _BAD_SAMPLING in str(exc):
            _diverged("the sampling distribution", "not finite (inf or nan)", step + 1, root)
        raise


def _apply_current_settings(optimizer: Any, scheduler: Any, cfg: OptimConfig) -> None:
    """After a resume: the base lr and schedule of THIS config, at the restored position.

    The checkpoint restores the optimizer's param groups and the scheduler's `base_lrs` with
    the lr of the run that wrote it; a resume that changes `optim.lr` or the schedule (allowed,
    `runs.SAFE_ON_RESUME`) must continue with the new ones. With an unchanged config this
    recomputes exactly the values LambdaLR itself computes, so a plain resume stays exact."""
    factor = lr_factor(scheduler.last_epoch, cfg)
    scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * factor
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _resume(
    run: RunDir,
    resume: bool,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    optim: OptimConfig,
) -> int | None:
    ckpt = checkpoint.latest(run.path / "checkpoints")
    if ckpt is None:
        return None
    if not resume:
        raise UserError(
            f"run folder {run.path} has a checkpoint at step {ckpt.step} from an unfinished run — "
            "pass --resume to continue it or --overwrite to start over"
        )
    checkpoint.load(ckpt, model, optimizer=optimizer, scheduler=scheduler)
    _apply_current_settings(optimizer, scheduler, optim)
    run.log(f"resumed from {ckpt.path}")
    return ckpt.step


def _save_final(run: RunDir, save_final: Callable[[Path | None], None]) -> None:
    final = run.path / "final"
    tmp = run.path / f".tmp-final-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_final(tmp)
    plain_modes(tmp)  # safetensors writes owner-only files
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def optimizer_step(
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: OptimConfig,
    step: int,
    loss: float,
    root: Path | None,
) -> float:
    """One optimizer step after the backward passes: refuse a non-finite loss or gradient norm,
    average gradients over ranks, clip, step optimizer and schedule; returns the gradient norm."""
    if not math.isfinite(loss):
        _diverged("the loss", loss, step, root)
    parallel.all_reduce_grads(params)
    norm = sharding.clip_grad_norm(params, cfg.max_grad_norm)  # torch's unless FSDP-sharded
    if not math.isfinite(norm):
        _diverged("the gradient norm", norm, step, root)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def train_loop(
    *,
    run: RunDir,
    model: torch.nn.Module,
    optim: OptimConfig,
    runtime: RuntimeConfig,
    step_fn: Callable[[int], StepResult],
    save_final: Callable[[Path | None], None],
    resume: bool = False,
    title: str = "train",
    data_position: Callable[[int], dict[str, int]] | None = None,
) -> LoopResult:
    """Run steps [resumed step, optim.steps) of `step_fn`, then save the final weights."""
    _check_world(optim)
    params = [p for p in model.parameters() if p.requires_grad]
    sharded = sharding.is_sharded(model)
    if not params:
        raise UserError("the model has no trainable parameters — check the LoRA target modules")
    optimizer = build_optimizer(params, optim)
    scheduler = build_scheduler(optimizer, optim)
    seed_everything(runtime.seed)
    start = _resume(run, resume, model, optimizer, scheduler, optim)
    log = MetricsLog(run, runtime.tensorboard)
    log.truncate(start or 0)
    root = run.path / "checkpoints"
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    with _progress(runtime.progress, optim.steps, title) as bar:
        task = bar.add_task(title, total=optim.steps, completed=start or 0, info="")
        for step in range(start or 0, optim.steps):
            t_step = time.perf_counter()
            seed = step_seed(runtime.seed, step)
            random.seed(seed)
            torch.manual_seed(seed)
            optimizer.zero_grad(set_to_none=True)
            result = _across_ranks(_run_step(step_fn, step, root))
            lr = scheduler.get_last_lr()[0]
            norm = optimizer_step(params, optimizer, scheduler, optim, step + 1, result.loss, root)
            dt = max(time.perf_counter() - t_step, 1e-9)
            row = {
                "step": step + 1,
                "loss": result.loss,
                **result.metrics,
                "lr": lr,
                "grad_norm": norm,
                "samples_per_s": result.samples / dt,
                "tokens_per_s": result.tokens / dt,
                "step_time_s": dt,
                "elapsed_s": time.perf_counter() - t0,
            }
            log.log(row)
            done = step + 1
            if done % runtime.save_every == 0 or done == optim.steps:
                # never save weights that are already lost (replicated weights: every rank
                # decides alike; FSDP shards would need a collective, so they are not checked)
                if not sharded and not _params_finite(params):
                    _diverged("a weight", "not finite (after the previous update)", done + 1, root)
                if parallel.is_main() or sharded:  # sharded: every rank writes its shards
                    position = data_position(done) if data_position else {"step": done}
                    checkpoint.save(
                        root, done, model, optimizer=optimizer,
                        scheduler=scheduler, data=position, keep=runtime.keep_checkpoints,
                    )  # fmt: skip
                parallel.barrier()
            bar.update(task, completed=done, info=_summary(row))
            if kill_at and done == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    log.close()
    if not row and parallel.is_main():  # resumed after the last step: report its row
        rows = read_jsonl(log.path)
        row = rows[-1] if rows else {}
    if parallel.is_main():
        _save_final(run, save_final)
    elif sharded:
        save_final(None)  # gathering the whole weights is a collective: every rank takes part
    if parallel.is_main():
        run.finish(steps=optim.steps, metrics=row)
    return LoopResult(steps=optim.steps, last=row, resumed_from=start)
