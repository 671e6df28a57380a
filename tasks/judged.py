"""Judge-scored tasks (MM-Vet, MMHal-Bench): the per-sample row before the judge has spoken.

`process_results` keeps the answer, the reference and the item's labels; the grade is added later
from the run's judge cache (`mbpo_bench.judges.stage.attach`) as `judge_score` (or `judge_error`),
which the aggregations in `metrics.py` read. Inside lmms-eval, where no judge runs, the rows have
no grade and every judged metric is NaN, never 0. Standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, dict[str, Any]]:
    from mbpo_bench.tasks.common import doc_meta

    row = {
        "doc_id": doc["doc_id"],
        "response": str(results[0]) if results else "",
        "target": str(doc["answer"]),
        "meta": doc_meta(doc),
    }
    return {metric: row for metric in doc["metrics"]}
