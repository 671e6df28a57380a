"""Judge a run's open-ended answers once: the cache in the run folder, and the lookup scoring uses.

`judgements.jsonl` (beside samples.jsonl) holds one record per judged answer, keyed by
(judge id, prompt hash, task, doc id, response text): a resumed or repeated run, or another probe
that produced the same answer, sends no request twice, and a changed prompt or judge is judged
afresh. A record carries the grade (`score`) or a judge `error` with the `raw` reply, the tokens
and the seconds it cost. Records are appended and fsynced as replies arrive, so an outage mid-run
keeps what was judged. Scoring (`attach`) reads the records back onto the sample rows; results
are thus recomputed from samples.jsonl + judgements.jsonl, as before from samples alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError
from mbpo_bench.judges.rubrics import RUBRICS, Unparseable, prompt_hash, render
from mbpo_bench.runs import append_jsonl, cut_torn_tail, read_jsonl

if TYPE_CHECKING:
    from mbpo_bench.judges.base import Judge
    from mbpo_bench.judges.config import JudgeConfig

JUDGEMENTS = "judgements.jsonl"


def prompt_template(task: str, rubric: str, config: JudgeConfig) -> tuple[str, str]:
    """(template text, where it came from): --judge-prompt for the task or rubric, else ours."""
    path = config.prompts.get(task) or config.prompts.get(rubric) or config.prompts.get("*")
    if path is None:
        return RUBRICS[rubric].prompt, "built-in, our wording"
    try:
        return Path(path).read_text(), str(path)
    except OSError as exc:
        raise UserError(
            f"judge prompt file {path} cannot be read ({exc.strerror}) — fix --judge-prompt"
        ) from exc


def task_judging(task: str, rubric: str, config: JudgeConfig) -> dict[str, Any]:
    """What meta.json and results.json record about how a task is judged."""
    text, source = prompt_template(task, rubric, config)
    return {"rubric": rubric, "judge": config.spec, "prompt_hash": prompt_hash(text),
            "prompt_source": source}  # fmt: skip


def request_key(judge: str, phash: str, task: str, doc_id: str, response: str) -> str:
    blob = json.dumps([judge, phash, task, doc_id, response], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _key(row: dict[str, Any], judging: dict[str, Any]) -> str:
    return request_key(str(judging["judge"]), judging["prompt_hash"], str(row["task"]),
                       str(row["doc_id"]), str(row.get("response", "")))  # fmt: skip


def load(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in read_jsonl(Path(run_dir) / JUDGEMENTS)}


def _record(key: str, row: dict[str, Any], judging: dict[str, Any], reply: Any) -> dict[str, Any]:
    score, error = None, reply.error
    if error is None:
        try:
            score = RUBRICS[judging["rubric"]].parse(reply.text or "")
        except Unparseable as exc:
            error = f"unparseable judgement: {exc}"
    return {
        "key": key, "judge": judging["judge"], "prompt_hash": judging["prompt_hash"],
        "task": row["task"], "doc_id": str(row["doc_id"]), "score": score, "error": error,
        "raw": reply.text if reply.text is not None else reply.raw,
        "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
        "seconds": reply.seconds,
    }  # fmt: skip


def run_stage(
    run_dir: Path,
    rows: Sequence[dict[str, Any]],
    judged: dict[str, dict[str, Any]],
    judge: Judge,
    config: JudgeConfig,
) -> int:
    """Judge every answer of a judged task that the cache lacks; return the requests sent."""
    cut_torn_tail(Path(run_dir) / JUDGEMENTS)  # a kill -9 mid-append: never glue onto it
    cache = load(run_dir)
    todo: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for row in rows:
        judging = judged.get(str(row["task"]))
        if judging is None or "response" not in row:
            continue
        key = _key(row, judging)
        if key not in cache:
            todo.setdefault(key, (row, judging))
    if not todo:
        return 0
    keys = list(todo)
    prompts = []
    for key in keys:
        row, judging = todo[key]
        template, _ = prompt_template(str(row["task"]), judging["rubric"], config)
        prompts.append(render(template, RUBRICS[judging["rubric"]].fields(row)))
    sent = 0
    for index, reply in judge.judge(prompts):
        row, judging = todo[keys[index]]
        append_jsonl(Path(run_dir) / JUDGEMENTS, [_record(keys[index], row, judging, reply)])
        sent += 1
    return sent


def attach(
    run_dir: Path, task: str, rows: list[dict[str, Any]], judging: dict[str, Any]
) -> dict[str, Any]:
    """Put each row's grade (`judge_score`) or `judge_error` on it; return the task's summary
    (judge, prompt hash, counts, tokens, seconds, the errors with their raw text)."""
    cache = load(run_dir)
    used: dict[str, dict[str, Any]] = {}
    missing = []
    for row in rows:
        if "response" not in row:
            continue
        rec = cache.get(_key(row, judging))
        if rec is None:
            missing.append(row)
            continue
        used[rec["key"]] = rec
        row["judge_score"], row["judge_error"] = rec["score"], rec["error"]
    if missing:
        raise UserError(
            f"task {task}: {len(missing)} answers are not judged yet (first: "
            f"{missing[0]['probe']}/{missing[0]['doc_id']}) — rerun the same command to finish "
            "the run"
        )
    errors = [
        {"probe": r["probe"], "doc_id": str(r["doc_id"]), "error": r["judge_error"],
         "raw": cache[_key(r, judging)]["raw"]}
        for r in rows if r.get("judge_error")
    ]  # fmt: skip
    return {
        **judging,
        "answers_judged": sum(1 for r in rows if "judge_score" in r),
        "requests": len(used),
        "judge_errors": len(errors),
        "errors": errors,
        "prompt_tokens": sum(int(r["prompt_tokens"]) for r in used.values()),
        "completion_tokens": sum(int(r["completion_tokens"]) for r in used.values()),
        "seconds": round(sum(float(r["seconds"]) for r in used.values()), 3),
    }
