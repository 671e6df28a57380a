"""load_model: one-line errors for missing, incomplete and unsupported checkpoint folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mbpo_bench.errors import UserError
from mbpo_bench.models import build_tiny_model, load_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model("llava", tmp_path_factory.mktemp("tiny"))


def _copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def _one_line(exc: pytest.ExceptionInfo[UserError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and " — " in msg
    return msg


def test_missing_folder(tmp_path: Path):
    with pytest.raises(UserError) as exc:
        load_model(tmp_path / "nope" / "model")
    assert "not found" in _one_line(exc) and "models init" in str(exc.value)


def test_file_instead_of_folder(tmp_path: Path):
    f = tmp_path / "weights.safetensors"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        load_model(f)


def test_hub_id_not_in_cache(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as exc:
        load_model("nobody-here/no-such-model-xyz")
    assert "--online" in _one_line(exc)


@pytest.mark.parametrize(
    ("drop", "needle"),
    [
        (("config.json",), "no config.json"),
        (("model.safetensors",), "no weights"),
        (("tokenizer.json",), "no tokenizer"),
    ],
)
def test_incomplete_folder(tiny: Path, tmp_path: Path, drop, needle):
    folder = _copy(tiny, tmp_path / "m", drop)
    with pytest.raises(UserError) as exc:
        load_model(folder)
    assert needle in _one_line(exc) and str(folder) in str(exc.value)


def test_pickle_weights_only_are_refused(tiny: Path, tmp_path: Path):
    folder = _copy(tiny, tmp_path / "m", ("model.safetensors",))
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError) as exc:
        load_model(folder)
    assert "safetensors only" in _one_line(exc)


def test_unsupported_model_type(tiny: Path, tmp_path: Path):
    folder = _copy(tiny, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "llava_next"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError) as exc:
        load_model(folder)
    msg = _one_line(exc)
    assert "llava_next" in msg and "supported: llava, qwen2_vl, qwen2_5_vl" in msg


def test_bad_dtype_and_missing_cuda(tiny: Path):
    with pytest.raises(UserError, match="unknown dtype 'f32'"):
        load_model(tiny, dtype="f32")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            load_model(tiny, device="cuda")


def test_dtype_choice(tiny: Path):
    vlm = load_model(tiny, dtype="bf16", device="cpu")
    assert vlm.dtype == torch.bfloat16 and vlm.device.type == "cpu"
    assert load_model(tiny).dtype == torch.float32


def test_missing_adapter_folder(tiny: Path, tmp_path: Path):
    with pytest.raises(UserError, match=r"adapter_config\.json"):
        load_model(tiny, adapter=tmp_path)
