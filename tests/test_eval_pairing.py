"""Paired comparison of two runs from their samples.jsonl."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.pairing import compare_runs, paired_values
from mbpo_bench.runs import append_jsonl


def _run(folder: Path, correct: dict[str, bool]) -> Path:
    folder.mkdir()
    rows = [{"task": "t", "probe": "image", "doc_id": d, "correct": c} for d, c in correct.items()]
    rows.append({"task": "t", "probe": "blind", "doc_id": "x", "correct": True})
    append_jsonl(folder / "samples.jsonl", rows)
    return folder


def test_pairs_on_shared_doc_ids(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", {f"d{i}": i % 2 == 0 for i in range(40)})
    b = _run(tmp_path / "b", {f"d{i}": False for i in range(10, 50)})
    ids, va, vb = paired_values(a, b, "t")
    assert ids == sorted(f"d{i}" for i in range(10, 40))
    res = compare_runs(a, b, "t", n_resamples=300)
    assert res.n == 30 and res.diff == pytest.approx(va.mean() - vb.mean()) == pytest.approx(0.5)
    assert res.ci_low is not None and res.ci_low > 0


def test_no_shared_items_is_a_user_error(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", {"d1": True})
    b = _run(tmp_path / "b", {"d2": True})
    with pytest.raises(UserError, match="share no items"):
        compare_runs(a, b, "t")
