"""The wheel holds every package folder of tasks/ and trainers/, and works outside the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {
    "mbpo_bench": ROOT / "mbpo_bench",
    "mbpo_bench.tasks": ROOT / "tasks",
    "mbpo_bench.trainers": ROOT / "trainers",
}


def _package_folders() -> set[str]:
    """Every folder holding an __init__.py, as the dotted name it installs under."""
    found = set()
    for prefix, base in MAPPED.items():
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            if "__pycache__" not in rel:
                found.add(".".join((prefix, *rel)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    assert _package_folders() - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - _package_folders() == set(), "these listed packages have no folder"


@pytest.mark.slow
def test_built_wheel_contains_every_package_and_task_yaml(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".tox", "build", "*.egg-info", "__pycache__", "reports", "runs"
        ),
    )
    build = "import sys, setuptools.build_meta as b; b.build_wheel(sys.argv[1])"
    (tmp_path / "dist").mkdir()
    subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")],
        cwd=src,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in _package_folders():
        assert package.replace(".", "/") + "/__init__.py" in names, package
    for yaml_file in (ROOT / "tasks").rglob("*.yaml"):
        assert "mbpo_bench/tasks/" + yaml_file.relative_to(ROOT / "tasks").as_posix() in names
    assert not any(n.startswith(("tasks/", "trainers/", "reports/", "tests/")) for n in names)


def test_installed_package_works_outside_the_checkout(tmp_path: Path) -> None:
    code = (
        "import mbpo_bench, mbpo_bench.tasks, mbpo_bench.trainers, importlib.resources as r\n"
        "print(any(p.name.endswith('.yaml') or p.is_dir() for p in r.files('mbpo_bench.tasks').iterdir()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
    cli = shutil.which("mbpo-bench", path=str(Path(sys.executable).parent))
    assert cli is not None
    version = subprocess.run(
        [cli, "--version"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("mbpo-bench ")
