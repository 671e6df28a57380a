"""`mbpo-bench models list|init` through the real CLI entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mbpo_bench.cli.main import main
from mbpo_bench.models import load_model


def test_init_writes_a_loadable_model_and_refuses_to_clobber(tmp_path: Path, capsys):
    out = tmp_path / "m"
    assert main(["models", "init", "--family", "qwen2_5_vl", "--out", str(out), "--seed", "2"]) == 0
    assert load_model(out).family == "qwen2_5_vl"
    assert main(["models", "init", "--family", "llava", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    argv = [
        "models",
        "init",
        "--family",
        "llava",
        "--out",
        str(out),
        "--overwrite",
        "--image-size",
        "32",
    ]
    assert main(argv) == 0
    vlm = load_model(out)
    assert (vlm.family, vlm.image_size) == ("llava", 32)


def test_overwrite_refuses_a_folder_that_is_not_a_model(tmp_path: Path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    argv = ["models", "init", "--family", "llava", "--out", str(tmp_path), "--overwrite"]
    assert main(argv) == 2
    assert "refusing" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").exists()


def test_unknown_family_is_one_line(tmp_path: Path, capsys):
    assert main(["models", "init", "--family", "lava", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean: llava" in err


def test_list_shows_families_and_sizes(capsys):
    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    for name in ("llava", "llava_siglip_qwen2", "qwen2_vl", "qwen2_5_vl", "tiny", "small"):
        assert name in text


def test_models_command_module_does_not_import_torch():
    code = "import sys, mbpo_bench.cli.models_cmd, mbpo_bench.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
