"""The run folder's per-sample store: what is done, what to append, what a run planned.

Files (beside runs.py's config.yaml, env.json, status.json):
- `samples.jsonl`  one row per (task, probe, doc_id), appended and fsynced batch by batch;
- `timing.jsonl`   one row per finished batch (session, samples, compute seconds, wall seconds);
- `meta.json`      the plan of the run: model info and, per task, version, prompt template,
                   generation settings, the doc ids each probe covers and the skipped items.

Resume decisions: a kill -9 can leave a torn last line; `SampleStore.open` cuts it off before
appending anything (otherwise the next row would be glued onto it). Rows are keyed by
(task, probe, doc_id); a duplicate key keeps the first row, so re-running a half-written batch
never double counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbpo_bench.runs import append_jsonl, cut_torn_tail, read_jsonl, write_json_atomic

SAMPLES = "samples.jsonl"
TIMING = "timing.jsonl"
META = "meta.json"
RESULTS = "results.json"

Key = tuple[str, str, str]


def row_key(row: dict[str, Any]) -> Key:
    return (str(row["task"]), str(row["probe"]), str(row["doc_id"]))


@dataclass
class SampleStore:
    root: Path

    @classmethod
    def open(cls, root: Path) -> SampleStore:
        store = cls(root)
        cut_torn_tail(root / SAMPLES)
        cut_torn_tail(root / TIMING)
        return store

    def rows(self) -> list[dict[str, Any]]:
        """All rows, first one per key."""
        seen: set[Key] = set()
        out = []
        for row in read_jsonl(self.root / SAMPLES):
            key = row_key(row)
            if key not in seen:
                seen.add(key)
                out.append(row)
        return out

    def done(self) -> set[Key]:
        return {row_key(r) for r in read_jsonl(self.root / SAMPLES)}

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            append_jsonl(self.root / SAMPLES, rows)

    def log_batch(self, session: str, n: int, compute_s: float, wall_s: float) -> None:
        append_jsonl(
            self.root / TIMING,
            [{"session": session, "n": n, "compute_s": compute_s, "wall_s": wall_s}],
        )

    def timing(self) -> tuple[float, float, int]:
        """(wall seconds summed over sessions, compute seconds, samples timed)."""
        rows = read_jsonl(self.root / TIMING)
        wall: dict[str, float] = {}
        for r in rows:
            wall[r["session"]] = max(wall.get(r["session"], 0.0), float(r["wall_s"]))
        compute = sum(float(r["compute_s"]) for r in rows)
        return sum(wall.values()), compute, sum(int(r["n"]) for r in rows)

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_json_atomic(self.root / META, meta)

    def read_meta(self) -> dict[str, Any]:
        path = self.root / META
        if not path.is_file():
            from mbpo_bench.errors import UserError

            raise UserError(f"{path} is missing — {self.root} is not an evaluation run folder")
        return dict(json.loads(path.read_text()))
