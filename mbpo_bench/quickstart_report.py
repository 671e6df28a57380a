"""The quickstart's report: findings over seeds, then `render_report`'s tables (first seed).

Units and rules (issue 17):
- Seeds are the unit of inference. Each finding is a difference between two checkpoints on the
  same twin pairs, computed per seed; its across-seed mean comes with a t interval over seeds
  (n - 1 degrees of freedom), beside the per-item paired bootstrap CI of the seed-averaged
  per-pair differences. A finding is "shown" only when the across-seed interval excludes zero
  in the claimed direction AND its Holm-adjusted p-value (one-sample t over seeds, corrected
  over the whole findings list) is below 0.05. One seed shows nothing.
- Headline: pair accuracy (both twins right), which no policy that ignores the image can raise.
  Counter-prior accuracy is never shown without prior-consistent accuracy beside it.
- Floors: a pair cell (`meta.pair_cell`: colour, each count, existence yes / no) whose
  counter-prior items score 0 under the image probe for EVERY checkpoint of every seed measures
  nothing; it is listed as a floor and left out of the pooled numbers, never averaged in.
- The findings are also drawn as a forest plot (`<report stem>_findings.png`): per-item CI thin,
  across-seed interval thick, marks from the same `Finding.shown` as the text.
- Looking vs forgetting, per checkpoint: prior retention (blind accuracy on prior-consistent
  items), image sensitivity (share of pairs whose two image answers differ, both parsed),
  multimodal gain (image - blind, MMStar's), unparsed answers counted apart from wrong ones.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mbpo_bench.errors import UserError
from mbpo_bench.metrics import across_seeds, holm, paired_bootstrap
from mbpo_bench.reporting import forest, render_report
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.loading import RunData, load_run
from mbpo_bench.runs import write_atomic

if TYPE_CHECKING:
    from mbpo_bench.quickstart_config import QuickstartConfig

TASKS = ("mbpo_embedded_existence", "mbpo_embedded_color", "mbpo_embedded_count")
ALPHA = 0.05
# per-pair quantities (see `pair_table`); `image_*` from the image probe, `blind_*` text-only
METRICS = {
    "pair_accuracy": "pair accuracy (both twins right)",
    "counter": "counter-prior accuracy",
    "consistent": "prior-consistent accuracy",
    "prior_retention": "prior retention (blind acc., consistent)",
    "image_sensitivity": "image sensitivity (twin answers differ)",
    "multimodal_gain": "multimodal gain (image - blind)",
    "unparsed_image": "unparsed (image)",
    "unparsed_blind": "unparsed (blind)",
}


@dataclass(frozen=True)
class Diff:
    """A paired per-item difference (kept for callers of the single-seed API)."""

    diff: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})"


def _verdict(diff: Diff, want: str) -> str:
    """Per-item verdict of one difference (one seed); the report's verdicts are over seeds."""
    if want == "gain":
        return "**shown**" if diff.low > 0 else "**not shown**"
    return "**shown**" if diff.high >= 0 else "**not shown** (a loss: the CI is below zero)"


def _correct(row: dict[str, Any] | None) -> float:
    return float(bool(row and row.get("correct")))


def _parsed(row: dict[str, Any] | None) -> Any:
    return None if row is None else row.get("parsed")


def pair_table(run: RunData, task: str) -> dict[str, dict[str, Any]]:
    """pair_id -> per-pair quantities of one run and task (complete pairs only)."""
    image = run.rows(task, "image")
    blind = run.rows(task, "blind")
    pairs: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for doc_id, row in image.items():
        meta = row.get("meta") or {}
        if meta.get("pair_id") is not None:
            pairs[str(meta["pair_id"])][str(meta.get("prior"))] = {**row, "doc_id": doc_id}
    out = {}
    for pid, twins in pairs.items():
        if set(twins) != {"consistent", "counter"}:
            continue
        c, k = twins["consistent"], twins["counter"]
        bc, bk = blind.get(c["doc_id"]), blind.get(k["doc_id"])
        pc, pk = _parsed(c), _parsed(k)
        values = {
            "cell": str((c.get("meta") or {}).get("pair_cell")),
            "pair_accuracy": _correct(c) * _correct(k),
            "counter": _correct(k),
            "consistent": _correct(c),
            "image_sensitivity": float(pc is not None and pk is not None and pc != pk),
            "unparsed_image": ((pc is None) + (pk is None)) / 2,
        }
        if bc is not None and bk is not None:
            values["prior_retention"] = _correct(bc)
            values["multimodal_gain"] = (
                _correct(c) + _correct(k) - _correct(bc) - _correct(bk)
            ) / 2
            values["unparsed_blind"] = ((_parsed(bc) is None) + (_parsed(bk) is None)) / 2
        out[f"{task}/{pid}"] = values
    return out


def all_pairs(run: RunData) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        if task in run.results.tasks:
            out.update(pair_table(run, task))
    if not out:
        raise UserError(
            f"run {run.path} has no complete twin pairs — evaluate it on the embedded benchmark "
            "v3 (task version 3) with an even --limit"
        )
    return out


def floors(tables: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Pair cells whose counter-prior items score 0 in every table (checkpoint x seed)."""
    cells = sorted({v["cell"] for t in tables for v in t.values()})
    return [
        cell
        for cell in cells
        if all(v["counter"] == 0.0 for t in tables for v in t.values() if v["cell"] == cell)
    ]


def mean_of(table: dict[str, dict[str, Any]], metric: str, keep: set[str]) -> float:
    vals = [v[metric] for k, v in table.items() if k in keep and metric in v]
    return float(np.mean(vals)) if vals else float("nan")


def over_seeds(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, t-interval low, high, two-sided p of mean = 0) over seeds; NaN with one seed."""
    est = across_seeds(values)
    nan = float("nan")
    return (
        est.mean,
        nan if est.low is None else est.low,
        nan if est.high is None else est.high,
        nan if est.p_value is None else est.p_value,
    )


@dataclass
class Finding:
    text: str
    treatment: str
    control: str  # "" for the base's own bias (consistent - counter)
    metric: str
    want: str  # "gain" (claim: > 0) or "loss" (claim: < 0)
    per_seed: list[float]
    mean: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    p: float = float("nan")
    p_holm: float = float("nan")
    item: tuple[float, float, float, int] = (float("nan"),) * 3 + (0,)  # type: ignore[assignment]

    def shown(self) -> bool:
        if math.isnan(self.low) or math.isnan(self.p_holm) or self.p_holm >= ALPHA:
            return False
        return self.low > 0 if self.want == "gain" else self.high < 0


def _fmt(x: float, sign: bool = True) -> str:
    return "n/a" if math.isnan(x) else (f"{x:+.3f}" if sign else f"{x:.3f}")


def _findings_spec(arms: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(text, treatment, control, metric, want) of every finding the arms allow."""
    spec = [("The base leans on the prior: prior-consistent - counter-prior accuracy", "base", "",
             "bias", "gain")]  # fmt: skip
    pairs = [("mbpo", "base"), ("mbpo", "sft_mined"), ("mbpo", "grpo_mined"), ("mbpo", "dpo"),
             ("mbpo", "dpo_mdpo"), ("mbpo", "sft_balanced"), ("mbpo_twins", "base"),
             ("mbpo_twins", "sft_twins"), ("mbpo_twins", "mbpo")]  # fmt: skip
    for t, c in pairs:
        if t not in arms or (c != "base" and c not in arms):
            continue
        spec.append((f"{t} - {c}, pair accuracy (gain)", t, c, "pair_accuracy", "gain"))
        if c != "mbpo":
            spec.append(
                (f"{t} - {c}, prior-consistent accuracy (loss)", t, c, "consistent", "loss")
            )
    return spec


def compute_findings(
    seeds: dict[int, dict[str, dict[str, dict[str, Any]]]], keep: set[str], arms: list[str]
) -> list[Finding]:
    """Every finding over seeds, Holm-corrected over the list."""
    out: list[Finding] = []
    for text, t, c, metric, want in _findings_spec(arms):
        per_seed, item_t, item_c = [], [], []
        for tables in seeds.values():
            if metric == "bias":
                a, b = mean_of(tables[t], "consistent", keep), mean_of(tables[t], "counter", keep)
                xs = np.array([tables[t][k]["consistent"] for k in sorted(keep)])
                ys = np.array([tables[t][k]["counter"] for k in sorted(keep)])
            else:
                a, b = mean_of(tables[t], metric, keep), mean_of(tables[c], metric, keep)
                xs = np.array([tables[t][k][metric] for k in sorted(keep)])
                ys = np.array([tables[c][k][metric] for k in sorted(keep)])
            per_seed.append(a - b)
            item_t.append(xs)
            item_c.append(ys)
        f = Finding(text, t, c, metric, want, per_seed)
        f.mean, f.low, f.high, f.p = over_seeds(per_seed)
        d = paired_bootstrap(np.mean(item_t, axis=0), np.mean(item_c, axis=0), n_resamples=2000,
                             seed=len(out))  # fmt: skip
        if d.diff is not None and d.ci_low is not None and d.ci_high is not None:
            f.item = (d.diff, d.ci_low, d.ci_high, d.n)
        out.append(f)
    adjusted = holm([None if math.isnan(f.p) else f.p for f in out])
    for f, adj in zip(out, adjusted, strict=True):
        f.p_holm = float("nan") if adj is None else adj
    return out


def finding_line(i: int, f: Finding, n_seeds: int) -> str:
    per_seed = ", ".join(_fmt(x) for x in f.per_seed)
    if n_seeds < 2:
        verdict = "**not shown** (one seed: no across-seed interval)"
    elif math.isnan(f.p):
        verdict = "**not shown** (identical at every seed: no spread to test)"
    elif f.shown():
        verdict = "**shown**" + (" (a loss)" if f.want == "loss" else "")
    else:
        verdict = "**not shown**"
    return (
        f"{i}. {f.text}: across {n_seeds} seeds {_fmt(f.mean)} [{_fmt(f.low)}, {_fmt(f.high)}] "
        f"(t over seeds; Holm p {_fmt(f.p_holm, False)}); per seed {per_seed}; per-item paired "
        f"CI of the seed mean {_fmt(f.item[0])} [{_fmt(f.item[1])}, {_fmt(f.item[2])}] "
        f"(n={f.item[3]} pairs) — {verdict}."
    )


def _summary_table(
    seeds: dict[int, dict[str, dict[str, dict[str, Any]]]], names: list[str], keep: set[str]
) -> list[str]:
    head = "| checkpoint | " + " | ".join(METRICS.values()) + " |"
    lines = [head, "|---|" + "---:|" * len(METRICS)]
    for name in names:
        cells = []
        for metric in METRICS:
            vals = [mean_of(t[name], metric, keep) for t in seeds.values()]
            mean, low, high, _ = over_seeds(vals)
            ci = "" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]"
            cells.append(f"{mean:+.3f}{ci}" if metric == "multimodal_gain" else f"{mean:.3f}{ci}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _per_task_table(
    seeds: dict[int, dict[str, dict[str, dict[str, Any]]]], names: list[str], keep: set[str]
) -> list[str]:
    lines = ["| checkpoint | task | pair acc. | counter-prior | prior-consistent |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for name in names:
        for task in TASKS:
            mine = {k for k in keep if k.startswith(task + "/")}
            if not mine:
                continue
            row = [
                f"{np.mean([mean_of(t[name], m, mine) for t in seeds.values()]):.3f}"
                for m in ("pair_accuracy", "counter", "consistent")
            ]
            lines.append(
                f"| {name} | {task.removeprefix('mbpo_embedded_')} | " + " | ".join(row) + " |"
            )
    return lines


def _cell_table(
    seeds: dict[int, dict[str, dict[str, dict[str, Any]]]], names: list[str], floor: list[str]
) -> list[str]:
    any_table = next(iter(seeds.values()))[names[0]]
    cells = sorted({v["cell"] for v in any_table.values()})
    lines = ["| pair cell | pairs | " + " | ".join(f"{n} counter / consistent" for n in names)
             + " | floor |", "|---|---:|" + "---:|" * len(names) + "---|"]  # fmt: skip
    for cell in cells:
        keys = {k for k, v in any_table.items() if v["cell"] == cell}
        vals = []
        for name in names:
            k_acc = np.mean([mean_of(t[name], "counter", keys) for t in seeds.values()])
            c_acc = np.mean([mean_of(t[name], "consistent", keys) for t in seeds.values()])
            vals.append(f"{k_acc:.3f} / {c_acc:.3f}")
        flag = "**floor** (left out of pooled numbers)" if cell in floor else ""
        lines.append(f"| {cell} | {len(keys)} | " + " | ".join(vals) + f" | {flag} |")
    return lines


def _matching(config: QuickstartConfig, folder: Path, names: list[str]) -> list[str]:
    """What each arm trained on and with which optimizer, read from the run folders."""
    import yaml

    lines = ["| arm | optimizer steps | prompts per step | lr | warm-up | schedule | training items |",
             "|---|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    for name in names:
        if name == "base":
            continue
        cfg_file = folder / name / "config.yaml"
        if not cfg_file.is_file():
            continue
        cfg = yaml.safe_load(cfg_file.read_text())
        optim = cfg.get("optim", {})
        n_items = "full biased split"
        stats = folder / name / "pairs.stats.json"
        if stats.is_file():
            kept = json.loads(stats.read_text()).get("kept")
            twins = (cfg.get("hybrid") or {}).get("twins")
            n_items = f"{kept} mined" + (" + their twins" if twins else "")
        elif cfg.get("preference_data") or str(cfg.get("data", "")).endswith(".parquet"):
            pairs = Path(cfg.get("preference_data") or cfg["data"])
            kept = json.loads(pairs.with_suffix(".stats.json").read_text())
            extra = (" + their twins" if cfg.get("twins") else
                     " + as many question-matched consistent" if cfg.get("balanced") else "")  # fmt: skip
            n_items = f"{kept.get('kept')} mined{extra}"
        lines.append(
            f"| {name} | {optim.get('steps')} | {optim.get('batch_size')} | {optim.get('lr')} | "
            f"{optim.get('warmup_ratio')} | {optim.get('schedule')} | {n_items} |"
        )
    return lines


def _mining(folder: Path, names: list[str]) -> list[str]:
    lines = ["| arm | candidates | attacked | right on the clean image | already wrong | flipped | "
             "flip rate | kept |", "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in names:
        stats = folder / name / "pairs.stats.json"
        if not stats.is_file():
            continue
        s = json.loads(stats.read_text())
        rate = s.get("flip_rate")
        lines.append(
            f"| {name} | {s.get('candidates')} | {s.get('attacked')} | {s.get('clean_right')} | "
            f"{s.get('clean_wrong')} | {s.get('flipped')} | "
            f"{'n/a' if rate is None else f'{rate:.3f}'} | {s.get('kept')} |"
        )
    return lines


def _closing(findings: list[Finding], n_seeds: int) -> list[str]:
    """The closing note: does an MBPO arm beat its matched control on pair accuracy without
    losing prior-consistent accuracy, by the across-seed rule?"""
    out = []
    for t, c in (("mbpo", "sft_mined"), ("mbpo_twins", "sft_twins")):
        gain = next((f for f in findings if (f.treatment, f.control, f.metric) ==
                     (t, c, "pair_accuracy")), None)  # fmt: skip
        loss = next((f for f in findings if (f.treatment, f.control, f.metric) ==
                     (t, c, "consistent")), None)  # fmt: skip
        if gain is None or loss is None:
            continue
        beats = gain.shown() and not loss.shown()
        out.append(
            f"- **{t} vs its matched control {c}: "
            + ("beats it" if beats else "does NOT beat it")
            + f"** on pair accuracy without a shown prior-consistent loss, over {n_seeds} seed(s): "
            f"pair accuracy {_fmt(gain.mean)} [{_fmt(gain.low)}, {_fmt(gain.high)}], "
            f"prior-consistent {_fmt(loss.mean)} [{_fmt(loss.low)}, {_fmt(loss.high)}]."
        )
    return out


def findings_figure(findings: list[Finding], n_seeds: int, path: Path) -> list[str]:
    """The findings as a forest plot at `path` (marks = `Finding.shown`), with its markdown."""
    from mbpo_bench.reporting.figures import save_png
    from mbpo_bench.reporting.report_figures import image

    rows = []
    for f in findings:
        if math.isnan(f.item[0]):
            continue
        seeds = None if math.isnan(f.low) else forest.SeedCI(f.low, f.high, n_seeds)
        section = f"{f.treatment} - {f.control}" if f.control else f"{f.treatment} (own bias)"
        what = METRICS.get(f.metric, "consistent - counter-prior accuracy")
        rows.append(forest.ForestRow(section, what, "findings", f.mean, f.item[1], f.item[2],
                                     f.shown(), seeds))  # fmt: skip
    if not rows:
        return []
    title = f"Findings over {n_seeds} seed(s): per-item paired CI (thin), across-seed CI (thick)"
    save_png(forest.forest_figure(rows, title=title), path)
    return [image(forest.alt_text(rows), path), ""]


def write_report(
    config: QuickstartConfig, timings: dict[int, dict[str, float]], *, path: Path
) -> Path:
    """Findings over seeds from the seeds' eval folders, then the first seed's full tables,
    written to `path`."""
    from mbpo_bench.progress import stage_bar
    from mbpo_bench.quickstart_config import ARMS, seed_dirs

    names = ["base", *[a for a in ARMS if a in config.arms]]
    seeds: dict[int, dict[str, dict[str, dict[str, Any]]]] = {}
    runs0: list[RunData] = []
    done = [(seed, folder) for seed, folder in seed_dirs(config) if seed in timings]
    missing = [seed for seed, _ in seed_dirs(config) if seed not in timings]
    for seed, folder in done:
        runs = [load_run(folder / f"eval_{n}", n) for n in names]
        if not runs0:
            runs0 = runs
        seeds[seed] = {r.name: all_pairs(r) for r in runs}
    tables = [t for s in seeds.values() for t in s.values()]
    floor = floors(tables)
    common = set.intersection(*(set(t) for t in tables))
    keep = {k for k in common if tables[0][k]["cell"] not in floor}
    findings = compute_findings(seeds, keep, names)
    first = done[0][1]
    with stage_bar("report", 1, unit="parts", enabled=config.progress) as advance:
        report = render_report(
            [first / f"eval_{n}" for n in names], baseline=first / "eval_base", out=path,
            names=names, training_runs=[first / n for n in names if n != "base"],
            title="mbpo-bench quickstart: MBPO on the embedded benchmark (v3, twin pairs)",
            config=ReportConfig(),
        )  # fmt: skip
        advance(1)
    del runs0
    command = shlex.join(["mbpo-bench", *sys.argv[1:]]) if sys.argv else "mbpo-bench quickstart"
    n_seeds = len(seeds)
    left_out = ["", f"**Seeds that did not finish (left out): {', '.join(map(str, missing))}.**"]
    left_out = left_out if missing else []
    seed_list = ", ".join(str(s) for s in seeds)
    head = [
        f"Regenerate: `{command}` (offline). Run folders: `{config.output}`.",
        "",
        f"**Split: `{config.split}`** (every number below; `dev` is for choosing settings, `test` "
        f"for reports). **Seeds: {n_seeds}** ({seed_list}). Items: the first "
        f"{config.eval_limit or 'all'} of each task = {len(common)} complete twin pairs over the "
        "three tasks. Benchmark: embedded, generator version 3 (twin pairs).",
        *left_out,
        "",
        "## Closing note",
        "",
        *(_closing(findings, n_seeds) or ["- no MBPO arm with its matched control was run."]),
        "",
        "## Findings (over seeds; computed from the run folders)",
        "",
        f"Pooled over the twin pairs of the three tasks, minus the floor cells ({', '.join(floor) or 'none'}). "
        "Each line: the across-seed mean of the per-seed difference with its t interval over "
        "seeds, the Holm-adjusted p-value over this list, the per-seed values, and the per-item "
        "paired bootstrap CI of the seed-averaged per-pair differences (which ignores seed "
        "variance; it is not the basis of a verdict). **Shown** = the across-seed interval "
        "excludes zero in the claimed direction and Holm p < 0.05.",
        "",
        *(finding_line(i + 1, f, n_seeds) for i, f in enumerate(findings)),
        "",
        *findings_figure(findings, n_seeds, report.with_name(f"{report.stem}_findings.png")),
        "## Every checkpoint (mean over seeds [t interval over seeds], pooled non-floor pairs)",
        "",
        "Counter-prior accuracy always beside prior-consistent accuracy. Prior retention = blind "
        "accuracy on prior-consistent items (the text prior kept); image sensitivity = share of "
        "pairs whose two image answers differ (both parsed); multimodal gain = image - blind "
        "accuracy (MMStar's; its leakage term needs the base LLM's text-only score, which a "
        "tiny model trained from scratch does not have). Unparsed answers are counted apart, "
        "never as a belief.",
        "",
        *_summary_table(seeds, names, keep),
        "",
        "Per task (mean over seeds; pooling hides opposite signs, so read this too):",
        "",
        *_per_task_table(seeds, names, keep),
        "",
        "## Pair cells and floors",
        "",
        "Counter-prior / prior-consistent accuracy per cell (mean over seeds). A cell whose "
        "counter-prior items score 0 for every checkpoint of every seed is a floor: it measures "
        "nothing and is left out of every pooled number above.",
        "",
        *_cell_table(seeds, names, floor),
        "",
        "## What each arm trained on (matching)",
        "",
        "Controls are matched to their MBPO arm on optimizer steps, prompts per step and the "
        "learning-rate schedule (warm-up, decay: the same OptimConfig"
        + (
            f", at the lr {config.control_lr:g} chosen on dev (`control_lr`)"
            if config.control_lr is not None
            else ", lr included"
        )
        + f"; read from the run folders of seed {next(iter(seeds))}). An MBPO step has `prompts per step` groups (half offline pairs, "
        "half online groups of G samples; the twin variant's offline half is pairs plus their "
        "twins); an SFT step has that many items. One GRPO update per batch, so the PPO clip "
        "is inactive (ratio = 1 on the only pass).",
        "",
        *_matching(config, first, names),
        "",
        "Mining (hard negative = right on the clean image and wrong after PGD; with "
        "`mining.keep=prior` (mbpo) the wrong answer must also be the text-only one, "
        "`keep=wrong` (mbpo_twins) keeps every flip; flip rate = flipped / right on the clean "
        "image; items already wrong on the clean image are counted apart and never kept):",
        "",
        *_mining(first, names),
        "",
        "| seed | " + " | ".join(next(iter(timings.values()))) + " |",
        "|---|" + "---:|" * len(next(iter(timings.values()))),
        *(
            f"| {s} | " + " | ".join(f"{v:.1f}" for v in t.values()) + " |"
            for s, t in timings.items()
        ),
        "",
        f"Tables below: seed {next(iter(seeds))} only, every probe and metric.",
        "",
    ]
    text = report.read_text()
    title_end = text.index("\n\n") + 2
    write_atomic(report, text[:title_end] + "\n".join(head) + "\n" + text[title_end:])
    return report
