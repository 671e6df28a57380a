"""benchmarks/profile_ops.py: operator classes and the markdown breakdown (CPU profiler)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from profile_ops import op_class, profile_section


def test_operator_classes() -> None:
    assert op_class("aten::mm") == op_class("sm90_xmma_gemm_bf16bf16") == "matmul"
    assert op_class("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_class("flash_fwd_kernel") == "attention"
    assert op_class("aten::silu") == op_class("aten::mul") == "other"


def test_profile_section_splits_a_matmul_heavy_call() -> None:
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    text = profile_section(lambda: torch.relu(a @ b) * 2, "cpu", "toy")
    assert text.startswith("## Profile: toy")
    share = float(text.split("matmul ")[1].split("%")[0])
    assert 0.0 < share <= 100.0
    assert "| `aten::mm` | matmul |" in text
