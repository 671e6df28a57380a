"""Run folders shaped like the quickstart's, written by hand (no model), for the figure tests.

`write_embedded_run(path, correct)` writes results.json + samples.jsonl for the three embedded
tasks under the probes image / blind / mismatched / noise, items split 50/50 by language prior;
`correct[(task, probe, prior)]` = how many of that cell's items are right (the first k). Metric
values are exact fractions (k / n), their CIs fixed at value -+ 0.05 (clipped to [0, 1]), so a
test can predict every bar. Item i of each prior group is the twin of item i of the other
(`meta.pair_id`), so a pair is right under a probe when both its items are. With `pairs` (task -> pairs right of PER_PRIOR) `pair_accuracy` is
added to the image probe, and as 0 to the blind probe.
"""

from __future__ import annotations

import json
from pathlib import Path

from mbpo_bench.evaluation.schema import (
    SCHEMA_VERSION,
    BootstrapSettings,
    GenerationSettings,
    Metric,
    ModelInfo,
    ProbeResult,
    Results,
    TaskResult,
)

TASKS = ("mbpo_embedded_color", "mbpo_embedded_count", "mbpo_embedded_existence")
PROBES = ("image", "blind", "mismatched", "noise")
PRIORS = ("consistent", "counter")
PER_PRIOR = 20  # items per prior group and task
PRIOR_METRICS = {"consistent": "acc_prior_consistent", "counter": "acc_counter_prior"}

Cell = tuple[str, str, str]  # (task, probe, prior)


def metric(k: int, n: int) -> Metric:
    value = k / n
    return Metric(value, n, max(0.0, value - 0.05), min(1.0, value + 0.05), True)


def _row(task: str, probe: str, i: int, prior: str, right: bool) -> dict[str, object]:
    gold = "yes" if i % 2 == 0 else "no"
    parsed = gold if right else ("no" if gold == "yes" else "yes")
    return {
        "task": task, "probe": probe, "doc_id": f"{prior}{i:03d}", "prompt": "Is there a cube?",
        "image": None, "target": gold, "target_canonical": gold, "options": [],
        "response": parsed, "parsed": parsed, "correct": right, "score": float(right),
        "components": {}, "meta": {"prior": prior, "pair_id": f"p{i:03d}", "pair_cell": "c"},
    }  # fmt: skip


def write_embedded_run(
    path: Path, correct: dict[Cell, int], *, pairs: dict[str, int] | None = None
) -> Path:
    """A finished eval run folder; cells not in `correct` get half their items right."""
    path.mkdir(parents=True)
    tasks, rows = {}, []
    for task in TASKS:
        probes = {}
        for probe in PROBES:
            metrics, total = {}, 0
            for prior in PRIORS:
                k = correct.get((task, probe, prior), PER_PRIOR // 2)
                total += k
                metrics[f"accuracy[prior={prior}]"] = metric(k, PER_PRIOR)
                # the embedded tasks' own metrics (tasks/metrics.py), as real results carry them
                metrics[PRIOR_METRICS[prior]] = metric(k, PER_PRIOR)
                rows += [_row(task, probe, i, prior, i < k) for i in range(PER_PRIOR)]
            metrics["accuracy"] = metric(total, 2 * PER_PRIOR)
            if probe in ("image", "blind") and pairs is not None:  # a text-only answer: 0
                metrics["pair_accuracy"] = metric(pairs[task] if probe == "image" else 0, PER_PRIOR)
            probes[probe] = ProbeResult(probe, 2 * PER_PRIOR, metrics)
        image = probes["image"].metrics["accuracy"].value or 0.0
        balance = {  # acc(image) - acc(probe), as the evaluation's balance metrics
            f"visual_reliance_{p}": Metric(
                image - (probes[p].metrics["accuracy"].value or 0.0), 2 * PER_PRIOR, None, None
            )
            for p in PROBES[1:]
        }
        tasks[task] = TaskResult(
            task, "3", "{question} Answer yes or no.", "yesno", GenerationSettings(4),
            2 * PER_PRIOR, [], probes, balance,
        )  # fmt: skip
    results = Results(
        SCHEMA_VERSION, ModelInfo(f"tiny-{path.name}", "llava", "abcdef0123456789"),
        list(PROBES), BootstrapSettings(200, 0.95, 0), tasks, {"torch": "2.15.0"},
        "0123456789abcdef", "3.11.9", "cpu", 12.5, 10.0, 64.0, len(rows), 0, {},
    )  # fmt: skip
    (path / "results.json").write_text(results.to_json())
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "command.txt").write_text(f"mbpo-bench eval --output {path.name}\n")
    return path


def write_training_run(path: Path, rows: list[dict[str, float]]) -> Path:
    """A training run folder holding only `metrics.jsonl` (and its command)."""
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "command.txt").write_text(f"mbpo-bench train --output {path.name}\n")
    return path


def mbpo_metrics(steps: int = 60) -> list[dict[str, float]]:
    """GRPO-like logs: falling loss, rising reward with spread, KL, signal share, accuracy;
    a wiggle on every series so smoothing has something to do."""
    out = []
    for s in range(steps):
        wiggle = 0.1 * (1 if s % 2 else -1)
        out.append(
            {
                "step": s, "loss": 1.0 / (1 + 0.1 * s) + wiggle, "reward_mean": s / steps + wiggle,
                "reward_std": 0.2, "kl": 0.001 * s, "zero_variance_frac": 0.5 - s / (4 * steps),
                "accuracy": 0.3 + s / (2 * steps), "lr": 5e-5, "samples_per_s": 10.0,
            }
        )  # fmt: skip
    return out


def sft_metrics(steps: int = 200) -> list[dict[str, float]]:
    return [{"step": s, "loss": 0.5 + 0.2 * (s % 3) / (1 + s), "lr": 3e-4} for s in range(steps)]
