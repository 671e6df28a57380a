"""Where the time of one benchmark call goes, by operator class: the "what bounds it" evidence.

`profile_section(fn, device)` runs `fn` once under torch.profiler and returns markdown: the time
split into matrix multiplies (GEMM kernels and aten mm/addmm/bmm), attention (SDPA / flash /
memory-efficient kernels), and everything else (norms, activations, rotary, casts, copies:
memory-bound work that fusion could remove), then the top operators by self time. On CUDA the
device (kernel) time is used, on CPU the CPU time. One call, after the caller's warm-up; the
profiler's own overhead inflates small ops, so read shares, not absolute times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

GEMM_MARKERS = ("gemm", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "cutlass", "sm90_xmma", "nvjet")  # fmt: skip
ATTENTION_MARKERS = ("flash", "attention", "fmha", "efficient_attention")


def op_class(name: str) -> str:
    """'matmul', 'attention' or 'other' for an operator or kernel name."""
    low = name.lower()
    if any(m in low for m in ATTENTION_MARKERS):
        return "attention"
    if any(m in low for m in GEMM_MARKERS):
        return "matmul"
    return "other"


def _self_time(event: Any, on_cuda: bool) -> float:
    """Microseconds of the event's own work on the device that ran it."""
    if on_cuda:
        return float(getattr(event, "self_device_time_total", 0.0) or 0.0)
    return float(event.self_cpu_time_total)


def profile_section(fn: Callable[[], Any], device: str, title: str, top: int = 12) -> str:
    """Markdown: run `fn` once under the profiler and summarise its time by operator class."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if on_cuda:
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if _self_time(e, on_cuda) > 0]
    if on_cuda:  # kernels carry the device time; their aten parents carry none of it themselves
        events = [e for e in events if getattr(e, "device_type", None) != torch.autograd.DeviceType.CPU]  # fmt: skip
    total = sum(_self_time(e, on_cuda) for e in events) or 1.0
    shares: dict[str, float] = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for e in events:
        shares[op_class(e.key)] += _self_time(e, on_cuda)
    clock = "device (kernel)" if on_cuda else "CPU"
    lines = [
        f"## Profile: {title}",
        "",
        f"- {clock} time {total / 1e6:.3f} s in one call: "
        + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in shares.items()),
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
