"""Run directories: one folder per command that produces results.

Layout: `config.yaml` (resolved config), `env.json` (versions, git sha, python, device),
`command.txt` (the exact command line), `run.log`, outputs, and `status.json` whose
`"finished": true` marks a complete run. A finished run is never overwritten without
`--overwrite`; an unfinished one is resumed by running the same command again. Every file is
written atomically (temp file in the same folder + `os.replace`), so a kill -9 leaves either
the old or the new file, never half of one. Under torchrun only rank 0 creates, replaces or
writes the folder (RANK from the environment, no torch import); the other ranks only check it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mbpo_bench.config import dump_yaml
from mbpo_bench.errors import UserError
from mbpo_bench.parallel import is_main, world_size

TRACKED_PACKAGES = (
    "mbpo-bench",
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "lmms-eval",
    "trl",
    "pandas",
    "pyarrow",
    "pillow",
    "numpy",
    "typer",
    "rich",
)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` so that readers only ever see the old or the complete new file.

    The file gets the mode a plain `open()` would give it (0666 less the umask; an existing
    file keeps its own), not mkstemp's owner-only 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows and fsync: after a kill -9 at most the last, partial line is lost."""
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def cut_torn_tail(path: Path) -> None:
    """Truncate a file after its last newline (drops a line a kill -9 left half-written)."""
    if not path.exists():
        return
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read rows, dropping a torn last line (the only damage an interrupted append leaves)."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                break
            raise UserError(
                f"{path}: line {i + 1} is not valid JSON — delete the run to start over"
            ) from err
    return rows


def git_sha() -> str | None:
    """The sha of the checkout the package runs from (None when installed from a wheel)."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """{distribution name: installed version, or None when it is not installed}."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, Any]:
    """Versions, git sha, python, host and device; torch is only asked if already imported."""
    env: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "world_size": world_size(),  # processes under torchrun (1 otherwise)
        "git_sha": git_sha(),
        "packages": package_versions(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = torch.cuda.is_available()
        env["device"] = {
            "cuda": cuda,
            "name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "count": torch.cuda.device_count() if cuda else 0,
            "torch_threads": torch.get_num_threads(),
        }
    return env


@dataclass
class RunDir:
    """A run's folder. Create it with `RunDir.open`, mark it done with `finish`."""

    path: Path

    @classmethod
    def open(cls, path: Path, *, overwrite: bool = False, config: Any = None) -> RunDir:
        """Open `path` for a run: new, resumed (unfinished), or replaced (`overwrite`).

        A finished run with a different config is never touched without `overwrite`; an
        unfinished run is resumed only if its saved config equals this one, so a resume can
        never silently mix two configurations.
        """
        run = cls(path)
        main = is_main()  # under torchrun only rank 0 replaces or writes the folder
        if not main and overwrite:  # the others must not look while rank 0 deletes it
            return run
        if path.exists() and not path.is_dir():
            raise UserError(f"output {path} exists and is not a folder — choose another --output")
        if path.exists() and any(path.iterdir()):
            if overwrite:
                shutil.rmtree(path)
            elif run.finished:
                raise UserError(
                    f"run folder {path} holds a finished run — pass --overwrite to replace it "
                    "or choose another --output"
                )
            elif (
                config is not None
                and (path / "config.yaml").exists()
                and (path / "config.yaml").read_text() != dump_yaml(config)
            ):
                raise UserError(
                    f"run folder {path} holds an unfinished run with another config — "
                    "rerun with the same options to resume, or pass --overwrite"
                )
        if not main:
            return run
        path.mkdir(parents=True, exist_ok=True)
        if config is not None:
            write_atomic(path / "config.yaml", dump_yaml(config))
        write_json_atomic(path / "env.json", environment())
        write_atomic(path / "command.txt", shlex.join(sys.argv) + "\n")
        return run

    @property
    def finished(self) -> bool:
        status = self.path / "status.json"
        if not status.exists():
            return False
        try:
            return bool(json.loads(status.read_text()).get("finished"))
        except json.JSONDecodeError:
            return False

    def finish(self, **extra: Any) -> None:
        if not is_main():
            return
        write_json_atomic(self.path / "status.json", {"finished": True, **extra})

    def log(self, message: str) -> None:
        if not is_main():
            return
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with (self.path / "run.log").open("a") as fh:
            fh.write(f"{stamp} {message}\n")
