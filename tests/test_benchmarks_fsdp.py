"""benchmarks/bench_fsdp.py (the issue-21 memory table) wired on the tiny CPU model: every
configuration runs in its own process and gives a row, and the markdown starts with the command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = [pytest.mark.bench, pytest.mark.slow]  # benchmark scripts: `tox -e bench`


def test_bench_fsdp_rows_on_tiny_cpu(tmp_path: Path) -> None:
    import bench_fsdp

    out = tmp_path / "fsdp.md"
    argv = ["--shape", "tiny", "--device", "cpu", "--batch", "2", "--repeats", "1",
            "--configs", "ddp-lora,fsdp-full-offload", "--out", str(out)]  # fmt: skip
    assert bench_fsdp.main(argv) == 0
    text = out.read_text()
    assert "python benchmarks/bench_fsdp.py --shape tiny" in text
    rows = [line for line in text.splitlines() if line.startswith("| ddp-") or
            line.startswith("| fsdp-")]  # fmt: skip
    assert len(rows) == 2 and all("n/a (CPU)" in r for r in rows), text  # no error rows
