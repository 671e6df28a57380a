"""`render_report`: run folders -> one markdown report, its figures (PNG) beside it.

Rendered from files only: `results.json` and `samples.jsonl` of evaluated runs, `metrics.jsonl`
of training runs, and every run's `command.txt`, `config.yaml`, `env.json`. Nothing is
recomputed from a model.

Decisions:
- Runs appear in the order given, the baseline first (it is added when not among the runs).
- Results of one task are compared only when every run used the same task version and prompt
  template; otherwise the report is refused (one line naming the task and the runs) unless
  `allow_version_mismatch`, which renders the task flagged with "†" and a warning at the top.
- Runs answered in different answer modes (greedy generation vs one prefill over the choices)
  are not the same measurement: the report is still rendered (comparing the modes is a use),
  with a warning at the top and the mode per run in the runs table.
- Figures (`report_figures`) are written into the report's folder, named after the report
  (`<stem>_balance_<group>.png`, `<stem>_forest.png`, `<stem>_curves.png`), from the same data
  as the tables, and linked with alt text that states the figure's main number.
- Runs given one --name and trained at distinct recorded seeds are seeds of one arm
  (`seed_groups`): listed per seed, and their differences also taken over seeds
  (`seed_differences`), drawn as one forest column whose marks are that table's verdicts.
- Output is deterministic for the same inputs (seeded bootstrap, sorted tasks, no timestamps of
  its own, paths relative to the report), so golden tests compare it byte for byte; it is
  written atomically.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.schema import Results
from mbpo_bench.reporting.config import ReportConfig
from mbpo_bench.reporting.differences import difference_table
from mbpo_bench.reporting.format import markdown_table
from mbpo_bench.reporting.loading import RunData, load_run
from mbpo_bench.reporting.paper import paper_section
from mbpo_bench.reporting.plots import Curves, last_values, read_curves
from mbpo_bench.reporting.provenance import run_section, runs_table
from mbpo_bench.reporting.report_figures import (
    balance_figures,
    curves_figure_md,
    forest_figure_md,
)
from mbpo_bench.reporting.seed_differences import seed_rows, seed_tables
from mbpo_bench.reporting.seeds import training_seed
from mbpo_bench.reporting.tables import (
    all_tasks,
    average_table,
    averaged_tasks,
    balance_table,
    has_lmms_metrics,
    task_table,
)
from mbpo_bench.runs import write_atomic

LMMS_NOTE = (
    "Columns marked (lmms-eval): the same metric with lmms-eval 0.7.3's own answer parsing "
    "(`<metric>_lmms` in results.json); quote those beside lmms-eval's published tables, compare "
    "models with the verifier's columns."
)


def render_report(
    run_dirs: Sequence[Path],
    *,
    baseline: Path | None,
    out: Path,
    names: Sequence[str] | None = None,
    training_runs: Sequence[Path] = (),
    title: str | None = None,
    allow_version_mismatch: bool = False,
    config: ReportConfig | None = None,
) -> Path:
    """Write the markdown report comparing `run_dirs` (and `baseline`) to `out`; return `out`.

    `names` label the runs of `run_dirs` in order (default: folder names). The figures (modality
    balance per task group, forest plot of the paired differences, one grid of the training
    curves of `training_runs`) are written beside `out`, named after its stem.
    """
    config = config or ReportConfig()
    if allow_version_mismatch:
        config = dataclasses.replace(config, allow_version_mismatch=True)
    out = Path(out)
    if out.suffix != ".md":
        raise UserError(f"report path {out} does not end in .md — pass --out reports/NAME.md")
    runs, base = load_runs(run_dirs, baseline, names)
    flagged, warnings = check_versions(runs, config.allow_version_mismatch)
    warnings += check_answer_modes(runs)
    warnings += check_protocols(runs)
    curves = [read_curves(Path(p), Path(p).resolve().name) for p in training_runs]

    parts = [f"# {title or 'mbpo-bench report'}", "", _intro(base, config), ""]
    parts += [f"> **Warning:** {w}\n" for w in warnings]
    parts += ["## Runs", "", markdown_table(runs_table(_triples(runs), out.parent, _name(base)))]
    parts += paper_section(runs, config)
    parts += _average_section(runs, config)
    parts += _task_sections(runs, flagged, config)
    parts += _balance_sections(runs, config, _name(base), out)
    if base is not None:
        parts += _difference_sections(runs, base, flagged, config, out)
    if curves:
        parts += _curve_section(curves, out)
    parts += ["## Provenance", ""]
    parts += [run_section(r.name, r.path, out.parent, r.results, "evaluation") for r in runs]
    parts += [run_section(c.name, c.path, out.parent, None, "training") for c in curves]
    write_atomic(out, "\n".join(parts).rstrip("\n") + "\n")
    return out


def load_runs(
    run_dirs: Sequence[Path], baseline: Path | None, names: Sequence[str] | None
) -> tuple[list[RunData], RunData | None]:
    """Load every run (baseline first); check names are as many as runs and unique."""
    if not run_dirs and baseline is None:
        raise UserError(
            "no run folders given — pass one or more RUN_DIR written by `mbpo-bench eval`"
        )
    if names is not None and len(names) != len(run_dirs):
        raise UserError(
            f"{len(names)} --name for {len(run_dirs)} run folders — give one --name per RUN_DIR, "
            "in the same order"
        )
    labels = list(names) if names is not None else [None] * len(run_dirs)
    runs = [load_run(Path(p), n) for p, n in zip(run_dirs, labels, strict=True)]
    base = None
    if baseline is not None:
        resolved = Path(baseline).resolve()
        base = next((r for r in runs if r.path.resolve() == resolved), None)
        if base is None:
            base = load_run(Path(baseline))
            runs.insert(0, base)
        else:
            runs.remove(base)
            runs.insert(0, base)
    seed_groups(runs)
    seen: set[str] = set()
    for run in runs:
        if run.name in seen:
            raise UserError(
                f"two runs are named '{run.name}' — give each run a distinct --name (runs of "
                "one arm at several seeds may share a name when their training runs recorded "
                "distinct runtime.seed)"
            )
        seen.add(run.name)
    return runs, base


def seed_groups(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Runs that share a name and were trained at distinct seeds (`seeds.training_seed`) are
    seeds of one arm: each is renamed `<name> (seed k)` and remembers the arm; returns
    arm -> its runs. Runs sharing a name without distinct recorded seeds are left as they are
    (and refused by the caller as two runs of one name)."""
    by_name: dict[str, list[RunData]] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    groups = {}
    for name, members in by_name.items():
        if len(members) < 2:
            continue
        found = [training_seed(r.results.config) for r in members]
        if None in found or len(set(found)) != len(found):
            continue
        for run, seed in zip(members, found, strict=True):
            run.arm, run.seed, run.name = name, seed, f"{name} (seed {seed})"
        groups[name] = members
    return groups


def check_versions(runs: Sequence[RunData], allow: bool) -> tuple[list[str], list[str]]:
    """Tasks whose version or prompt template differs between runs: refused unless `allow`."""
    flagged, warnings = [], []
    for task in all_tasks(runs):
        seen: dict[tuple[str, str], str] = {}
        for run in runs:
            result = run.results.tasks.get(task)
            if result is not None:
                seen.setdefault((result.version, result.prompt_template), run.name)
        if len(seen) < 2:
            continue
        (v1, _), (v2, _) = list(seen)[:2]
        first, second = list(seen.values())[:2]
        what = (
            f"version {v1!r} in {first} vs {v2!r} in {second}"
            if v1 != v2
            else (f"prompt template differs between {first} and {second}")
        )
        if not allow:
            raise UserError(
                f"task '{task}' was evaluated with different task versions or prompt templates "
                f"({what}) — "
                "evaluate every run with the same task version, or pass --allow-version-mismatch "
                "to report them flagged"
            )
        flagged.append(task)
        warnings.append(f"task `{task}` †: {what}; its comparisons are not like for like.")
    return flagged, warnings


def _mixed(runs: Sequence[RunData], field: str) -> str | None:
    """'value: run, run; value: run' when the runs' results differ in `field`, else None."""
    by_value: dict[str, list[str]] = {}
    for run in runs:
        by_value.setdefault(getattr(run.results, field), []).append(run.name)
    if len(by_value) < 2:
        return None
    return "; ".join(f"{value}: {', '.join(names)}" for value, names in by_value.items())


def check_answer_modes(runs: Sequence[RunData]) -> list[str]:
    """A warning when the runs were answered in different answer modes (else none)."""
    listed = _mixed(runs, "answer_mode")
    if listed is None:
        return []
    return [
        f"runs were answered in different answer modes ({listed}); choice mode scores one "
        "prefill over each item's answer set instead of greedy generation, so their "
        "differences are not like for like."
    ]


def check_protocols(runs: Sequence[RunData]) -> list[str]:
    """A warning when the runs fed their models under different input protocols (else none)."""
    listed = _mixed(runs, "protocol")
    if listed is None:
        return []
    return [
        f"runs were evaluated under different input protocols ({listed}); image geometry and "
        "prompts differ between protocols, so their differences are not like for like."
    ]


def _name(run: RunData | None) -> str | None:
    return None if run is None else run.name


def _triples(runs: Sequence[RunData]) -> list[tuple[str, Path, Results]]:
    return [(r.name, r.path, r.results) for r in runs]


def _intro(base: RunData | None, config: ReportConfig) -> str:
    pct = f"{config.confidence:.0%}"
    text = (
        "Rendered by `mbpo-bench report` from results files only. Values are "
        f"`value [{pct} bootstrap CI]`; `missing` = the run has no result for that task "
        "(never counted as 0); `—` = not measured in that run."
    )
    if base is not None:
        text += f" Baseline: **{base.name}**."
    return text


def _average_section(runs: Sequence[RunData], config: ReportConfig) -> list[str]:
    df, notes = average_table(runs, config)
    probe, metric = config.primary("")
    intro = (
        f"Each task's primary metric (default `{probe}/{metric}`) on a 0-100 scale "
        "(100 x value; 100 x (1 - value) where lower is better), averaged over the tasks every "
        "run has. Never a sum of raw scores on different scales."
    )
    return ["## Average over tasks (0-100)", "", intro, "", markdown_table(df), *notes, ""]


def _task_sections(
    runs: Sequence[RunData], flagged: Sequence[str], config: ReportConfig
) -> list[str]:
    parts = ["## Per-task metrics", ""]
    for task in all_tasks(runs):
        mark = " †" if task in flagged else ""
        parts += [f"### {task}{mark}", "", _task_line(runs, task), ""]
        if has_lmms_metrics(runs, task):
            parts += [LMMS_NOTE, ""]
        parts += [markdown_table(task_table(runs, task, config))]
    return parts


def _task_line(runs: Sequence[RunData], task: str) -> str:
    """'Task version 1; verifier yesno; prompt template `...`' (every distinct value listed)."""
    results = [r.results.tasks[task] for r in runs if task in r.results.tasks]
    versions = sorted({t.version for t in results})
    verifiers = sorted({t.verifier for t in results})
    templates = sorted({_short(t.prompt_template) for t in results})
    return (
        f"Task version {', '.join(versions)}; verifier {', '.join(verifiers)}; "
        f"prompt template {', '.join(templates)}."
    )


def _short(template: str) -> str:
    if "\n" in template or len(template) > 80 or "`" in template:
        return f"({len(template)} characters, crc32 {zlib.crc32(template.encode()):08x})"
    return f"`{template}`"


def _balance_sections(
    runs: Sequence[RunData], config: ReportConfig, baseline: str | None, out: Path
) -> list[str]:
    parts = [
        "## Modality balance",
        "",
        "Accuracy with the image and under each probe (blind = text-only prompt, mismatched = "
        "another item's image, noise = a noise image); visual reliance = acc(image) - acc(probe); "
        "IIG = mean Image Information Gain of the reference answers; predicted-yes ratio counts "
        "PREDICTED yes; counter-prior gap = acc(prior-consistent) - acc(counter-prior); "
        "multimodal gain = headline(image) - headline(blind) and multimodal leakage = "
        "max(0, headline(blind) - headline(backbone)), the backbone being the VLM's language "
        "model alone (`--backbone`), both on the task's headline metric, signed so + is better "
        "for gain (MMStar's MG / ML), paired bootstrap CIs.",
        "",
        *balance_figures(runs, baseline, out),
    ]
    for task in all_tasks(runs):
        df = balance_table(runs, task, config)
        if df is not None:
            parts += [f"### {task}", "", markdown_table(df)]
    return parts


def _difference_sections(
    runs: Sequence[RunData],
    base: RunData,
    flagged: Sequence[str],
    config: ReportConfig,
    out: Path,
) -> list[str]:
    pct = f"{config.confidence:.0%}"
    parts = [
        "## Differences against the baseline (paired)",
        "",
        f"run - {base.name} on the items both runs scored (joined on task, probe, doc_id), with "
        f"paired bootstrap {pct} CIs ({config.n_resamples} resamples, seed {config.seed}); "
        f"`{config.mark}` = the CI excludes zero. Baseline and run columns are means over the "
        "paired items.",
        "",
    ]
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        if run.arm is not None:
            groups.setdefault(run.arm, []).append(run)
    over_seeds = seed_rows(groups, base, config, flagged)
    parts += forest_figure_md(runs, base, flagged, config, out, over_seeds)
    if over_seeds:
        parts += [
            "Arms run at several seeds (runs sharing a --name, trained at distinct recorded "
            "seeds), over their seeds: the mean of the per-seed differences with a 95% t "
            "interval over seeds and Holm p over every row below, the per-seed values, and the "
            "per-item paired CI of the seed-averaged per-item differences (ignores seed "
            "variance; not the basis of a verdict). **Shown** = the interval over seeds "
            "excludes zero and Holm p < 0.05 (the quickstart findings' rule).",
            "",
            *seed_tables(over_seeds, base.name),
        ]
    averaged = averaged_tasks(runs, config)
    for run in runs:
        if run is base:
            continue
        df, notes = difference_table(run, base, config, flagged, averaged)
        parts += [f"### {run.name} vs {base.name}", ""]
        parts += [markdown_table(df, index=False)] if len(df) else []
        parts += [*notes, ""] if notes else []
    return parts


def _curve_section(curves: Sequence[Curves], out: Path) -> list[str]:
    header, rows = last_values(curves)
    parts = ["## Training curves", "", *curves_figure_md(curves, out)]
    if len(header) > 2:
        df = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows], columns=header[1:])
        df.index.name = header[0]
        parts += ["Last logged values:", "", markdown_table(df)]
    return parts
