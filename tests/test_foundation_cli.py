"""The CLI: every group listed, light start-up, one-line errors with non-zero exits."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mbpo_bench import __version__
from mbpo_bench.cli.main import main

GROUPS = ["eval", "train", "mine", "tasks", "models", "report", "quickstart", "ablate"]


def test_help_lists_every_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for group in GROUPS:
        assert group in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mbpo-bench {__version__}"


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_has_help(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([group, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_unknown_command_is_one_error_with_non_zero_exit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["evaluate"]) != 0
    err = capsys.readouterr().err
    assert "No such command 'evaluate'" in err


def test_unknown_option_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--colour"]) != 0
    assert "No such option" in capsys.readouterr().err


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from mbpo_bench.cli.main import main\n"
        "for argv in (['--help'], ['tasks', '--help'], ['models', '--help'], ['train', '--help']):\n"
        "    main(argv)\n"
        "heavy = [m for m in ('torch', 'transformers', 'lmms_eval', 'peft', 'pandas') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "HEAVY="
