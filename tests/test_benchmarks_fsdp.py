"""benchmarks/bench_fsdp.py (the issue-21 memory table) wired on the tiny CPU model: every
configuration runs in its own process and gives a row (the rollout one a row per rollout mode, the
two modes drawing the same tokens, each mode the same tokens run to run, with equal first-step
logits; the sharded load scoring as its source did), and the markdown starts with the command;
a configuration past --timeout gives an error row; the Qwen2.5-VL-32B shape is the checkpoint's
layout; benchmarks/gpu_fsdp.sh (the GPU call) runs whole at tiny shapes."""

from __future__ import annotations

import os
import subprocess
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
    assert "2.9M parameters, built in " in rows[1], text  # tiny LLaVA's size
    assert [r.split(" | ")[0] for r in rows[2:4]] == [
        "| rollout-fsdp-layerwise",
        "| rollout-fsdp-gathered",
    ]
    assert "same tokens as layerwise: yes" in rows[3], text
    for row in rows[2:4]:  # each mode run twice with the same seed, then probed twice
        assert "same tokens in all 2 calls (same seed): yes" in row, text
        assert "first-step logits max abs diff probe-to-probe 0.0e+00" in row, text
        assert "to the whole weights " in row, text
    assert "to layerwise: logits max abs diff 0.0e+00" in rows[3], text
    assert "max log-prob difference to the source: 0.00e+00" in rows[4], text  # sharded load


def test_bench_fsdp_refuses_an_unknown_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    import bench_fsdp

    assert bench_fsdp.main(["--configs", "fsdp-huge", "--device", "cpu"]) == 2
    assert "unknown configuration 'fsdp-huge'" in capsys.readouterr().err


def test_first_difference_names_the_earliest_differing_token() -> None:
    from bench_fsdp import _first_difference

    assert _first_difference([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]]) == "yes"
    assert _first_difference([[1, 2, 3], [4, 5, 6]], [[1, 9, 3], [4, 5, 7]]) == (
        "NO (2 of 2 samples differ, the first at token 1)"
    )
    assert _first_difference([[1, 2], [4]], [[1, 2], [4, 5]]) == (
        "NO (1 of 2 samples differ, the first at token 1)"
    )


def test_bench_fsdp_reports_a_configuration_past_its_timeout(tmp_path: Path) -> None:
    import bench_fsdp

    out = tmp_path / "fsdp.md"
    argv = ["--shape", "tiny", "--device", "cpu", "--batch", "2", "--repeats", "1",
            "--configs", "fsdp-lora", "--timeout", "1", "--out", str(out)]  # fmt: skip
    assert bench_fsdp.main(argv) == 0
    row = [line for line in out.read_text().splitlines() if line.startswith("| fsdp-lora")]
    assert len(row) == 1 and "timed out after 1 s (--timeout); last progress: " in row[0], row


def test_bench_fsdp_refuses_no_timed_repeat(capsys: pytest.CaptureFixture[str]) -> None:
    import bench_fsdp

    assert bench_fsdp.main(["--repeats", "0", "--device", "cpu"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err


def test_qwen25vl_32b_shape_is_the_checkpoints_layout() -> None:
    """Built on the meta device (no memory): Qwen2.5-VL-32B-Instruct's 33.45B parameters
    (its model card: 33.5B), 64 decoder layers, 32 vision blocks, 256 image tokens at 448 px."""
    import bench_models

    vlm = bench_models.build("qwen25vl-32b", "llava", "meta", Path("/nonexistent"))
    hf = vlm.hf_model
    assert (vlm.family, vlm.image_size, vlm.num_image_tokens()) == ("qwen2_5_vl", 448, 256)
    assert sum(p.numel() for p in hf.parameters()) == 33_452_718_336
    assert len(hf.model.language_model.layers) == 64 and len(hf.model.visual.blocks) == 32
    assert hf.lm_head.weight is not hf.model.language_model.embed_tokens.weight  # untied


def test_gpu_fsdp_script_runs_whole_at_tiny_shapes(tmp_path: Path) -> None:
    """The exact GPU call (benchmarks/gpu_fsdp.sh) at tiny shapes on CPU: every run writes its
    markdown, no row is an error, the log ends with the budget line."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu_fsdp.sh"), str(tmp_path),
                           "--tiny"], env=env, capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = ["fsdp_full_offload_tiny", "fsdp_lora_tiny-qwen2_5_vl", "fsdp_rollout_repeat_tiny",
             "fsdp_lora_nockpt_tiny-qwen2_5_vl"]  # fmt: skip
    rows = 0
    for name in names:
        text = (tmp_path / f"{name}.md").read_text()
        table = [line for line in text.splitlines()
                 if line.startswith(("| fsdp-", "| ddp-", "| rollout-"))]  # fmt: skip
        assert table and all("n/a (CPU)" in r for r in table), text  # error rows have none
        rows += len(table)
    assert rows == 1 + 2 + 3 + 1
    rollout = (tmp_path / "fsdp_rollout_repeat_tiny.md").read_text()
    assert rollout.count("same tokens in all 3 calls (same seed): yes") == 3, rollout
    assert "== done in" in (tmp_path / "fsdp_gpu.log").read_text()
