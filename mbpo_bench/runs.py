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
from dataclasses import dataclass, is_dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mbpo_bench.config import dump_yaml, from_dict, to_dict, upgrade
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


def plain_modes(folder: Path) -> None:
    """Give files under `folder` written owner-only (0600: safetensors and other atomic writers
    go through a temp file) the mode a plain `open()` gives, 0666 less the umask."""
    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) == 0o600:
            path.chmod(mode)


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


# written by RunDir.open in every run folder: a folder with none of them is not a run folder
RUN_MARKERS = ("config.yaml", "command.txt", "env.json", "status.json")
# what a run produces; a run folder without any of these (non-empty) has nothing to lose
RESULT_FILES = ("samples.jsonl", "metrics.jsonl", "results.json", "pairs.parquet")
RESULT_DIRS = ("checkpoints", "final")
HISTORY = "history.jsonl"
# settings `--resume` may change mid-run (README "Train"): they change how the remaining steps
# run or are logged, not what the steps so far meant. Anything else (data, model, steps, batch,
# method settings) would make the run a mix of two experiments.
SAFE_ON_RESUME = (
    "optim.lr",
    "optim.schedule",
    "optim.warmup_ratio",
    "optim.max_grad_norm",
    "runtime.save_every",
    "runtime.keep_checkpoints",
    "runtime.progress",
    "runtime.tensorboard",
    # how the same math is spread over processes: a sharded checkpoint resumes replicated and
    # back (trainers/sharded_checkpoint.py), and both rollout modes sample the same texts
    "runtime.strategy",
    "runtime.fsdp_offload",
    "runtime.fsdp_rollout",
    # evaluation input preparation in worker processes: the same rows, sooner
    "input_workers",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 1}} -> {'optim.lr': 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _changes_text(changes: dict[str, list[Any]], keys: list[str] | None = None) -> str:
    shown = keys if keys is not None else list(changes)
    text = ", ".join(f"{k} {changes[k][0]!r} -> {changes[k][1]!r}" for k in shown[:4])
    return text + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")


def _refusal(path: Path, changes: dict[str, list[Any]], unsafe: list[str], resume: bool) -> str:
    if not unsafe:  # only safe changes, but no --resume
        return (
            f"run folder {path} holds an unfinished run; this command changes "
            f"{_changes_text(changes)} — add --resume to continue it with these settings, or "
            "pass --overwrite to start over"
        )
    return (
        f"run folder {path} holds an unfinished run with another config ({_changes_text(changes, unsafe)}) "
        f"— {'--resume can change only ' + ', '.join(SAFE_ON_RESUME) + '; ' if resume else ''}"
        "rerun with the run's own settings to resume, or pass --overwrite to start over"
    )


@dataclass
class RunDir:
    """A run's folder. Create it with `RunDir.open`, mark it done with `finish`."""

    path: Path

    @classmethod
    def open(
        cls, path: Path, *, overwrite: bool = False, config: Any = None, resume: bool = False
    ) -> RunDir:
        """Open `path` for a run: new, resumed (unfinished), or replaced (`overwrite`).

        A folder that is not a run folder is never touched, not even with `overwrite` (it may be
        the user's own files). A finished run is never replaced without `overwrite`. An
        unfinished run whose saved config differs is: replaced when it produced no result yet
        (the corrected command of a run that failed at once), continued with `resume` when
        every difference is in `SAFE_ON_RESUME` (recorded in `history.jsonl`), refused
        otherwise, so a resume can never silently mix two configurations.
        """
        run = cls(path)
        main = is_main()  # under torchrun only rank 0 replaces or writes the folder
        if not main and overwrite:  # the others must not look while rank 0 deletes it
            return run
        if path.exists() and not path.is_dir():
            raise UserError(f"output {path} exists and is not a folder — choose another --output")
        changes: dict[str, list[Any]] = {}
        if path.exists() and any(path.iterdir()):
            if not run.is_run_folder:
                raise UserError(
                    f"output folder {path} is not empty and is not a run folder (no "
                    f"{RUN_MARKERS[0]}) — choose another --output; nothing there was changed"
                )
            if overwrite:
                shutil.rmtree(path)
            elif run.finished:
                raise UserError(
                    f"run folder {path} holds a finished run — pass --overwrite to replace it "
                    "or choose another --output"
                )
            elif config is not None and (changes := run.config_changes(config)):
                if not run.has_results:
                    if main:
                        shutil.rmtree(path)
                        print(
                            f"note: replacing {path}: its earlier run (another config) stopped "
                            "before producing any result",
                            file=sys.stderr,
                        )
                    changes = {}
                else:
                    unsafe = [k for k in changes if k not in SAFE_ON_RESUME]
                    if unsafe or not resume:
                        raise UserError(_refusal(path, changes, unsafe, resume))
        if not main:
            return run
        path.mkdir(parents=True, exist_ok=True)
        if changes:
            append_jsonl(
                path / HISTORY,
                [{"time": _now(), "command": shlex.join(sys.argv), "changes": changes}],
            )
        if config is not None:
            write_atomic(path / "config.yaml", dump_yaml(config))
        write_json_atomic(path / "env.json", environment())
        write_atomic(path / "command.txt", shlex.join(sys.argv) + "\n")
        if changes:
            run.log("resumed with changed settings: " + _changes_text(changes))
        return run

    @property
    def is_run_folder(self) -> bool:
        """True when RunDir.open wrote this folder (it holds one of `RUN_MARKERS`)."""
        return any((self.path / name).exists() for name in RUN_MARKERS)

    @property
    def has_results(self) -> bool:
        """True once the run wrote anything worth keeping: samples, metrics rows, results,
        mined pairs, a checkpoint or final weights."""
        for name in RESULT_FILES:
            file = self.path / name
            if file.is_file() and file.stat().st_size > 0:
                return True
        return any(
            (self.path / name).is_dir() and any((self.path / name).iterdir())
            for name in RESULT_DIRS
        )

    def config_changes(self, config: Any) -> dict[str, list[Any]]:
        """{dotted key: [saved value, new value]} where `config` differs from config.yaml."""
        import yaml

        saved_path = self.path / "config.yaml"
        if not saved_path.exists():
            return {}
        text = saved_path.read_text()
        if text == dump_yaml(config):
            return {}
        try:
            saved = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            saved = {}
        older = False  # written with an earlier release's spellings (config.MOVED_KEYS)
        if isinstance(saved, dict) and is_dataclass(config):
            upgraded = upgrade(type(config), saved, str(saved_path))
            older = upgraded is not saved
            if older:
                try:  # read as today's config, keys it lacked at their defaults
                    saved = to_dict(from_dict(type(config), upgraded, "saved config"))
                except UserError:
                    saved = upgraded
        new = yaml.safe_load(dump_yaml(config)) or {}
        old_flat, new_flat = _flatten(saved), _flatten(new)
        keys = [*new_flat, *(k for k in old_flat if k not in new_flat)]
        diff = {k: [old_flat.get(k), new_flat.get(k)] for k in keys}
        changes = {k: v for k, v in diff.items() if v[0] != v[1]}
        return changes or ({} if older else {"config.yaml": ["?", "?"]})

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
        stamp = _now()
        with (self.path / "run.log").open("a") as fh:
            fh.write(f"{stamp} {message}\n")
