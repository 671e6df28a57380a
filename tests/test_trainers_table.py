"""The trainer table is the one place to register a training method: a throwaway method added
as one row is offered by `train --help`, run by `train`, and accepted by `ablate`'s override
routing, with no other file touched."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mbpo_bench.trainers import table

from mbpo_bench.cli.main import main

TOY = """
from dataclasses import dataclass, field

from mbpo_bench.trainers.loop import LoopResult, OptimConfig, RuntimeConfig

CALLS = []


@dataclass
class ToyConfig:
    model: str = ""
    data: str = "embedded"
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # every trainer has one
    toy_strength: float = 0.5


def run_toy(config, output, *, resume=False, overwrite=False):
    CALLS.append((config, output, resume, overwrite))
    return LoopResult(steps=3, last={"loss": 0.25}, resumed_from=None)
"""


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "toy_trainer.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        table.TRAINERS, "toy", table.TrainerSpec("toy_trainer", "ToyConfig", "run_toy", "a toy")
    )
    monkeypatch.setattr("mbpo_bench.models.loading.validate_model", lambda model: str(model))
    monkeypatch.setattr("mbpo_bench.models.families.check_protocol", lambda family, protocol: None)
    yield importlib.import_module("toy_trainer")
    sys.modules.pop("toy_trainer", None)


def test_a_registered_method_is_offered_and_run(toy: Any, tmp_path: Path, capsys: Any) -> None:
    # `train --help`, in a fresh process where the row exists before the CLI loads (as a row
    # written into table.py would)
    code = (
        "import sys; from mbpo_bench.trainers import table; "
        "table.TRAINERS['toy'] = table.TrainerSpec('toy_trainer', 'ToyConfig', 'run_toy', "
        "'a toy method'); from mbpo_bench.cli.main import main; "
        "sys.exit(main(['train', '--help']))"
    )
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(tmp_path)}
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert "toy: a toy method" in shown.stdout and "sft: supervised fine-tuning" in shown.stdout
    out = tmp_path / "run"
    argv = ["train", "toy", "--model", "m", "--output", str(out), "--quiet", "toy_strength=2"]
    assert main(argv) == 0
    ((config, output, resume, overwrite),) = toy.CALLS
    assert (config.model, config.toy_strength, output, resume, overwrite) == (
        "m", 2.0, out, False, False,
    )  # fmt: skip
    assert "toy: 3 steps, loss 0.25" in capsys.readouterr().out
    assert main(["train", "toi", "--model", "m", "--output", str(out)]) == 2
    assert "did you mean: toy" in capsys.readouterr().err


def test_ablate_routes_a_registered_methods_keys(toy: Any) -> None:
    from mbpo_bench.ablation.overrides import route
    from mbpo_bench.ablation.plan import config_classes

    classes = config_classes()
    assert classes["toy"] is toy.ToyConfig and set(table.TRAINERS) == set(classes)
    routed = route(["toy:toy_strength=3", "toy_strength=4"], classes)
    assert routed.by_method == {"toy": ["toy_strength=3"]}
    assert routed.common == ["toy_strength=4"]  # a key only the toy config has is accepted


def test_every_row_loads_its_config_step_and_run() -> None:
    import dataclasses
    import inspect

    for name, spec in table.TRAINERS.items():
        cls, run = spec.load()
        assert dataclasses.is_dataclass(cls) and callable(run), name
        assert cls.__name__.lower() == f"{name}config", name  # Config is the recipe's own class
        step = spec.step_builder()
        assert list(inspect.signature(step).parameters)[:2] == ["config", "policy"], name
        assert list(inspect.signature(run).parameters)[:2] == ["config", "output"], name
    with pytest.raises(Exception, match="choose one of: sft, dpo, grpo, mbpo"):
        table.get_trainer("ppo")
