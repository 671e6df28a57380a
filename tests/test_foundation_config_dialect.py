"""One config dialect: eval, train and mine share a `runtime` section with the same keys, the old
flat spellings of eval and mine still work for one release with a one-line warning, and every
command that takes a config offers `--config FILE`, `--set` and `--quiet`."""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from pathlib import Path

import pytest
from mbpo_bench.trainers.loop import RuntimeConfig
from mbpo_bench.trainers.mining import MineConfig

from mbpo_bench import config as cfg
from mbpo_bench.cli.main import main
from mbpo_bench.config import RuntimeSection, load_config
from mbpo_bench.evaluation.config import EvalConfig


@pytest.fixture(autouse=True)
def fresh_warnings() -> None:
    cfg._warn_moved.cache_clear()  # one warning per key and place, per process


def test_every_command_has_the_shared_runtime_keys() -> None:
    shared = {f.name: f for f in dataclasses.fields(RuntimeSection)}
    for owner in (EvalConfig, MineConfig):
        hints = typing.get_type_hints(owner)
        assert hints["runtime"] is RuntimeSection, owner
        assert not set(shared) & {f.name for f in dataclasses.fields(owner)}, owner  # not flat
    train = {f.name: f for f in dataclasses.fields(RuntimeConfig)}
    train_hints = typing.get_type_hints(RuntimeConfig)
    shared_hints = typing.get_type_hints(RuntimeSection)
    for name, f in shared.items():  # training's section: the same keys, types and defaults
        assert name in train, name
        assert train_hints[name] == shared_hints[name], name
        assert train[name].default == f.default, name


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [("device", "device", "cpu"), ("dtype", "dtype", "float32"), ("threads", "threads", 3),
     ("protocol", "protocol", "lmms-eval"), ("max_pixels", "max_pixels", 4096)],
)  # fmt: skip
def test_mine_reads_the_old_flat_spelling_with_one_warning(
    old: str, new: str, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(MineConfig, overrides=[f"{old}={value}", "limit=5"])
    assert getattr(config.runtime, new) == value and config.limit == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"warning: override key '{old}' is deprecated and will be removed in the next release "
        f"— write runtime.{new}"
    ]
    assert load_config(MineConfig, overrides=[f"runtime.{new}={value}", "limit=5"]) == config
    assert capsys.readouterr().err == ""  # the new spelling warns about nothing


def test_eval_reads_old_spellings_from_a_file_and_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mbpo_bench.cli.eval_cmd import build_config

    file = tmp_path / "eval.yaml"
    file.write_text("model: m\ntasks: t\noutput: out\ndevice: cpu\ncompile: true\n")
    config = build_config(config_file=file, overrides=["protocol=original"])
    assert config.runtime == RuntimeSection(device="cpu", compile_layers=True, protocol="original")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("warning: ") for line in err)
    assert "key 'compile' is deprecated" in err[1] and err[1].endswith(
        "write runtime.compile_layers"
    )
    # an option typed on the command line still wins over the file's old spelling
    assert build_config(config_file=file, device="cuda").runtime.device == "cuda"
    new = tmp_path / "new.yaml"
    new.write_text(
        "model: m\ntasks: t\noutput: out\nruntime: {device: cpu, compile_layers: true}\n"
    )
    capsys.readouterr()
    assert build_config(config_file=new).runtime == RuntimeSection(
        device="cpu", compile_layers=True
    )
    assert capsys.readouterr().err == ""


def test_a_saved_old_config_still_loads(capsys: pytest.CaptureFixture[str]) -> None:
    """config.yaml of an earlier eval run (flat keys) loads into today's EvalConfig."""
    saved = cfg.to_dict(EvalConfig(model="m"))
    runtime = saved.pop("runtime")
    old = {**saved, "device": runtime["device"], "dtype": "float32", "compile": False}
    loaded = cfg.from_dict(EvalConfig, old, where="eval")
    assert loaded == EvalConfig(model="m", runtime=RuntimeSection(dtype="float32"))
    assert "deprecated" in capsys.readouterr().err


def test_mine_refuses_compile_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mbpo_bench.trainers.mining import run_mine

    config = load_config(MineConfig, overrides=["model=m", "runtime.compile_layers=true"])
    with pytest.raises(Exception, match="compile_layers does not apply to mine"):
        run_mine(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command", [["eval"], ["train", "sft"], ["mine"], ["quickstart"], ["ablate"]]
)
def test_every_config_command_offers_config_set_and_quiet(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    try:
        code = main([*command, "--help"])
    except SystemExit as done:
        code = done.code  # type: ignore[assignment]
    assert code in (0, None)
    shown = capsys.readouterr().out
    for option in ("--config", "--set", "--quiet"):
        assert option in shown, (command, option)


def test_an_unfinished_run_of_the_old_layout_resumes(tmp_path: Path) -> None:
    """A mine run folder whose config.yaml has the flat keys is the same config today."""
    import yaml

    from mbpo_bench.runs import RunDir

    config = load_config(MineConfig, overrides=["model=m", "runtime.device=cpu"])
    RunDir.open(tmp_path / "run", config=config)
    saved = cfg.to_dict(config)
    runtime = saved.pop("runtime")
    del runtime["compile_layers"]  # the layout an earlier release wrote: flat, no compile_layers
    saved.update(runtime)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert RunDir(tmp_path / "run").config_changes(config) == {}
    changed = load_config(MineConfig, overrides=["model=m", "runtime.device=cuda"])
    assert RunDir(tmp_path / "run").config_changes(changed) == {"runtime.device": ["cpu", "cuda"]}


def test_one_loader_reads_configs_leniently_and_results_strictly() -> None:
    """config.from_dict reads configs and (strict) results.json: the same code, two modes."""
    from mbpo_bench.evaluation.schema import Metric, SchemaError

    assert cfg.from_dict(Metric, {"value": "0.5", "n": 3}) == Metric(0.5, 3)  # "3e-4" style
    with pytest.raises(SchemaError) as err:
        cfg.from_dict(Metric, {"value": "0.5", "n": 3}, "m", strict=True, error=SchemaError)
    assert str(err.value).startswith("m.value: expected float | None, got '0.5'")
    with pytest.raises(SchemaError, match="m: missing field 'n' of Metric"):
        cfg.from_dict(Metric, {"value": 0.5}, "m", strict=True, error=SchemaError)
    with pytest.raises(SchemaError, match="m: unknown field 'x' in Metric"):
        cfg.from_dict(Metric, {"value": 0.5, "n": 1, "x": 0}, "m", strict=True, error=SchemaError)


def test_eval_takes_positional_overrides_like_train_and_mine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, EvalConfig] = {}

    def fake_eval(config: EvalConfig, **kw: object) -> None:
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr("mbpo_bench.evaluation.api.run_eval", fake_eval)
    argv = ["eval", "--model", "m", "--tasks", "t", "--output", str(tmp_path / "o"),
            "runtime.threads=2", "--set", "batch_size=3", "limit=4"]  # fmt: skip
    with contextlib.suppress(SystemExit):  # the fake evaluation stops the command
        main(argv)
    config = seen["config"]
    assert (config.runtime.threads, config.batch_size, config.limit) == (2, 3, 4)
