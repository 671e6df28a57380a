"""The messy-answer corpus (`tests/fixtures/lmms_corpus/*.jsonl`) scored by OUR code: each sample
goes through the task's adapter (the doc is in lmms-eval's own schema) and the task's own
`process_results`, exactly as `mbpo-bench eval` scores a response. Shared by the lmms-eval parity
tests and the verifier-vs-lmms-eval differences test (not a test module: no `test_` prefix).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from mbpo_bench.tasks.common import item_to_doc

from mbpo_bench.data.items import TaskItem
from mbpo_bench.data.registry import aggregate, get_task
from mbpo_bench.evaluation.batches import resolve_function

CORPUS = Path(__file__).parent / "fixtures" / "lmms_corpus"
# corpus family -> the task that scores it
FAMILIES = {
    "pope": "mbpo_pope_random",
    "mme": "mbpo_mme",
    "ai2d": "mbpo_ai2d",
    "mmstar": "mbpo_mmstar",
    "mmvp": "mbpo_mmvp",
    "hallusionbench": "mbpo_hallusionbench",
    "realworldqa": "mbpo_realworldqa",
}


@cache
def corpus(family: str) -> tuple[dict[str, Any], ...]:
    lines = (CORPUS / f"{family}.jsonl").read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines)


def our_rows(family: str) -> list[dict[str, Any]]:
    """One scored row per corpus sample (verifier verdict plus `row["lmms"]`)."""
    spec = get_task(FAMILIES[family])
    adapter = resolve_function(spec.data["adapter"])
    process = resolve_function(spec.raw["process_results"])
    rows = []
    for index, sample in enumerate(corpus(family)):
        raw = adapter({**sample["doc"], "image": None}, index)
        item = TaskItem(
            task=spec.name,
            doc_id=str(raw["doc_id"]),
            question=str(raw["question"]),
            target=str(raw["answer"]),
            verifier=str(raw.get("verifier") or spec.verifier),
            options=tuple(str(o) for o in raw.get("options") or ()),
            meta=dict(raw.get("meta") or {}),
        )
        scored = process(item_to_doc(item, spec.metrics), [sample["response"]])
        rows.append(next(iter(scored.values())))
    return rows


def our_metrics(family: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    return aggregate(get_task(FAMILIES[family]), rows)


# --- where our verifier and lmms-eval's scoring differ ------------------------------------------

EXAMPLE_CHARS = 60  # longer examples are cut and end with "…" (then they match as a prefix)


def verdict(correct: object) -> str:
    return "right" if correct else "wrong"


def differences(family: str) -> list[dict[str, Any]]:
    """Every corpus sample where our verifier and lmms-eval's rule disagree, in corpus order."""
    out = []
    for i, (sample, row) in enumerate(zip(corpus(family), our_rows(family), strict=True)):
        if bool(row["correct"]) != bool(row["lmms"]["correct"]):
            out.append({
                "item": i, "form": sample["form"], "response": sample["response"],
                "target": row["target"], "verifier": verdict(row["correct"]),
                "lmms_eval": verdict(row["lmms"]["correct"]),
            })  # fmt: skip
    return out


def example_cell(response: str) -> str:
    shown = response if len(response) <= EXAMPLE_CHARS else response[:EXAMPLE_CHARS] + "…"
    return "`" + json.dumps(shown, ensure_ascii=False) + "`"


def readme_rows(family: str) -> list[str]:
    """The README table rows: one example per difference class (form, verifier, lmms-eval)."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in differences(family):
        seen.setdefault((d["form"], d["verifier"], d["lmms_eval"]), d)
    return [
        f"| `{form}` | {example_cell(d['response'])} | {d['target']} | {v} | {lm} |"
        for (form, v, lm), d in sorted(seen.items())
    ]


def summary() -> list[str]:
    """Per task and metric: the verifier's value and the `_lmms` value on the whole corpus."""
    lines = [
        "| task | metric | verifier | lmms-eval (`_lmms`) | items that differ |",
        "|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        rows = our_rows(family)
        values = our_metrics(family, rows)
        n_diff = len(differences(family))
        for name, value in values.items():
            if name.endswith("_lmms") and name.removesuffix("_lmms") in values:
                base = values[name.removesuffix("_lmms")]
                lines.append(
                    f"| {FAMILIES[family]} | {name.removesuffix('_lmms')} | {base:.3f} | "
                    f"{value:.3f} | {n_diff} of {len(rows)} |"
                )
    return lines


if __name__ == "__main__":
    # python tests/support_lmms_corpus.py FAMILY   -> the README rows of FAMILY
    # python tests/support_lmms_corpus.py --summary -> verifier vs _lmms on the whole corpus
    import sys

    print("\n".join(summary() if sys.argv[1] == "--summary" else readme_rows(sys.argv[1])))
