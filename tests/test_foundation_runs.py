"""Run directories: atomic files, env capture, refuse to overwrite, resume only the same config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mbpo_bench.errors import UserError
from mbpo_bench.runs import RunDir, append_jsonl, read_jsonl, write_atomic


@dataclass
class Cfg:
    x: int = 1


def test_open_writes_config_env_and_command(tmp_path: Path) -> None:
    run = RunDir.open(tmp_path / "run", config=Cfg())
    assert (run.path / "config.yaml").read_text() == "x: 1\n"
    env = json.loads((run.path / "env.json").read_text())
    assert {"python", "packages", "git_sha", "time"} <= env.keys()
    assert env["packages"]["mbpo-bench"] is not None
    assert (run.path / "command.txt").exists()
    assert not run.finished


def test_finished_run_is_never_overwritten_without_flag(tmp_path: Path) -> None:
    run = RunDir.open(tmp_path / "run", config=Cfg())
    write_atomic(run.path / "results.json", "{}")
    run.finish()
    with pytest.raises(UserError, match="--overwrite"):
        RunDir.open(tmp_path / "run", config=Cfg())
    assert (run.path / "results.json").read_text() == "{}"
    again = RunDir.open(tmp_path / "run", config=Cfg(), overwrite=True)
    assert not (again.path / "results.json").exists() and not again.finished


def test_unfinished_run_resumes_only_with_the_same_config(tmp_path: Path) -> None:
    RunDir.open(tmp_path / "run", config=Cfg(1))
    (tmp_path / "run" / "samples.jsonl").write_text('{"a": 1}\n')
    RunDir.open(tmp_path / "run", config=Cfg(1))  # resume keeps the samples
    assert (tmp_path / "run" / "samples.jsonl").exists()
    with pytest.raises(UserError, match="another config"):
        RunDir.open(tmp_path / "run", config=Cfg(2))


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        RunDir.open(tmp_path / "f")


def test_jsonl_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    append_jsonl(path, [{"i": 0}, {"i": 1}])
    with path.open("a") as fh:
        fh.write('{"i": 2')  # what a kill -9 during a write can leave
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]


def test_write_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.txt", "hello")
    write_atomic(tmp_path / "a.txt", b"bytes")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_bytes() == b"bytes"
