"""Where the time of one benchmark call goes, by operator class: the "what bounds it" evidence.

`profile_section(fn, device, title)` runs `fn` once under torch.profiler and returns markdown: the
time split into matrix multiplies (GEMM kernels and aten mm/addmm/bmm), attention (SDPA / flash /
memory-efficient kernels), and everything else (norms, activations, rotary, casts, copies:
memory-bound work that fusion could remove), then the top operators by self time. On CUDA the
device (kernel) time is used, on CPU the CPU time. One call, after the caller's warm-up; the
profiler's own overhead inflates small ops, so read shares, not absolute times.

It also reports the call's wall time (perf_counter, device-synchronised) and the device-busy
share = kernel time / wall time: a call whose GPU idles while Python prepares inputs or launches
small kernels one by one shows a low busy share however its kernels split. The profiler's CPU-side
overhead lengthens the wall time, so the busy share is a lower bound; compare calls profiled the
same way.

Optional named phases: the caller creates a `PhaseClock`, wraps the top-level parts of `fn` in
`clock.phase(name)` (a synchronised timer plus a `record_function` range) and passes the clock.
Each phase gets its wall time and the kernels that STARTED inside its range (so backward kernels
launched from autograd's own thread count too: attribution is by time, not by call stack), with
their class split. The synchronisation at each phase's ends is what makes that attribution exact.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from bench_models import sync

# cuBLAS / CUTLASS kernel names, aten ops on CPU, and inductor's matmul templates (triton_tem_*)
GEMM_MARKERS = ("gemm", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "cutlass", "sm90_xmma", "nvjet", "triton_tem")  # fmt: skip
# flash / memory-efficient (fmha) / cuDNN (…_sdpa_…) kernels and the aten SDPA ops
ATTENTION_MARKERS = ("flash", "attention", "fmha", "efficient_attention", "sdpa")
PHASE_PREFIX = "phase: "
CLASSES = ("matmul", "attention", "other")


def op_class(name: str) -> str:
    """'matmul', 'attention' or 'other' for an operator or kernel name."""
    low = name.lower()
    if any(m in low for m in ATTENTION_MARKERS):
        return "attention"
    if any(m in low for m in GEMM_MARKERS):
        return "matmul"
    return "other"


@dataclass
class PhaseClock:
    """Named top-level phases of a profiled call: synchronised wall time + a profiler range."""

    device: str
    seconds: dict[str, float] = field(default_factory=dict)  # insertion order = first use

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        from torch.profiler import record_function

        sync(self.device)
        start = time.perf_counter()
        with record_function(PHASE_PREFIX + name):
            yield
            sync(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _self_time(event: Any, on_cuda: bool) -> float:
    """Microseconds of the event's own work on the device that ran it."""
    if on_cuda:
        return float(getattr(event, "self_device_time_total", 0.0) or 0.0)
    return float(event.self_cpu_time_total)


def _is_work(event: Any, name: str, on_cuda: bool) -> bool:
    """A kernel (CUDA) or an operator (CPU): not a user range, whose device 'time' is a span."""
    if getattr(event, "is_user_annotation", False) or name.startswith(PHASE_PREFIX):
        return False
    if on_cuda:  # kernels carry the device time; their aten parents carry none of it themselves
        return getattr(event, "device_type", None) != torch.autograd.DeviceType.CPU
    return True


def _shares(pairs: list[tuple[str, float]]) -> dict[str, float]:
    out = dict.fromkeys(CLASSES, 0.0)
    for name, t in pairs:
        out[op_class(name)] += t
    return out


def _phase_rows(prof: Any, clock: PhaseClock, on_cuda: bool, wall: float) -> list[str]:
    """One table row per phase: wall, kernels that started inside its range, their split."""
    events = list(prof.events())
    ranges = [
        (e.name[len(PHASE_PREFIX) :], e.time_range.start, e.time_range.end)
        for e in events
        if e.name.startswith(PHASE_PREFIX)
        and getattr(e, "device_type", None) == torch.autograd.DeviceType.CPU
    ]
    work: dict[str, list[tuple[str, float]]] = {name: [] for name in clock.seconds}
    for e in events:
        if not _is_work(e, e.name, on_cuda):
            continue
        t = _self_time(e, on_cuda)
        start = e.time_range.start
        for name, lo, hi in ranges:
            if lo <= start <= hi:
                work.setdefault(name, []).append((e.name, t))
                break
    work_s = "kernel s" if on_cuda else "CPU op s"
    rows = [
        f"| phase | wall s | share of the call % | {work_s} | busy % | matmul % | attention % "
        "| other % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, seconds in clock.seconds.items():
        pairs = work.get(name, [])
        busy = sum(t for _, t in pairs) / 1e6
        sh = _shares(pairs)
        split = " | ".join(f"{100 * sh[c] / (busy * 1e6 or 1.0):.1f}" for c in CLASSES)
        rows.append(
            f"| {name} | {seconds:.3f} | {100 * seconds / (wall or 1.0):.1f} | {busy:.3f} | "
            f"{100 * busy / (seconds or 1.0):.1f} | {split} |"
        )
    return rows


def profile_section(
    fn: Callable[[], Any],
    device: str,
    title: str,
    top: int = 12,
    phases: PhaseClock | None = None,
) -> str:
    """Markdown: run `fn` once under the profiler and summarise its time by operator class,
    its wall time and device-busy share, and (given a clock `fn` uses) its named phases."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    if phases is not None:
        phases.seconds.clear()
    with profile(activities=activities) as prof:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - start
    events = [
        e for e in prof.key_averages() if _self_time(e, on_cuda) > 0 and _is_work(e, e.key, on_cuda)
    ]
    total = sum(_self_time(e, on_cuda) for e in events) or 1.0
    shares = _shares([(e.key, _self_time(e, on_cuda)) for e in events])
    clock = "device (kernel)" if on_cuda else "CPU"
    busy = "kernel time / wall" if on_cuda else "CPU operator time / wall"
    lines = [
        f"## Profile: {title}",
        "",
        f"- {clock} time {total / 1e6:.3f} s in one call: "
        + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in shares.items()),
        f"- wall time {wall:.3f} s (synchronised, profiler overhead included); busy share "
        f"({busy}) {100 * total / 1e6 / wall:.1f}% (low: the device waits on the CPU, for input "
        "preparation or kernel launches)",
    ]
    if phases is not None and phases.seconds:
        lines += ["", *_phase_rows(prof, phases, on_cuda, wall)]
    lines += [
        "",
        "| operator / kernel | class | self time ms | share % |",
        "|---|---|---:|---:|",
    ]
    ranked = sorted(events, key=lambda e: _self_time(e, on_cuda), reverse=True)[:top]
    for e in ranked:
        name = e.key if len(e.key) <= 70 else e.key[:67] + "..."
        t = _self_time(e, on_cuda)
        lines.append(f"| `{name}` | {op_class(e.key)} | {t / 1e3:.2f} | {100 * t / total:.1f} |")
    return "\n".join(lines) + "\n"
