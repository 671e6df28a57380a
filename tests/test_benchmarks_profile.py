"""benchmarks/profile_ops.py: operator classes, the markdown breakdown, wall time, busy share and
named phases (CPU profiler)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from profile_ops import PhaseClock, op_class, profile_section

pytestmark = pytest.mark.bench  # benchmark scripts: `tox -e bench`, not the default envs


def _number(text: str, before: str) -> float:
    match = re.search(re.escape(before) + r"\s*([0-9.]+)", text)
    assert match, f"{before!r} not in:\n{text}"
    return float(match.group(1))


def _phase_row(text: str, name: str) -> list[str]:
    row = next(ln for ln in text.splitlines() if ln.startswith(f"| {name} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_operator_classes() -> None:
    assert op_class("aten::mm") == op_class("sm90_xmma_gemm_bf16bf16") == "matmul"
    assert op_class("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_class("flash_fwd_kernel") == "attention"
    assert op_class("aten::silu") == op_class("aten::mul") == "other"
    assert op_class("cudnn_generated_fort_native_sdpa_sm90_knob_7") == "attention"
    assert op_class("fmha_cutlassF_bf16_aligned_64x128_rf_sm80") == "attention"
    assert op_class("nvjet_tst_192x192_64x3_1x2_h_bz_coopB_TNT") == "matmul"
    assert op_class("triton_tem_fused_mm_0") == "matmul"  # inductor's matmul template
    assert op_class("triton_poi_fused_add_mul_rsqrt_0") == "other"  # fused glue


def test_profile_section_splits_a_matmul_heavy_call() -> None:
    torch.set_num_threads(1)
    # 4 matmuls of 512: ~10-50 ms of operator time, well above the section's 1 ms resolution
    # (one 256 matmul took ~0.3 ms and printed as "CPU time 0.000 s" on a fast core)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    text = profile_section(lambda: [torch.relu(a @ b) * 2 for _ in range(4)], "cpu", "toy")
    assert text.startswith("## Profile: toy")
    share = float(text.split("matmul ")[1].split("%")[0])
    assert 0.0 < share <= 100.0
    assert "| `aten::mm` | matmul |" in text
    wall = _number(text, "wall time")
    cpu = _number(text, "CPU time")
    busy = _number(text, "CPU operator time / wall)")
    assert wall > 0.0 and 0.0 < cpu <= wall
    assert 0.0 < busy <= 100.0
    assert "| phase |" not in text  # no clock given: no phase table


def test_an_idle_call_shows_a_low_busy_share() -> None:
    """A call that mostly waits (here: sleeps, as a GPU waits on Python) has a low busy share,
    however its few operators split."""
    torch.set_num_threads(1)
    a = torch.randn(64, 64)

    def mostly_waiting() -> None:
        time.sleep(0.2)
        a @ a

    text = profile_section(mostly_waiting, "cpu", "idle")
    assert _number(text, "wall time") >= 0.2
    assert _number(text, "CPU operator time / wall)") < 50.0


def test_named_phases_get_their_wall_time_and_their_own_operator_split() -> None:
    torch.set_num_threads(1)
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    clock = PhaseClock("cpu")

    def two_phases() -> None:
        with clock.phase("multiply"):
            for _ in range(4):
                a @ b
        with clock.phase("activate"):
            for _ in range(20):
                torch.relu(a) * 2

    text = profile_section(two_phases, "cpu", "phased", phases=clock)
    assert list(clock.seconds) == ["multiply", "activate"]
    header = _phase_row(text, "phase")
    assert header[:5] == ["phase", "wall s", "share of the call %", "CPU op s", "busy %"]
    multiply, activate = _phase_row(text, "multiply"), _phase_row(text, "activate")
    split = header.index("matmul %")
    assert float(multiply[split]) > 90.0
    assert float(activate[split]) == 0.0
    assert float(activate[split + 2]) == 100.0  # other %: relu / mul only
    assert float(multiply[1]) + float(activate[1]) <= _number(text, "wall time") + 1e-3
    # the phase markers are ranges, not work: they never show up as operators
    assert "phase: " not in text.split("| operator / kernel |")[1]


def test_a_clock_is_reset_by_each_profiled_call() -> None:
    clock = PhaseClock("cpu")
    clock.seconds["stale"] = 5.0  # left from an earlier call

    def once() -> None:
        with clock.phase("only"):
            torch.ones(4).sum()

    text = profile_section(once, "cpu", "again", phases=clock)
    assert list(clock.seconds) == ["only"]
    assert "| stale |" not in text and "| only |" in text
