"""The quickstart's one-line plan: its stages and how long they should take on this machine.

Why an estimate at all: a first run trains for minutes before it prints a number, and a user
who knows it takes four minutes waits, one who does not presses Ctrl-C. The estimate scales
per-unit costs measured on the reference machine (2 CPU cores; README "What the committed
quickstart report shows") by a ~0.3 s calibration workload timed here against the same
workload's time there. It is a plan, not a promise: `timings.json` records it beside the
measured stage times, so its error is visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mbpo_bench.quickstart_config import QuickstartConfig

# Seconds per unit on the reference machine (2 CPU cores, the committed quickstart run):
# base SFT 117 s / 1000 steps, MBPO 35 s / 60 steps (mining included), one evaluation of
# 3 tasks x 500 items x 4 probes in 10 s, the report (figures, bootstrap) ~5 s.
REF_SFT_STEP_S = 0.117
REF_MBPO_STEP_S = 35.0 / 60
REF_EVAL_SAMPLE_S = 10.0 / (3 * 500 * 4)
REF_REPORT_S = 5.0
# the twin-pair MBPO arm per step relative to mbpo: it mines every counter-prior training item
# with a twin (~3.6k) and trains twins and a conditional term; measured 60.3 s vs 39.2 s for
# mbpo in one default first run on an idle 2-core machine (timings.json of
# `mbpo-bench quickstart --no-cache`, 4 min 43 s in all)
REF_TWINS_FACTOR = 1.55
# best of 5 runs of `calibrate()` on an idle 2-core machine (0.0153-0.0156 s, 2 threads and
# torch's default). An earlier value, 0.045, was taken while the machine ran other jobs: the
# plan then said ~1 min 26 s for that 4 min 43 s run
REF_CALIBRATION_S = 0.0155
EMBEDDED_EVAL_ITEMS = 1000  # items per task in the embedded eval split


def calibrate(threads: int | None = None) -> float:
    """Best of 5 timings of 40 small forward/backward matmul passes (shapes of the tiny model)."""
    import torch

    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(64, 256, generator=g, requires_grad=True)
        w = torch.randn(256, 256, generator=g, requires_grad=True)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(40):
                (torch.tanh(a @ w) @ w.T).sum().backward()
            best = min(best, time.perf_counter() - t)
        return best
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class Plan:
    stages: dict[str, float]  # expected seconds per stage
    speed: float  # this machine's speed relative to the reference (2 = twice as fast)
    base_cached: bool

    @property
    def total(self) -> float:
        return sum(self.stages.values())

    def line(self) -> str:
        parts = ", ".join(f"{k} ~{_fmt(v)}" for k, v in self.stages.items())
        cached = " (base from the cache)" if self.base_cached else ""
        return (
            f"plan{cached}: {parts}; expected ~{_fmt(self.total)} in all on this machine "
            f"({self.speed:.1f}x the 2-core reference)"
        )


def _fmt(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def quickstart_plan(
    config: QuickstartConfig, *, base_cached: bool, calibration_s: float | None = None
) -> Plan:
    """Expected seconds of each quickstart stage for `config` on this machine."""
    import torch

    if torch.cuda.is_available():  # the reference is a CPU; a GPU run is not scaled from it
        speed = 1.0
    else:
        measured = calibration_s if calibration_s is not None else calibrate(config.threads)
        speed = REF_CALIBRATION_S / max(measured, 1e-9)
    stages: dict[str, float] = {}
    seeds = config.seeds
    if not base_cached:  # (only the first seed's base is known to be cached or not)
        stages["base"] = seeds * config.base.optim.steps * REF_SFT_STEP_S / speed
    mbpo = config.mbpo.optim.steps * REF_MBPO_STEP_S / speed
    sft_step = REF_SFT_STEP_S * config.mbpo.optim.batch_size / config.base.optim.batch_size
    for arm in config.arms:
        if arm == "mbpo":
            stages[arm] = seeds * mbpo
        elif arm == "mbpo_twins":  # mines ~3x the candidates of mbpo (every counter-prior item)
            stages[arm] = (
                seeds * REF_TWINS_FACTOR * config.mbpo_twins.optim.steps * (REF_MBPO_STEP_S / speed)
            )
        elif arm == "sft_time" and config.control_steps is not None:
            stages[arm] = seeds * config.control_steps * REF_SFT_STEP_S / speed
        elif arm == "sft_time":
            stages[arm] = seeds * mbpo * config.control_time_factor
        elif arm == "grpo_mined":  # MBPO's online half, no mining
            stages[arm] = seeds * mbpo * 0.6
        elif arm in ("dpo", "dpo_mdpo"):  # a pair is two (three) sequences and a reference
            stages[arm] = seeds * config.mbpo.optim.steps * sft_step * 4 / speed
        else:  # the matched SFT controls: MBPO's steps at MBPO's (smaller) batch
            stages[arm] = seeds * config.mbpo.optim.steps * sft_step / speed
    items = min(config.eval_limit or EMBEDDED_EVAL_ITEMS, EMBEDDED_EVAL_ITEMS)
    per_eval = 3 * items * len(config.probes) * REF_EVAL_SAMPLE_S / speed
    stages["eval"] = seeds * (1 + len(config.arms)) * per_eval
    stages["report"] = REF_REPORT_S / speed
    return Plan(stages=stages, speed=speed, base_cached=base_cached)
