"""Load run folders for a report: `results.json`, `samples.jsonl` and the provenance files.

A report reads files only (never a model), so every problem with a folder is a `UserError` that
names the folder and the command that makes the missing file.

`samples.jsonl` rows are those of `mbpo_bench.evaluation.batches` (flat):

    {"task", "probe", "doc_id", "prompt", "image", "target", "target_canonical", "options",
     "response", "parsed", "correct", "score", "components", "meta": {"prior": ...}}
    iig rows: {"task", "probe": "iig", "doc_id", "iig", "logp_image", "logp_null", ...}

Rows are keyed by (task, probe, doc_id); a key seen twice (a resumed run that appended an item
again) keeps its FIRST row, as the evaluation's own `SampleStore.rows` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.schema import Results
from mbpo_bench.runs import read_jsonl

SampleKey = tuple[str, str, str]  # (task, probe, doc_id)


@dataclass
class RunData:
    """One evaluated run folder; samples are read on first use."""

    path: Path
    name: str
    results: Results
    _samples: dict[SampleKey, dict[str, Any]] | None = field(default=None, repr=False)
    # several seeds of one arm: the name they share (`name` then says which seed), and the seed
    arm: str | None = None
    seed: int | None = None

    @property
    def has_samples(self) -> bool:
        return (self.path / "samples.jsonl").is_file()

    def samples(self) -> dict[SampleKey, dict[str, Any]]:
        """(task, probe, doc_id) -> row; empty when the run has no samples.jsonl."""
        if self._samples is None:
            rows = read_jsonl(self.path / "samples.jsonl")
            index: dict[SampleKey, dict[str, Any]] = {}
            for i, row in enumerate(rows):
                try:
                    key = (str(row["task"]), str(row["probe"]), str(row["doc_id"]))
                except KeyError as exc:
                    raise UserError(
                        f"{self.path / 'samples.jsonl'}: row {i + 1} has no {exc.args[0]!r} — "
                        + rerun(self.path)
                    ) from None
                index.setdefault(key, row)
            self._samples = index
        return self._samples

    def rows(self, task: str, probe: str) -> dict[str, dict[str, Any]]:
        """doc_id -> row for one task and probe. A samples.jsonl that holds fewer of them than
        results.json scored is refused: a per-item CI or paired difference over the rows that
        are left would silently describe other items than the point estimate beside it."""
        out = {d: r for (t, p, d), r in self.samples().items() if t == task and p == probe}
        scored = self.results.tasks.get(task)
        expected = scored.probes[probe].n if scored and probe in scored.probes else 0
        if self.has_samples and len(out) < expected:
            raise UserError(
                f"{self.path / 'samples.jsonl'} holds {len(out)} of the {expected} {probe} "
                f"samples of {task} that its results.json scored — {rerun(self.path)}, or move "
                "samples.jsonl away to report without per-item CIs"
            )
        return out


def load_run(path: Path, name: str | None = None) -> RunData:
    """Read and validate `path/results.json`; one-line `UserError` naming the folder otherwise."""
    path = Path(path)
    fix = f"run `mbpo-bench eval --output {path}` first"
    if not path.exists():
        raise UserError(f"run folder {path} does not exist — pass a folder that {_made_by()}")
    if not path.is_dir():
        raise UserError(f"{path} is not a run folder — pass a folder that {_made_by()}")
    results_file = path / "results.json"
    if not results_file.is_file():
        raise UserError(f"run folder {path} has no results.json — {fix} (or finish its run)")
    try:
        results = Results.from_json(results_file.read_text(), source=str(results_file))
    except UserError as exc:
        # what is wrong, from the typed loader; its fix is written for configs ("write it as
        # ..."), while a results.json is rewritten by its evaluation, whatever broke it
        what = str(exc).split(" — ")[0]
        raise UserError(f"{what} — {rerun(path)}") from None
    return RunData(path=path, name=name or path.resolve().name, results=results)


def rerun(path: Path) -> str:
    """The fix for a run folder's damaged results or samples: its own command again, replacing
    the finished run (`mbpo-bench eval --output DIR` alone lacks --model and is refused)."""
    return f"re-run its evaluation ({path / 'command.txt'}) with --overwrite"


def _made_by() -> str:
    return "`mbpo-bench eval --output DIR` wrote"


def read_text(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def read_env(path: Path) -> dict[str, Any] | None:
    """`env.json` of a run folder, or None when absent or unreadable (provenance is best-effort)."""
    text = read_text(path / "env.json")
    if text is None:
        return None
    try:
        env = json.loads(text)
    except json.JSONDecodeError:
        return None
    return env if isinstance(env, dict) else None


def relative(path: Path, start: Path) -> str:
    """`path` relative to `start` when possible (reports must not embed absolute tmp paths)."""
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()
