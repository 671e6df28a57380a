"""benchmarks/bench_fsdp.py (the issue-21 memory table) wired on the tiny CPU model: every
configuration runs in its own process and gives a row (the rollout one a row per rollout mode, the
two modes drawing the same tokens; the sharded load scoring as its source did), and the markdown
starts with the command."""

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
            "--configs", "ddp-lora,fsdp-full-offload,rollout-fsdp,load-fsdp", "--rollout-prompts", "2",
            "--num-generations", "2", "--rollout-tokens", "3", "--out", str(out)]  # fmt: skip
    assert bench_fsdp.main(argv) == 0
    text = out.read_text()
    assert "python benchmarks/bench_fsdp.py --shape tiny" in text
    rows = [line for line in text.splitlines() if line.startswith(("| ddp-", "| fsdp-",
                                                                    "| rollout-", "| load-"))]  # fmt: skip
    assert len(rows) == 5 and all("n/a (CPU)" in r for r in rows), text  # no error rows
    assert [r.split(" | ")[0] for r in rows[2:4]] == [
        "| rollout-fsdp-layerwise",
        "| rollout-fsdp-gathered",
    ]
    assert "same tokens as layerwise: yes" in rows[3], text
    assert "max log-prob difference to the source: 0.00e+00" in rows[4], text  # sharded load


def test_bench_fsdp_refuses_an_unknown_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    import bench_fsdp

    assert bench_fsdp.main(["--configs", "fsdp-huge", "--device", "cpu"]) == 2
    assert "unknown configuration 'fsdp-huge'" in capsys.readouterr().err
