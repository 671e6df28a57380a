"""`mbpo-bench eval` option parsing: the exact EvalConfig that reaches `run_eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mbpo_bench.cli.main import main
from mbpo_bench.evaluation.schema import SCHEMA_VERSION, BootstrapSettings, ModelInfo, Results


def _capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake_run_eval(
        config: Any,
        *,
        overwrite: bool = False,
        progress: bool = True,
        show_config: bool | None = None,
    ) -> Results:
        seen.update(config=config, overwrite=overwrite, progress=progress, show_config=show_config)
        return Results(SCHEMA_VERSION, ModelInfo("m"), ["image"], BootstrapSettings(10, 0.95, 0), {},
                       {}, None, "3.11", None, 0.0, 0.0, None, 0, 0, {})  # fmt: skip

    monkeypatch.setattr("mbpo_bench.evaluation.api.run_eval", fake_run_eval)
    return seen


def test_options_reach_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _capture(monkeypatch)
    code = main([
        "eval", "--model", "m", "--tasks", "embedded,mbpo_mme", "--output", str(tmp_path / "o"),
        "--adapter", str(tmp_path / "lora"), "--probes", "blind,image", "--limit", "7",
        "--batch-size", "3", "--device", "cpu", "--include-path", str(tmp_path / "t1"),
        "--include-path", str(tmp_path / "t2"), "--skip-bad-items", "--overwrite", "--online",
        "--trust-remote-code", "--no-progress", "--set", "probes.adversarial_eps=0.01",
        "--set", "bootstrap.n_resamples=99",
    ])  # fmt: skip
    assert code == 0
    c = seen["config"]
    assert (c.model, c.tasks, c.output, c.adapter) == (
        "m",
        "embedded,mbpo_mme",
        str(tmp_path / "o"),
        str(tmp_path / "lora"),
    )
    assert c.probes.names == ["image", "blind"] and c.limit == 7 and c.batch_size == 3
    assert c.runtime.device == "cpu" and c.include_paths == [
        str(tmp_path / "t1"),
        str(tmp_path / "t2"),
    ]
    assert c.skip_bad_items and c.online and c.trust_remote_code
    assert c.probes.adversarial_eps == 0.01 and c.bootstrap.n_resamples == 99
    assert seen["overwrite"] is True and seen["progress"] is False


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _capture(monkeypatch)
    assert main(["eval", "--model", "m", "--tasks", "embedded", "--output", str(tmp_path)]) == 0
    c = seen["config"]
    assert c.probes.names == ["image", "blind", "mismatched", "noise", "iig"]
    assert (c.limit, c.batch_size, c.runtime.device, c.online, c.skip_bad_items) == (
        None,
        16,
        "auto",
        False,
        False,
    )
    assert seen["overwrite"] is False and seen["show_config"] is None


def test_bad_override_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _capture(monkeypatch)
    code = main(
        ["eval", "--model", "m", "--tasks", "t", "--output", str(tmp_path), "--set", "probes.eps=1"]
    )
    err = capsys.readouterr().err.strip()
    assert (
        code != 0 and len(err.splitlines()) == 1 and "unknown config key 'eval.probes.eps'" in err
    )


def test_config_file_then_options_then_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`eval --config FILE` as `train`/`mine`: defaults < file < options typed < --set."""
    seen = _capture(monkeypatch)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"model: from_file\ntasks: embedded\noutput: {tmp_path / 'out'}\nbatch_size: 4\n"
        "limit: 20\nruntime: {device: cpu}\nprobes: {names: [blind, image], seed: 3}\n"
        "bootstrap: {n_resamples: 50}\n"
    )
    argv = ["eval", "--config", str(cfg), "--limit", "5", "--set", "bootstrap.n_resamples=7"]
    assert main(argv) == 0
    c = seen["config"]
    assert (c.model, c.tasks, c.output) == ("from_file", "embedded", str(tmp_path / "out"))
    assert (c.batch_size, c.runtime.device, c.limit) == (4, "cpu", 5)  # an option at its default
    assert c.probes.names == ["image", "blind"] and c.probes.seed == 3  # leaves the file's value
    assert c.bootstrap.n_resamples == 7 and c.bootstrap.confidence == 0.95
    assert main(["eval", "--config", str(cfg), "--model", "m", "--batch-size", "16"]) == 0
    assert (seen["config"].model, seen["config"].batch_size) == ("m", 16)


def test_config_file_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _capture(monkeypatch)
    cfg = tmp_path / "eval.yaml"
    cases = {
        "model: m\ntasks: embedded\n": "no output given — pass --output DIR (or set output",
        "model: m\noutput: o\nbach_size: 4\n": "unknown config key 'eval.bach_size'",
        "[1, 2]\n": "must hold a mapping",
    }
    for text, message in cases.items():
        cfg.write_text(text)
        assert main(["eval", "--config", str(cfg), "--tasks", "embedded"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert main(["eval", "--tasks", "embedded", "--output", str(tmp_path)]) == 2
    assert "no model given — pass --model" in capsys.readouterr().err
    assert main(["eval", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_quiet_skips_the_config_print(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _capture(monkeypatch)
    argv = ["eval", "--model", "m", "--tasks", "embedded", "--output", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    assert seen["show_config"] is False and seen["progress"] is True
