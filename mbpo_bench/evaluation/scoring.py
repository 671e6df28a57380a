"""Per-sample rows -> metrics with CIs -> `Results`. The ONLY way results.json is computed.

`recompute_results(run_dir)` reads the run folder (config.yaml, env.json, meta.json,
samples.jsonl, timing.jsonl) and rebuilds the results from scratch; the runner writes exactly its
output, so "results recomputed from the JSONL equal results.json" holds by construction and a
resumed run equals an uninterrupted one whenever its rows do.

Metrics of a generation probe: `accuracy` (verifier correctness), `format_rate` (an answer of the
expected form was found), `unparsed_rate` (no answer the verifier could parse: counted apart from
parsed wrong answers, so junk is never mistaken for a wrong belief), for yes/no tasks POPE's
`precision`, `recall`, `f1` and `yes_ratio` (share of PREDICTED yes; lmms-eval's POPE counts
ground-truth yes), `accuracy[key=value]` for each item label in `GROUP_KEYS` that takes at least
two values in the items' meta, and for twin-pair items (embedded benchmark v3, `meta.pair_id`)
`pair_accuracy` (both twins right; bootstrapped over pairs). Balance metrics of twin-pair tasks:
`prior_retention` (blind accuracy on prior-consistent items) and `image_sensitivity` (share of
pairs whose two image-probe answers differ, both parsed), beside MMStar's multimodal gain. The `iig` probe reports `iig`,
`logp_image` and `logp_null` (mean per-token log-probs of the reference answer).
Each generation probe also counts its samples by `answer_mode` (choice or generate), and the
run counts why a choice-mode run generated some (`fallback` of the rows).
Bootstrap resamples are drawn over items with a seed derived from (bootstrap seed, task), and
differences between probes are paired over the items both probes cover.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mbpo_bench.config import from_dict, to_dict
from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.config import EvalConfig
from mbpo_bench.evaluation.probes import RELIANCE_PROBES
from mbpo_bench.evaluation.schema import (
    BALANCE_METRICS,
    SCHEMA_VERSION,
    BootstrapSettings,
    GenerationSettings,
    Metric,
    ModelInfo,
    ProbeResult,
    Results,
    SkippedItem,
    TaskResult,
)
from mbpo_bench.evaluation.store import SampleStore
from mbpo_bench.metrics import (
    Estimate,
    RatioMetric,
    binary_metrics,
    difference_ci,
    percentile_interval,
    ratio_ci,
    resample_counts,
)
from mbpo_bench.modality.images import stable_seed
from mbpo_bench.tasks.metrics import complete_pairs

GROUP_KEYS = ("prior", "kind", "negative_split", "category")
HIGHER_IS_BETTER: dict[str, bool | None] = {"yes_ratio": None}


def _metric(est: Estimate, higher_is_better: bool | None = True) -> Metric:
    return Metric(est.value, est.n, est.ci_low, est.ci_high, higher_is_better)


class _Scorer:
    """Bootstrap bookkeeping for one task: counts per item subset, seeded by the task name."""

    def __init__(self, task: str, config: EvalConfig, cluster: str | None = None) -> None:
        self.seed = config.bootstrap.seed + stable_seed(task)
        self.b = config.bootstrap
        self.cluster = cluster  # a meta label whose rows are resampled together (MMBench passes)
        self._counts: dict[int, np.ndarray] = {}

    def counts(self, n: int) -> np.ndarray:
        if n not in self._counts:
            self._counts[n] = resample_counts(n, self.b.n_resamples, self.seed)
        return self._counts[n]

    def ratio(self, m: RatioMetric, hib: bool | None = True) -> Metric:
        return _metric(ratio_ci(m, self.counts(len(m.num)), self.b.confidence), hib)

    def diff(self, a: RatioMetric, b: RatioMetric, hib: bool | None) -> Metric:
        return _metric(difference_ci(a, b, self.counts(len(a.num)), self.b.confidence), hib)

    def resamples(self, *paired: list[Any]) -> Iterator[list[list[Any]]]:
        """Bootstrap resamples of row lists that hold the same items in the same order (one per
        probe): items are drawn, or with `cluster` whole clusters (every row sharing the label,
        or all of several comma-joined labels: the circular passes of one MMBench question, the
        two questions of one MME image, one HallusionBench question set). A cluster drawn twice
        has its copies' last label made distinct, so grouped metrics count it twice, as a
        resample must. Why: a group metric (acc+, fAcc, qAcc, pair accuracy) resampled item by
        item splits and merges its groups, so its interval is not the metric's."""
        n = len(paired[0])
        if not self.cluster:
            for c in self.counts(n)[: self.b.task_metric_resamples].astype(int):
                take = np.repeat(np.arange(n), c)
                yield [[rows[i] for i in take] for rows in paired]
            return
        keys = self.cluster.split(",")
        key = keys[-1]  # a copy relabels this one: the group keys of every metric include it
        members: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(paired[0]):
            meta = row.get("meta") or {}
            values = [meta.get(k) for k in keys]
            label = (  # a row without the label is a cluster of its own, never one "None" cluster
                ("\x00row", str(i)) if None in values else tuple(str(v) for v in values)
            )
            members.setdefault(label, []).append(i)
        groups = list(members.values())
        for c in self.counts(len(groups))[: self.b.task_metric_resamples].astype(int):
            out: list[list[Any]] = [[] for _ in paired]
            for group, times in zip(groups, c, strict=True):
                for copy in range(int(times)):
                    for i in group:
                        for rows, sample in zip(paired, out, strict=True):
                            row = rows[i]
                            if copy:
                                meta = row.get("meta") or {}
                                row = {**row, "meta": {**meta, key: f"{meta.get(key)}#{copy}"}}
                            sample.append(row)
            yield out

    def aggregate(
        self, fn: Callable[[list[Any]], float], rows: list[Any], hib: bool | None
    ) -> Metric:
        """A task's own aggregation with a bootstrap over the same item resamples."""
        return self.aggregate_many(fn, rows, hib).get("", Metric(None, len(rows), None, None, hib))

    def aggregate_many(
        self, fn: Callable[[list[Any]], Any], rows: list[Any], hib: bool | None
    ) -> dict[str, Metric]:
        """Like `aggregate` for a function returning a float ("" key) or a {label: float} dict
        (per-category scores), each label with its bootstrap CI. A NaN (nothing to score, e.g.
        every judgement failed) is reported as value None, never as a number."""
        n = len(rows)
        if n == 0:
            return {}
        value = fn(rows)
        labels = list(value) if isinstance(value, dict) else [""]
        point = value if isinstance(value, dict) else {"": value}
        stats: dict[str, list[float]] = {k: [] for k in labels}
        for (drawn,) in self.resamples(rows):
            sample = fn(drawn)
            sample = sample if isinstance(sample, dict) else {"": sample}
            for k in labels:
                stats[k].append(float(sample.get(k, np.nan)))
        out = {}
        for k in labels:
            v = float(point[k])
            if not np.isfinite(v):
                out[k] = Metric(None, n, None, None, hib)
                continue
            low, high = percentile_interval(np.array(stats[k]), self.b.confidence)
            out[k] = _metric(Estimate(v, low, high, n), hib)
        return out


def _columns(rows: list[dict[str, Any]], verifier: str) -> dict[str, RatioMetric]:
    """The ratio metrics of one generation probe over its rows (in doc-id order)."""
    if not verifier or not all(isinstance(r.get("correct"), bool) for r in rows):
        return {}  # open-ended task: only its own metrics
    correct = np.array([float(r["correct"]) for r in rows])
    out = {"accuracy": RatioMetric.mean(correct)}
    fmt = [r.get("format") for r in rows]
    if rows and all(f is not None for f in fmt):
        out["format_rate"] = RatioMetric.mean(np.array(fmt, dtype=float))
    if verifier == "yesno":
        pred = np.array([{"yes": 1.0, "no": 0.0}.get(r["parsed"], np.nan) for r in rows])
        gold = np.array([1.0 if r["target"] == "yes" else 0.0 for r in rows])
        for name, m in binary_metrics(pred, gold).items():
            if name != "accuracy":
                out[name] = m
    out["unparsed_rate"] = RatioMetric.mean(
        np.array([float(r.get("parsed") is None) for r in rows])
    )
    pairs = complete_pairs(rows)
    if pairs:
        both = [float(all(r["correct"] for r in g)) for _, g in sorted(pairs.items())]
        out["pair_accuracy"] = RatioMetric.mean(np.array(both))
    for key in GROUP_KEYS:
        values = sorted({str(v) for r in rows if (v := (r.get("meta") or {}).get(key)) is not None})
        if len(values) < 2:
            continue  # one group is the whole task (or no labels): nothing to compare
        for value in values:
            member = np.array([float(str(r.get("meta", {}).get(key)) == value) for r in rows])
            out[f"accuracy[{key}={value}]"] = RatioMetric(correct * member, member)
    return out


def _iig_columns(rows: list[dict[str, Any]]) -> dict[str, RatioMetric]:
    return {
        name: RatioMetric.mean(np.array([float(r[name]) for r in rows]))
        for name in ("iig", "logp_image", "logp_null")
    }


def _probe_columns(probe: str, rows: list[dict[str, Any]], verifier: str) -> dict[str, RatioMetric]:
    return _iig_columns(rows) if probe == "iig" else _columns(rows, verifier)


def _task_metrics(
    scorer: _Scorer,
    declared: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    have: dict[str, Metric],
) -> dict[str, Metric]:
    """The task YAML's metrics that no ratio metric above already covers."""
    from mbpo_bench.evaluation.batches import resolve_function

    out = {}
    for name, spec in declared.items():
        if name in have or not spec.get("aggregation"):
            continue
        fn = resolve_function(spec["aggregation"])
        for label, metric in scorer.aggregate_many(
            fn, rows, spec.get("higher_is_better", True)
        ).items():
            out[f"{name}[{label}]" if label else name] = metric
    return out


def _balance(
    scorer: _Scorer,
    by_probe: dict[str, dict[str, dict[str, Any]]],
    verifier: str,
    probe_metrics: dict[str, ProbeResult],
) -> dict[str, Metric]:
    out: dict[str, Metric] = {}
    image = by_probe.get("image", {})
    for other in RELIANCE_PROBES:
        rows_other = by_probe.get(other, {})
        common = sorted(set(image) & set(rows_other))
        acc = _columns([image[d] for d in common], verifier).get("accuracy")
        acc_other = _columns([rows_other[d] for d in common], verifier).get("accuracy")
        if common and acc is not None and acc_other is not None:
            name = f"visual_reliance_{other}"
            out[name] = scorer.diff(acc, acc_other, BALANCE_METRICS[name])
    cols = _columns([image[d] for d in sorted(image)], verifier) if image else {}
    if "yes_ratio" in cols:
        out["predicted_yes_ratio"] = scorer.ratio(cols["yes_ratio"], None)
    consistent, counter = (
        cols.get("accuracy[prior=consistent]"),
        cols.get("accuracy[prior=counter]"),
    )
    if consistent is not None and counter is not None:
        name = "counter_prior_gap"
        out[name] = scorer.diff(consistent, counter, BALANCE_METRICS[name])
    if "iig" in probe_metrics:
        out["iig_mean"] = probe_metrics["iig"].metrics["iig"]
    out.update(_pair_balance(scorer, by_probe, verifier))
    return out


def _pair_balance(
    scorer: _Scorer, by_probe: dict[str, dict[str, dict[str, Any]]], verifier: str
) -> dict[str, Metric]:
    """Looking vs forgetting on twin-pair tasks (see the module docstring)."""
    image, blind = by_probe.get("image", {}), by_probe.get("blind", {})
    pairs = complete_pairs(list(image.values()))
    if not pairs:
        return {}
    out: dict[str, Metric] = {}
    common = sorted(set(image) & set(blind))
    if common:
        consistent = [
            blind[d] for d in common if (blind[d].get("meta") or {}).get("prior") == "consistent"
        ]
        if consistent:
            kept = RatioMetric.mean(np.array([float(r["correct"]) for r in consistent]))
            out["prior_retention"] = scorer.ratio(kept, True)
    changed = [
        float(a["parsed"] is not None and b["parsed"] is not None and a["parsed"] != b["parsed"])
        for _, (a, b) in sorted(pairs.items())
    ]
    out["image_sensitivity"] = scorer.ratio(RatioMetric.mean(np.array(changed)), True)
    return out


def _headline_fn(task_meta: dict[str, Any]) -> tuple[Callable[[list[Any]], float], bool]:
    """The headline metric's aggregation and whether higher is better (accuracy by default)."""
    from mbpo_bench.evaluation.batches import resolve_function
    from mbpo_bench.tasks.metrics import accuracy

    name = task_meta.get("headline") or "accuracy"
    spec = (task_meta.get("metrics") or {}).get(name) or {}
    fn = resolve_function(spec.get("aggregation")) or accuracy
    return fn, spec.get("higher_is_better", True) is not False


def headline_difference(
    scorer: _Scorer,
    task_meta: dict[str, Any],
    a: dict[str, dict[str, Any]],
    b: dict[str, dict[str, Any]],
    *,
    clip: bool,
    hib: bool,
) -> Metric | None:
    """headline(a) - headline(b) over the items both probes cover, paired: each bootstrap
    resample takes the same items from both. Signed so that + means a is better (for a
    lower-is-better headline such as CHAIR_S, b - a); `clip` takes max(0, .) of the value and of
    both bounds (a monotone map, so the interval stays a valid percentile interval)."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    fn, higher = _headline_fn(task_meta)
    sign = 1.0 if higher else -1.0
    rows_a, rows_b = [a[d] for d in common], [b[d] for d in common]
    if fn.__name__ == "accuracy" and not all(isinstance(r.get("correct"), bool) for r in rows_a):
        return None  # no headline on this task (open-ended without a declared one)

    def diff(ra: list[Any], rb: list[Any]) -> float:
        d = sign * (float(fn(ra)) - float(fn(rb))) + 0.0  # + 0.0: no "-0.000" in tables
        return max(0.0, d) if clip else d

    n = len(common)
    stats = [diff(ra, rb) for ra, rb in scorer.resamples(rows_a, rows_b)]
    value = diff(rows_a, rows_b)
    if not np.isfinite(value):
        return Metric(None, n, None, None, hib)
    low, high = percentile_interval(np.array(stats, dtype=float), scorer.b.confidence)
    return _metric(Estimate(value, low, high, n), hib)


def _gain_and_leakage(
    scorer: _Scorer, task_meta: dict[str, Any], by_probe: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, Metric]:
    """MMStar's multimodal gain (image - blind) and leakage (max(0, blind - backbone))."""
    out: dict[str, Metric] = {}
    image, blind, backbone = (by_probe.get(p, {}) for p in ("image", "blind", "backbone"))
    gain = headline_difference(scorer, task_meta, image, blind, clip=False,
                               hib=bool(BALANCE_METRICS["multimodal_gain"]))  # fmt: skip
    if gain is not None:
        out["multimodal_gain"] = gain
    leak = headline_difference(scorer, task_meta, blind, backbone, clip=True, hib=False)
    if leak is not None:
        out["multimodal_leakage"] = leak
    return out


def score_task(
    task: str,
    task_meta: dict[str, Any],
    rows: list[dict[str, Any]],
    config: EvalConfig,
    judge: dict[str, Any] | None = None,
) -> TaskResult:
    """One task's metrics from its rows; only rows of planned (probe, doc_id) pairs count."""
    scorer = _Scorer(task, config, task_meta.get("cluster"))
    verifier = task_meta["verifier"]
    by_probe: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_probe[r["probe"]][str(r["doc_id"])] = r
    probes: dict[str, ProbeResult] = {}
    for probe, planned in task_meta["probes"].items():
        have = by_probe.get(probe, {})
        missing = [d for d in planned if d not in have]
        if missing:
            raise UserError(
                f"task {task}, probe {probe}: {len(missing)} planned samples are missing "
                f"(first: {missing[0]}) — rerun the same command to finish the run"
            )
        ordered = [have[d] for d in sorted(planned)]
        cols = _probe_columns(probe, ordered, verifier)
        metrics = {k: scorer.ratio(m, HIGHER_IS_BETTER.get(k, True)) for k, m in cols.items()}
        answered: dict[str, int] = {}
        if probe != "iig":
            metrics.update(_task_metrics(scorer, task_meta.get("metrics", {}), ordered, metrics))
            answered = _count(r.get("answer_mode", "generate") for r in ordered)
        probes[probe] = ProbeResult(probe, len(ordered), metrics, answered)
    planned_rows = {p: {d: by_probe[p][d] for d in task_meta["probes"][p]} for p in probes}
    return TaskResult(
        task=task,
        version=str(task_meta["version"]),
        prompt_template=str(task_meta["prompt_template"]),
        verifier=verifier,
        generation=GenerationSettings(**task_meta["generation"]),
        n_items=int(task_meta["n_items"]),
        items_skipped=[SkippedItem(**s) for s in task_meta["skipped"]],
        probes=probes,
        balance={
            **_balance(scorer, planned_rows, verifier, probes),
            **_gain_and_leakage(scorer, task_meta, planned_rows),
        },
        headline=str(task_meta.get("headline") or "accuracy"),
        judge=dict(judge or {}),
    )


def _count(values: Iterable[Any]) -> dict[str, int]:
    """value -> how often, sorted by value (deterministic JSON)."""
    return dict(sorted(Counter(str(v) for v in values).items()))


def _answer_counts(
    tasks: dict[str, TaskResult], meta: dict[str, Any], by_task: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, int], dict[str, int]]:
    """(samples per answer mode over every task and probe, fallback reason -> planned samples)."""
    answered: Counter[str] = Counter()
    for task in tasks.values():
        for probe in task.probes.values():
            answered.update(probe.answered)
    reasons = []
    for name, tmeta in meta["tasks"].items():
        planned = {(p, str(d)) for p, ids in tmeta["probes"].items() for d in ids}
        reasons += [
            r["fallback"]
            for r in by_task.get(name, [])
            if r.get("fallback") and (r["probe"], str(r["doc_id"])) in planned
        ]
    return dict(sorted(answered.items())), _count(reasons)


def recompute_results(run_dir: Path) -> Results:
    """Rebuild `Results` from a run folder's files (the runner writes exactly this)."""
    import json

    run_dir = Path(run_dir)
    store = SampleStore(run_dir)
    meta = store.read_meta()
    config = from_dict(EvalConfig, yaml.safe_load((run_dir / "config.yaml").read_text()))
    env = json.loads((run_dir / "env.json").read_text())
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in store.rows():
        by_task[row["task"]].append(row)
    judged = {}
    for name, tmeta in meta["tasks"].items():
        if tmeta.get("judge"):
            from mbpo_bench.judges.stage import attach

            judged[name] = attach(run_dir, name, by_task.get(name, []), tmeta["judge"])
    tasks = {
        name: score_task(name, tmeta, by_task.get(name, []), config, judged.get(name))
        for name, tmeta in meta["tasks"].items()
    }
    answered, fallbacks = _answer_counts(tasks, meta, by_task)
    wall, compute, timed = store.timing()
    n_samples = sum(p.n for t in tasks.values() for p in t.probes.values())
    device = env.get("device", {}).get("name") if isinstance(env.get("device"), dict) else None
    return Results(
        schema_version=SCHEMA_VERSION,
        model=ModelInfo(**meta["model"]),
        probes=list(meta["probes"]),
        bootstrap=BootstrapSettings(
            config.bootstrap.n_resamples, config.bootstrap.confidence, config.bootstrap.seed
        ),
        tasks=tasks,
        packages=dict(env.get("packages", {})),
        git_sha=env.get("git_sha"),
        python=str(env.get("python", "")),
        device=device,
        wall_time_s=wall,
        compute_time_s=compute,
        samples_per_s=timed / compute if compute > 0 else None,
        n_samples=n_samples,
        items_skipped=sum(len(t.items_skipped) for t in tasks.values()),
        config=to_dict(config),
        answer_mode=config.answer_mode,
        protocol=config.runtime.protocol,
        answered=answered,
        fallbacks=fallbacks,
        judge=_judge_totals(judged),
    )


def _judge_totals(judged: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's judge costs: requests, tokens, seconds and judge errors over judged tasks."""
    if not judged:
        return {}
    keys = ("requests", "judge_errors", "prompt_tokens", "completion_tokens", "seconds")
    out: dict[str, Any] = {"judge": sorted({str(j["judge"]) for j in judged.values()})}
    for key in keys:
        out[key] = sum(j[key] for j in judged.values())
    out["seconds"] = round(out["seconds"], 3)
    return out
