"""Running from the repository checkout: `mbpo_bench.tasks` and `mbpo_bench.trainers` resolve there.

`tasks/` and `trainers/` sit beside `mbpo_bench/` in the repository and exist as
`mbpo_bench.tasks` / `mbpo_bench.trainers` only through the install's package-dir mapping. Started
from the repository root (`python -m pytest`, `python -m mbpo_bench`), Python puts the root first
on `sys.path`, so `import mbpo_bench` finds the source folder, whose package path has neither: on
the GPU machine (package installed with `--target`) 4 of 5 GPU tests failed with
`No module named 'mbpo_bench.tasks'`. This finder maps the two names to the sibling folders, exactly
what the editable install does, so those commands work from the checkout without an install
(`python -P`, or running outside the checkout, uses the installed package as before).

It is consulted last (appended to `sys.meta_path`), so an installed or editable mapping always
wins, and it is installed only when this file sits in a checkout (a `pyproject.toml` and both
sibling folders beside the package), never from site-packages.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SIBLINGS = {"mbpo_bench.tasks": ROOT / "tasks", "mbpo_bench.trainers": ROOT / "trainers"}


class SiblingFinder(MetaPathFinder):
    """Finds `mbpo_bench.tasks` / `mbpo_bench.trainers` in the checkout's sibling folders."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        folder = SIBLINGS.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def in_checkout(root: Path = ROOT) -> bool:
    """Whether `root` (by default the folder above this package) is a repository checkout."""
    return (root / "pyproject.toml").is_file() and all(
        (root / folder.name / "__init__.py").is_file() for folder in SIBLINGS.values()
    )


def install() -> None:
    """Append the finder once, when running from a checkout."""
    if in_checkout() and not any(isinstance(f, SiblingFinder) for f in sys.meta_path):
        sys.meta_path.append(SiblingFinder())
