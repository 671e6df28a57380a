"""`mbpo-bench tasks ...`: list, show, validate, verify; light start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mbpo_bench.cli.main import main


@pytest.fixture(autouse=True)
def _empty_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mbpo_bench.data.sources as sources

    monkeypatch.setattr(sources, "_hub_snapshot", lambda hub_id: None)  # ignore any HF cache
    monkeypatch.setenv("MBPO_BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")


def test_list_shows_tasks_and_availability(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    assert "mbpo_embedded_existence" in out and "generated" in out
    assert "mbpo_pope_adversarial" in out
    line = next(row for row in out.splitlines() if "mbpo_mmvp" in row)
    assert "no" in line.split("│")[-2]


def test_list_with_fixture_data_root(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MBPO_BENCH_DATA", str(Path(__file__).parent / "fixtures"))
    assert main(["tasks", "list"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if "mbpo_mmvp" in row)
    assert "yes" in line.split("│")[-2]


def test_list_says_where_each_task_came_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    source = Path(__file__).parent.parent / "tasks" / "embedded" / "mbpo_embedded_count.yaml"
    (folder / "my_count.yaml").write_text(
        source.read_text()
        .replace("../_template.yaml", str(source.parent.parent / "_template.yaml"))
        .replace("task: mbpo_embedded_count", "task: my_count")
    )
    assert main(["tasks", "list", "--include-path", str(folder)]) == 0
    rows = capsys.readouterr().out.splitlines()
    mine = next(row for row in rows if "my_count" in row).split("│")
    builtin = next(row for row in rows if "mbpo_embedded_count" in row).split("│")
    assert mine[-3].strip() == str(folder) and builtin[-3].strip() == "built-in"
    assert mine[2].strip() == "embedded"  # it joins the built-in suite its YAML names


def test_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["tasks", "show", "mbpo_pope_random"]) == 0
    out = capsys.readouterr().out
    assert "yesno" in out and "yes_ratio" in out
    assert str(tmp_path / "data" / "pope") in out and "lmms-lab-encoder/POPE" in out


def test_validate_ok_and_broken(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["tasks", "validate"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    broken = tmp_path / "mine"
    broken.mkdir()
    (broken / "oops.yaml").write_text("task: x\nmetadata: {data: {source: embedded}}\n"
                                      "process_results: !function mbpo_bench.tasks.nope.fn\n")  # fmt: skip
    assert main(["tasks", "validate", "--include-path", str(broken)]) == 1
    assert "oops.yaml" in capsys.readouterr().err


def test_verify_prints_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tasks", "verify", "mbpo_embedded_color", "The answer is (B).", "--target", "green",
            "--options", "red,green,blue,yellow"]  # fmt: skip
    assert main(argv) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["correct"] is True and verdict["parsed"] == "B" and verdict["reward"] == 2.0


def test_verify_unknown_task_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "verify", "mbpo_pope_randm", "yes", "-t", "yes"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean: mbpo_pope_random" in err and "\n" not in err


def test_tasks_commands_import_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import mbpo_bench.cli.tasks_cmd, mbpo_bench.data.registry, mbpo_bench.tasks.common\n"
        "import mbpo_bench.tasks.adapters, mbpo_bench.tasks.chair\n"
        "print(','.join(n for n in ('torch', 'transformers', 'lmms_eval', 'pandas', 'datasets')"
        " if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
