"""Running from the repository root without relying on an install's mapping (issue 14, item 8).

`python -m mbpo_bench` / `python -m pytest` at the root put the source folder first on sys.path;
`mbpo_bench.tasks` and `mbpo_bench.trainers` must still import, from the checkout's sibling
folders. The subprocesses drop setuptools' editable finder first, so what is tested is the
checkout finder and not an editable install of this very folder (in tox the package is a wheel,
which the source folder shadows the same way).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mbpo_bench import checkout

ROOT = Path(__file__).resolve().parent.parent
NO_EDITABLE = (
    "import sys, runpy; sys.meta_path[:] = [f for f in sys.meta_path "
    "if not getattr(f, '__module__', '').startswith('__editable__')]; "
)


def _from_root(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    code = NO_EDITABLE + (
        f"sys.argv = {[module, *argv]!r}; runpy.run_module({module!r}, run_name='__main__')"
    )
    # `-c` puts the current folder first on sys.path, as `python -m` does
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_python_m_mbpo_bench_from_the_root_finds_tasks_and_trainers() -> None:
    probe = NO_EDITABLE + (
        "import mbpo_bench, mbpo_bench.tasks.verifiers, mbpo_bench.trainers.advantages as a; "
        "print(mbpo_bench.__file__); print(a.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [
        str(ROOT / "mbpo_bench" / "__init__.py"),
        str(ROOT / "trainers" / "advantages.py"),
    ]
    listed = _from_root("mbpo_bench", "tasks", "list")
    assert listed.returncode == 0, listed.stderr
    assert "mbpo_embedded_color" in listed.stdout and "built-in" in listed.stdout


@pytest.mark.slow  # a pytest run in a subprocess: ~8 s on 2 cores
def test_python_m_pytest_from_the_root_imports_the_mapped_packages() -> None:
    ran = _from_root(
        "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
        "tests/test_verifiers_core.py", "-k", "yesno",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert " passed" in ran.stdout


def test_the_finder_maps_only_the_two_siblings_and_only_in_a_checkout(tmp_path: Path) -> None:
    finder = checkout.SiblingFinder()
    assert finder.find_spec("mbpo_bench.models", None) is None
    spec = finder.find_spec("mbpo_bench.trainers", None)
    # the folder beside the imported package: this checkout, or site-packages under tox's wheel
    # (where `install()` never appends the finder: no pyproject.toml there)
    assert spec is not None and spec.origin == str(checkout.ROOT / "trainers" / "__init__.py")
    assert checkout.in_checkout(ROOT)  # this test file sits in a checkout
    site = tmp_path / "site-packages"  # a wheel's layout: the package alone, no siblings
    (site / "mbpo_bench").mkdir(parents=True)
    assert not checkout.in_checkout(site)
    for name in ("tasks", "trainers"):
        (site / name).mkdir()
        (site / name / "__init__.py").touch()
    assert not checkout.in_checkout(site)  # unrelated top-level packages, no pyproject.toml
    (site / "pyproject.toml").touch()
    assert checkout.in_checkout(site)
