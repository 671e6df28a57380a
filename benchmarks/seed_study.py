"""Seed study of `mbpo-bench quickstart`: is "MBPO vs base / vs control" stable over seeds, and
does a longer-trained base change it?

    python benchmarks/seed_study.py RUNS... --output seed_study.md [--runs-command TEXT]

RUNS are quickstart output folders (each holds `quickstart_config.yaml` and `eval_base/`,
`eval_mbpo/`, `eval_control/`) or folders above them (searched recursively). One table row per
(base SFT steps, seed), then per base-steps group the mean and spread over seeds and how many
seeds' CIs exclude zero in each direction.

Every cell is computed by the quickstart report's own functions (`pooled_mean`, `pooled_diff`:
pooled over the three embedded tasks, image probe, paired 95% bootstrap CI) with the bootstrap
seeds its `findings()` gives those rows, so a row of seed 0 shows exactly the numbers of that
run's report (tests/test_benchmarks_seed_study.py checks this against `findings()`). A run
folder whose evaluations are missing (timed out, failed) is listed with the reason and left out
of the summary rather than stopping the study.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mbpo_bench.errors import UserError
from mbpo_bench.quickstart_report_v2 import Diff, pooled_diff, pooled_mean
from mbpo_bench.reporting import meta_is
from mbpo_bench.reporting.loading import load_run

CONFIG = "quickstart_config.yaml"
COUNTER, CONSISTENT = meta_is(prior="counter"), meta_is(prior="consistent")

# (column, metric, subset key, bootstrap seed vs the base, seed vs the control): the seeds are
# those `findings()` uses for the same rows (10 * finding number + row index), so each cell
# equals the run's own report.
COMPARISONS: tuple[tuple[str, str, str, int, int], ...] = (
    ("counter-prior acc", "accuracy", "counter", 20, 60),
    ("visual reliance (image - blind)", "visual_reliance_blind", "all", 31, 71),
    ("prior-consistent acc", "accuracy", "consistent", 53, 93),
)
SUBSETS = {"counter": COUNTER, "consistent": CONSISTENT, "all": None}
OTHERS = ("base", "control")
BASE_ACC_SEEDS = {"consistent": 1, "counter": 2}  # findings() finding 1


@dataclass
class StudyRow:
    """One quickstart run: its key, the base's accuracies and MBPO's paired differences."""

    folder: Path
    base_steps: int
    seed: int
    base_acc: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    diffs: dict[tuple[str, str], Diff] = field(default_factory=dict)  # (other, column) -> Diff
    error: str | None = None


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Quickstart output folders at or under `paths` (sorted, each once)."""
    found: set[Path] = set()
    for path in paths:
        if not path.is_dir():
            raise UserError(f"{path} is not a folder — pass quickstart output folders")
        found.update(p.parent for p in path.rglob(CONFIG))
        if (path / CONFIG).is_file():
            found.add(path)
    if not found:
        raise UserError(
            f"no {CONFIG} under {', '.join(map(str, paths))} — pass the folders that "
            "`mbpo-bench quickstart --output DIR` wrote"
        )
    return sorted(found)


def read_config(folder: Path) -> dict[str, Any]:
    data = yaml.safe_load((folder / CONFIG).read_text())
    if not isinstance(data, dict):
        raise UserError(f"{folder / CONFIG} is not a mapping — rerun that quickstart")
    return data


def study_row(folder: Path) -> StudyRow:
    """The row of one run; `error` says why it has no numbers (e.g. an evaluation missing)."""
    config = read_config(folder)
    row = StudyRow(folder, int(config["base"]["optim"]["steps"]), int(config["seed"]))
    try:
        base, mbpo, control = (
            load_run(folder / f"eval_{name}", name) for name in ("base", "mbpo", "control")
        )
        for group, seed in BASE_ACC_SEEDS.items():
            value, low, high, _ = pooled_mean(base, SUBSETS[group], seed)
            row.base_acc[group] = (value, low, high)
        for other_name, other in zip(OTHERS, (base, control), strict=True):
            for column, metric, subset, seed_base, seed_control in COMPARISONS:
                seed = seed_base if other_name == "base" else seed_control
                row.diffs[(other_name, column)] = pooled_diff(
                    mbpo, other, metric, SUBSETS[subset], seed
                )
    except UserError as exc:
        row.error = str(exc)
    return row


def fmt_diff(d: Diff) -> str:
    return f"{d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"


def fmt_acc(acc: tuple[float, float, float]) -> str:
    return f"{acc[0]:.3f} [{acc[1]:.3f}, {acc[2]:.3f}]"


def columns() -> list[tuple[str, str]]:
    """(other, column) in table order: all differences vs the base, then vs the control."""
    return [(other, c[0]) for other in OTHERS for c in COMPARISONS]


def rows_table(rows: Sequence[StudyRow]) -> list[str]:
    head = ["base steps", "seed", "base acc consistent", "base acc counter"]
    head += [f"MBPO - {other}: {column}" for other, column in columns()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row.base_steps), str(row.seed)]
        if row.error is not None:
            reason = row.error.replace("|", "/")
            cells += [f"missing: {reason}"] + [""] * (len(head) - 3)
        else:
            cells += [fmt_acc(row.base_acc["consistent"]), fmt_acc(row.base_acc["counter"])]
            cells += [fmt_diff(row.diffs[key]) for key in columns()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _spread(values: Sequence[float], sign: str = "+") -> str:
    """'mean | SD | min | max' (SD '—' for one seed); sign '' for accuracies, '+' for diffs."""
    sd = f"{statistics.stdev(values):.3f}" if len(values) > 1 else "—"
    mean, low, high = statistics.fmean(values), min(values), max(values)
    return f"{mean:{sign}.3f} | {sd} | {low:{sign}.3f} | {high:{sign}.3f}"


def summary_table(rows: Sequence[StudyRow]) -> list[str]:
    """Per base-steps group: mean, SD, min, max over seeds; seeds whose CI is > 0 / < 0."""
    lines = [
        "| base steps | quantity | seeds | mean | SD | min | max | CI > 0 | CI < 0 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    done = [r for r in rows if r.error is None]
    for steps in sorted({r.base_steps for r in done}):
        group = [r for r in done if r.base_steps == steps]
        n = len(group)
        for acc in ("consistent", "counter"):
            values = [r.base_acc[acc][0] for r in group]
            lines.append(f"| {steps} | base acc {acc} | {n} | {_spread(values, '')} | — | — |")
        for key in columns():
            diffs = [r.diffs[key] for r in group]
            above = sum(d.low > 0 for d in diffs)
            below = sum(d.high < 0 for d in diffs)
            label = f"MBPO - {key[0]}: {key[1]}"
            spread = _spread([d.diff for d in diffs])
            lines.append(f"| {steps} | {label} | {n} | {spread} | {above} | {below} |")
    return lines


def _settings(config: dict[str, Any]) -> str:
    control = config.get("control_steps")
    control_text = "time-matched" if control is None else str(control)
    return (
        f"size={config.get('size')}, control steps {control_text}, "
        f"eval_limit={config.get('eval_limit')}, probes {','.join(config.get('probes') or [])}"
    )


def render(rows: Sequence[StudyRow], command: str, runs_command: str | None) -> str:
    done = [r for r in rows if r.error is None]
    n_items = {key: done[0].diffs[key].n for key in columns()} if done else {}
    configs = {r.folder: read_config(r.folder) for r in rows}
    settings = sorted({_settings(c) for c in configs.values()})
    lines = [
        "# Quickstart seed study: MBPO vs the base and vs the control over seeds",
        "",
        f"Made by: `{command}`" + (f"; runs made by `{runs_command}`." if runs_command else "."),
        f"Runs: {len(rows)} ({len(done)} complete); settings: {'; '.join(settings)}.",
        "",
        "Each cell is the quickstart report's own computation: pooled over the three embedded",
        "tasks, image probe, paired over the same items, 95% bootstrap CI (2000 resamples, the",
        "seeds of the report's findings): the same computation as that report, not its numbers "
        "(a base trained on another machine differs; benchmark v2 only).",
        "Paired items (first complete run): "
        + ", ".join(f"{k[1]} n={v}" for k, v in n_items.items() if k[0] == "base")
        + " (the same vs the control).",
        "",
        "## Per run",
        "",
        *rows_table(rows),
        "",
        "## Per base length, over seeds",
        "",
        "SD is the sample standard deviation of the point estimates over seeds; CI > 0 / CI < 0",
        "count the seeds whose own 95% CI lies entirely above / below zero.",
        "",
        *summary_table(rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("runs", nargs="+", type=Path, help="quickstart output folders or parents")
    parser.add_argument("--output", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--runs-command", default=None, help="how the runs were made (stated)")
    args = parser.parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "benchmarks/seed_study.py", *shown])
    try:
        rows = sorted(
            (study_row(f) for f in find_runs(args.runs)), key=lambda r: (r.base_steps, r.seed)
        )
        text = render(rows, command, args.runs_command)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(rows)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
