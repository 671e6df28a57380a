"""`mbpo-bench train` / `mine`: the exact config each method's run function receives."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mbpo_bench.cli.main import main


def _capture(monkeypatch: pytest.MonkeyPatch, module: str, fn: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    class Result:
        steps = 1
        last: ClassVar[dict[str, float]] = {"loss": 0.5}

    def fake(config: Any, output: Path, **kw: Any) -> Any:
        seen.update(config=config, output=output, **kw)
        return Result() if fn != "run_mine" else ([], _Stats())

    monkeypatch.setattr(importlib.import_module(module), fn, fake)
    # these tests pass made-up model paths; the early model check has its own test below
    monkeypatch.setattr("mbpo_bench.models.loading.validate_model", lambda model: "llava")
    return seen


class _Stats:
    def as_dict(self) -> dict[str, Any]:
        return {"candidates": 3, "selected": 2, "flip_rate": 0.5}


@pytest.mark.parametrize(
    ("method", "module", "fn"),
    [
        ("sft", "mbpo_bench.trainers.sft", "run"),
        ("dpo", "mbpo_bench.trainers.dpo", "run"),
        ("grpo", "mbpo_bench.trainers.grpo", "run"),
        ("mbpo", "mbpo_bench.trainers.mbpo", "run"),
    ],
)
def test_train_resolves_options_file_and_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, method: str, module: str, fn: str
) -> None:
    seen = _capture(monkeypatch, module, fn)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  steps: 7\n  lr: 0.5\nruntime:\n  seed: 3\n")
    code = main([
        "train", method, "--model", "m", "--data", "d", "--output", str(tmp_path / "run"),
        "--config", str(cfg), "--resume", "--quiet", "optim.lr=0.25", "--set", "runtime.seed=4",
    ])  # fmt: skip
    assert code == 0
    config = seen["config"]
    assert (config.model, config.data) == ("m", "d")
    assert (config.optim.steps, config.optim.lr, config.runtime.seed) == (7, 0.25, 4)
    assert seen["resume"] is True and seen["overwrite"] is False
    assert seen["output"] == tmp_path / "run"


def test_method_defaults_follow_method_md() -> None:
    from mbpo_bench.trainers.grpo import GRPOConfig
    from mbpo_bench.trainers.mbpo import MBPOConfig
    from mbpo_bench.trainers.mining import MiningConfig

    g = GRPOConfig().grpo
    assert (g.num_generations, g.temperature, g.beta, g.eps_low, g.eps_high) == (
        8,
        1.0,
        0.04,
        0.2,
        0.2,
    )
    assert (g.scaling, g.aggregation, g.adv_eps) == ("group", "grpo", 1e-4)
    m = MiningConfig()
    assert (m.eps, m.alpha, m.steps, m.random_start, m.iig_null) == (
        8 / 255,
        2 / 255,
        10,
        True,
        "text",
    )
    h = MBPOConfig().hybrid
    assert (h.chosen_reward, h.rejected_reward) == (2.0, 0.0)


def test_unknown_method_and_bad_override_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "gpro", "--model", "m", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown training method 'gpro'" in err and "did you mean: grpo" in err
    assert main(["train", "sft", "--model", "m", "--output", str(tmp_path), "optim.lrr=1"]) == 2
    assert "did you mean: lr" in capsys.readouterr().err
    assert main(["train", "sft", "--output", str(tmp_path), "--quiet"]) == 2
    assert "no model to train" in capsys.readouterr().err
    assert main(["train", "sft", "--model", "m", "--output", str(tmp_path), "oops"]) == 2
    assert "not a key=value override" in capsys.readouterr().err


def test_mine_command_passes_its_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _capture(monkeypatch, "mbpo_bench.trainers.mining", "run_mine")
    code = main([
        "mine", "--model", "m", "--data", "embedded", "--output", str(tmp_path / "mined"),
        "--quiet", "mining.source=noise", "mining.iig_top_fraction=0.25",
    ])  # fmt: skip
    assert code == 0
    config = seen["config"]
    assert (config.model, config.mining.source, config.mining.iig_top_fraction) == (
        "m",
        "noise",
        0.25,
    )


def test_cli_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mbpo_bench.cli.train_cmd, mbpo_bench.cli.mine_cmd; "
        "print(any(m in sys.modules for m in ('torch', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_wrong_model_leaves_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mbpo_bench.cli.main import main

    for argv in (
        [
            "train",
            "sft",
            "--model",
            str(tmp_path / "nope"),
            "--data",
            "embedded",
            "--output",
            str(tmp_path / "run"),
        ],
        [
            "mine",
            "--model",
            str(tmp_path / "nope"),
            "--data",
            "embedded",
            "--output",
            str(tmp_path / "run"),
        ],
    ):
        assert main(argv) == 2
        assert "model folder not found" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
