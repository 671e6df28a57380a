"""Typed configs: YAML + overrides, loud on unknown keys and wrong types."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from mbpo_bench.config import dump_yaml, load_config, parse_overrides, to_dict
from mbpo_bench.errors import UserError


@dataclass
class Optim:
    lr: float = 3e-4
    steps: int = 100
    schedule: Literal["linear", "cosine"] = "linear"


@dataclass
class Demo:
    name: str = "demo"
    seed: int | None = None
    tags: list[str] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)
    use_lora: bool = True


def test_defaults_yaml_and_overrides_compose(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  steps: 7\nname: fromfile\n")
    cfg = load_config(Demo, path, ["optim.lr=0.01", "seed=3", "tags=[a, b]", "use_lora=false"])
    assert cfg == Demo(
        name="fromfile", seed=3, tags=["a", "b"], optim=Optim(lr=0.01, steps=7), use_lora=False
    )


def test_int_is_accepted_for_float_and_round_trips() -> None:
    cfg = load_config(Demo, None, ["optim.lr=1"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert load_config(Demo, None, ["optim.lr=3e-4"]).optim.lr == 3e-4  # YAML 1.1 reads a string
    assert load_config(Demo, None, []) == Demo()
    again = load_config(Demo, None, [f"{k}={v}" for k, v in [("name", "demo")]])
    assert to_dict(again) == yaml.safe_load(dump_yaml(Demo()))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1", "unknown config key 'Demo.optim.lrr' (did you mean: lr?)"),
        ("optimm.lr=1", "unknown config key 'Demo.optimm' (did you mean: optim?)"),
        ("optim.steps=abc", "Demo.optim.steps: expected an integer, got 'abc'"),
        ("optim.steps=1.5", "Demo.optim.steps: expected an integer"),
        ("use_lora=maybe", "Demo.use_lora: expected true or false"),
        (
            "optim.schedule=cosin",
            "'cosin' is not one of 'linear', 'cosine' (did you mean: cosine?)",
        ),
        ("seed", "not of the form section.key=value"),
    ],
)
def test_bad_overrides_name_the_key_and_the_fix(override: str, expected: str) -> None:
    with pytest.raises(UserError) as info:
        load_config(Demo, None, [override])
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        load_config(Demo, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping at the top level"):
        load_config(Demo, bad)


def test_parse_overrides_nests_and_parses_scalars() -> None:
    assert parse_overrides(["a.b.c=1", "a.d=x", "e=null"]) == {
        "a": {"b": {"c": 1}, "d": "x"},
        "e": None,
    }
