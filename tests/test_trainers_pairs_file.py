"""A preference dataset that cannot be used is a one-line error naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mbpo_bench.trainers.data import read_pairs

from mbpo_bench.errors import UserError


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 not a parquet file")  # was a pyarrow traceback


def _no_columns(path: Path) -> None:
    pq.write_table(pa.Table.from_pylist([{"task": "t", "doc_id": "1"}]), path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "preference dataset not found"),
        (_garbage, "cannot be read as parquet"),
        (_no_columns, "lacks the column(s) question, chosen, rejected"),
    ],
)
def test_unusable_pairs_file_is_one_line(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "pairs.parquet"
    if make is not None:
        make(path)  # type: ignore[operator]
    with pytest.raises(UserError) as info:
        read_pairs(path)
    text = str(info.value)
    assert message in text and str(path) in text and " — " in text and "\n" not in text
