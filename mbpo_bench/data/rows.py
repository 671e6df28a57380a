"""Checks on a task's canonical rows as they are read: one line naming task, row and field.

Why here and not in each adapter: every source (embedded parquet, local parquet through a row
adapter, a user's own task) ends in the same canonical row, and the harm of a bad row is the
same whatever its source: a null question becomes an empty prompt that is scored as if it were
an item, a duplicate id makes results and resume keyed by id ambiguous (it crashed the sample
store), and an empty split would give a "finished" evaluation of nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mbpo_bench.errors import UserError

Row = dict[str, Any]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_rows(
    task: str,
    rows: Sequence[Row],
    *,
    split: str,
    where: Callable[[], str],
    close_ended: bool,
) -> None:
    """Raise a one-line UserError at the first bad row of `task`'s `split`.

    `where()` names the data (a file or folder) for the fix; called only on an error. Required: a non-empty, unique
    `doc_id` and a non-empty `question`; close-ended tasks also need a non-empty `answer`
    (their verifier scores against it). An empty split is an error, not zero items.
    """
    if not rows:
        raise UserError(
            f"task {task}: its {split} split has no rows ({where()}) — add rows to the data, or "
            "drop the task from --tasks / --data"
        )
    seen: dict[str, int] = {}
    for number, row in enumerate(rows):
        doc_id = row.get("doc_id")
        if _blank(doc_id):
            raise UserError(
                f"task {task}: row {number} of its {split} split has no doc_id ({where()}) — "
                "give every row a unique id, or drop that row"
            )
        label = f"task {task}: row {number} (doc_id {str(doc_id)!r})"
        required = ("question", "answer") if close_ended else ("question",)
        for name in required:
            if _blank(row.get(name)):
                raise UserError(
                    f"{label}: field '{name}' is missing or empty ({where()}) — fill it in, or "
                    "drop that row"
                )
        key = str(doc_id)
        if key in seen:
            raise UserError(
                f"{label}: the doc_id is also the id of row {seen[key]} ({where()}) — ids must be "
                "unique within a task: rename or drop one of the two rows"
            )
        seen[key] = number
