"""The ablation's markdown report, rendered from the run folders' files only.

After the problems and the matched comparisons, the figures (`figures.py`: modality balance
per task group, the forest plot of every arm vs the base and its matched controls with its table
of verdicts, one curves grid); then one table per evaluation task (and one averaged over tasks):
a row per arm, a cell per quantity as `mean ± std [min, max]` over seeds; the starting model's
row comes first, as the reference.
Then the mined pairs (per source, filter and seed), what did not finish, and the exact
commands and configs of every run. Missing results are shown as "missing", never as 0; a
quantity that a task does not define is "n/a". Arms trained "offline only" on a pairs file that
mining left empty are flagged: with no pairs, MBPO's batches are all online, i.e. plain GRPO.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.ablation.aggregate import (
    AVERAGE,
    BASE,
    FACTORS,
    QUANTITIES,
    Measurements,
    level_name,
    main_effects,
    summarise,
)
from mbpo_bench.ablation.commands import eval_command, mine_command, train_command
from mbpo_bench.ablation.figures import figures_section
from mbpo_bench.ablation.lr_choice import choice_lines, choose
from mbpo_bench.errors import UserError
from mbpo_bench.reporting.format import MISSING, UNDEFINED, fmt_value, markdown_table
from mbpo_bench.reporting.loading import read_env, relative

if TYPE_CHECKING:
    import pandas as pd

    from mbpo_bench.ablation.plan import Plan


def fmt_spread(stats: Mapping[str, Any] | None, digits: int = 3) -> str:
    """'0.812 ± 0.013 [0.800, 0.830]'; one seed: the value alone; no value: n/a."""
    if stats is None or not stats.get("n"):
        return UNDEFINED
    mean = fmt_value(float(stats["mean"]), digits)
    if int(stats["n"]) < 2:
        return mean
    std = fmt_value(float(stats["std"]), digits)
    low, high = fmt_value(float(stats["min"]), digits), fmt_value(float(stats["max"]), digits)
    return f"{mean} ± {std} [{low}, {high}]"


def arm_table(
    plan: Plan, summary: pd.DataFrame, task: str, evaluated: Mapping[str, int]
) -> pd.DataFrame:
    """Rows: base, then arms; columns: the factors, the six quantities, seeds evaluated."""
    import pandas as pd

    names = ([BASE] if plan.base_eval is not None else []) + [a.name for a in plan.arms]
    factors = {a.name: a.factors() for a in plan.arms}
    cells: dict[Any, dict[Any, Any]] = summary.to_dict("index")
    rows = {}
    for name in names:
        row = dict(factors.get(name, {"negatives": "—", "IIG filter": "—", "online": "—"}))
        for q in QUANTITIES:
            stats = cells.get((task, name, q.key))
            row[q.label] = MISSING if not evaluated.get(name) else fmt_spread(stats)
        total = 1 if name == BASE else len(plan.config.seeds)
        row["seeds"] = f"{evaluated.get(name, 0)}/{total}"
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "arm"
    return df


def _intro(plan: Plan) -> list[str]:
    cfg = plan.config
    limit = f"first {cfg.eval_limit}" if cfg.eval_limit is not None else "all"
    split = eval_split(plan)
    return [
        "# Ablation: MBPO's factors and the baselines",
        "",
        f"- start: `{cfg.model}`; training tasks: `{cfg.data}` (train split)",
        f"- arms: {len(plan.arms)}; seeds: {', '.join(map(str, cfg.seeds))}; budget per arm: "
        f"{cfg.steps} optimizer steps x batch {cfg.batch_size} (SFT samples, DPO pairs, "
        "GRPO/MBPO prompt groups), each method's own learning rate unless overridden. The "
        "matched controls (`sft-mined`, `grpo-mined`, `dpo-mined`, `dpo-mdpo`, `sft-balanced`; "
        "`sft-twins` for `mbpo-twins`) train on the items / pairs their MBPO arm mined, with "
        "its optimizer steps, samples per step (batch) and lr schedule (warm-up, decay); their "
        "lr is MBPO's unless chosen on dev (section below)",
        f"- evaluation: `{plan.eval_tasks}` (**{split} split**: `test` for reports, `dev` for "
        f"choosing settings, `eval:split=dev`; {limit} items per task), probes "
        f"{', '.join(cfg.probes)}; the same items and mismatched images for every run",
        "- cells: mean ± sample std [min, max] over seeds (one seed: the value); visual reliance "
        "= acc(image) − acc(probe) on the same items; `n/a`: not defined for the task; "
        f"`{MISSING}`: no finished evaluation",
        "",
    ]


def eval_split(plan: Plan) -> str:
    """The split every evaluation of the plan reads (one for all: `eval:split=...`)."""
    configs = [r.eval_config for r in plan.runs] + ([plan.base_eval] if plan.base_eval else [])
    splits = {str(getattr(c, "split", "test")) for c in configs}
    return "test" if splits == {"eval"} else ", ".join(sorted(splits)) or "test"


def _task_sections(plan: Plan, summary: pd.DataFrame, measured: Measurements) -> list[str]:
    tasks, evaluated, averaged = measured.tasks, measured.evaluated, measured.averaged
    lines: list[str] = []
    if len(tasks) > 1 and averaged:
        lines += ["## Average over tasks", ""]
        for q in QUANTITIES:
            if q.key in averaged:
                lines.append(f"- {q.label}: over {', '.join(averaged[q.key])}")
        lines += ["", markdown_table(arm_table(plan, summary, AVERAGE, evaluated))]
    for task in tasks:
        lines += [f"## {task}", "", markdown_table(arm_table(plan, summary, task, evaluated))]
    return lines


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def mining_section(plan: Plan, report_dir: Path) -> tuple[list[str], set[Path]]:
    """The mined-pairs table, and the mining folders that kept no pair."""
    import pandas as pd

    if not plan.minings:
        return [], set()
    rows, empty = {}, set()
    for folder, config in plan.minings.items():
        stats = _read_json(folder / "pairs.stats.json")
        cells = {
            "negatives": config.mining.source,
            "IIG filter": "on" if config.mining.iig_filter else "off",
            "seed": str(config.mining.seed),
        }
        cells["twins only"] = "yes" if getattr(config, "twins_only", False) else "no"
        for key in ("candidates", "selected", "attacked", "clean_right", "clean_wrong",
                    "flipped", "kept"):  # fmt: skip
            cells[key] = str(stats.get(key, MISSING)) if stats else MISSING
        cells["flip rate"] = fmt_value(stats.get("flip_rate"), 3) if stats else MISSING
        if stats is not None and stats.get("kept") == 0:
            empty.add(folder)
        rows[relative(folder, report_dir)] = cells
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "mining run"
    head = [
        "## Mined pairs",
        "",
        "A hard negative needs the clean-image answer right (`clean_right`) and the attacked "
        "answer wrong (`flipped`); items already wrong on the clean image (`clean_wrong`) are "
        "reported apart and never kept. flip rate = flipped / clean_right; `kept` also passes "
        "`mining.keep`. One GRPO update per batch: the PPO clip is inactive (ratio 1).",
        "",
    ]
    return [*head, markdown_table(df)], empty


def _problems(plan: Plan, failures: Mapping[str, str], empty: set[Path]) -> list[str]:
    lines = []
    for label, message in failures.items():
        lines.append(f"- **{label} did not finish**: {message}")
    for run in plan.runs:
        if run.mine_dir in empty and run.arm.online is False:
            lines.append(
                f"- **{run.label}**: mining kept no pair, so this offline-only arm trained on "
                "online groups only (plain GRPO)"
            )
        elif run.mine_dir in empty and run.arm.method == "dpo":
            lines.append(f"- **{run.label}**: mining kept no pair; DPO had nothing to train on")
    return ["## Problems", "", *lines, ""] if lines else []


def _command_name(argv: list[str]) -> list[str]:
    """The installed script's path (`/venv/bin/mbpo-bench`) shown as `mbpo-bench`."""
    if argv and Path(argv[0]).name == "mbpo-bench":
        return ["mbpo-bench", *argv[1:]]
    return argv


def commands_section(plan: Plan, argv: list[str], report_dir: Path) -> list[str]:
    out = plan.output
    lines = [
        "## Commands and configs",
        "",
        "Run from the folder the ablation ran in (paths are as given there). This ablation:",
        "",
        "```",
        shlex.join(_command_name(argv)),
        "```",
        "",
        "Regenerate it (or resume it) from its saved settings:",
        "",
        "```",
        shlex.join(
            ["mbpo-bench", "ablate", "--config", str(out / "ablation.yaml"), "--output", str(out)]
        ),
        "```",
        "",
        "<details><summary>Every run as a standalone command (mine, train, eval)</summary>",
        "",
        "```",
    ]
    if plan.base_eval is not None:
        lines += [f"# {BASE}", eval_command(plan.base_eval)]
    for folder, config in plan.minings.items():
        lines += [f"# mining {folder.name}", mine_command(config, str(folder))]
    for run in plan.runs:
        lines += [
            f"# {run.label}",
            train_command(run.arm.method, run.train_config, str(run.train_dir)),
            eval_command(run.eval_config),
        ]
    lines += ["```", "", "</details>", ""]
    lines += [
        "Resolved configs (`config.yaml`) and environments (`env.json`) are saved in each run "
        f"folder: `{relative(out / 'arms', report_dir)}/<arm>/seed<k>/{{train,eval}}/`, "
        f"`{relative(out / 'mining', report_dir)}/`.",
        "",
    ]
    return lines


def environment_section(plan: Plan) -> list[str]:
    env = next((e for r in plan.runs if (e := read_env(r.train_dir)) is not None), None)
    if env is None:
        return []
    packages = env.get("packages") or {}
    shown = ", ".join(
        f"{k} {v}"
        for k, v in packages.items()
        if v and k in ("mbpo-bench", "torch", "transformers", "peft")
    )
    device = (env.get("device") or {}).get("name", "unknown")
    return [
        "## Environment",
        "",
        f"- python {env.get('python')}; {shown}",
        f"- device: {device}; git {env.get('git_sha') or 'unknown'}",
        "",
    ]


def effects_section(plan: Plan, measured: Measurements) -> list[str]:
    """Main effects of the three factors (only when all 12 factorial arms ran)."""
    import pandas as pd

    task = measured.headline_task
    effects = main_effects(measured.per_seed, task, plan.arms) if task else None
    if effects is None or effects.empty:
        return []
    cells: dict[Any, dict[Any, Any]] = effects.to_dict("index")
    rows = {}
    for label, _, levels in FACTORS:
        for level in levels:
            name = f"{label}: {level_name(level)}"
            rows[name] = {q.label: fmt_spread(cells.get((label, level_name(level), q.key)))
                          for q in QUANTITIES}  # fmt: skip
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "factor level"
    where = "averaged over tasks" if task == AVERAGE else f"on {task}"
    return [
        "## Main effects of the factorial (MBPO arms)",
        "",
        f"Each level's value is the mean over the 12 factorial arms at that level ({where}), "
        "i.e. averaged over the other two factors, per seed; cells give its mean ± std "
        "[min, max] over the seeds at which all 12 arms finished.",
        "",
        markdown_table(df),
    ]


# ablation arm -> the quickstart's name for it, for the matched findings over seeds
MATCHED_ARMS = {"mbpo-pgd-iig-online": "mbpo", "sft-mined": "sft_mined",
                "grpo-mined": "grpo_mined", "dpo-mined": "dpo", "dpo-mdpo": "dpo_mdpo",
                "sft-balanced": "sft_balanced", "mbpo-twins": "mbpo_twins",
                "sft-twins": "sft_twins"}  # fmt: skip


def matched_section(plan: Plan) -> list[str]:
    """MBPO and the twin variant against their matched SFT controls and the base, over seeds
    (the quickstart's findings: t interval over seeds, Holm, per-item paired CI beside), on the
    twin pairs of the embedded benchmark v3. Empty when those runs or pairs are absent."""
    from mbpo_bench.quickstart_report import (
        all_pairs,
        compute_findings,
        finding_line,
        findings_figure,
        floors,
    )
    from mbpo_bench.reporting.loading import load_run

    if plan.base_eval is None:
        return []
    try:
        base = all_pairs(load_run(Path(plan.base_eval.output), "base"))
    except UserError:
        return []
    seeds: dict[int, dict[str, dict[str, Any]]] = {}
    for run in plan.runs:
        name = MATCHED_ARMS.get(run.arm.name)
        if name is None:
            continue
        try:
            table = all_pairs(load_run(run.eval_dir, name))
        except UserError:
            continue  # not evaluated: listed under Problems
        seeds.setdefault(run.seed, {"base": base})[name] = table
    order = ["base", *MATCHED_ARMS.values()]
    present = {n for tables in seeds.values() for n in tables}
    names = [n for n in order if n in present]
    complete = {k: v for k, v in seeds.items() if set(v) == set(names)}
    if len(names) < 2 or not complete:
        return []
    tables = [t for s in complete.values() for t in s.values()]
    floor = floors(tables)
    common = set.intersection(*(set(t) for t in tables))
    keep = {k for k in common if tables[0][k]["cell"] not in floor}
    findings = compute_findings(complete, keep, names)
    labels = ", ".join(f"`{a}` = {q}" for a, q in MATCHED_ARMS.items() if q in names)
    return [
        "## Matched comparisons over seeds (twin pairs)",
        "",
        f"Arms: {labels}. Seeds with every one of them evaluated: "
        f"{', '.join(map(str, complete))}. Pooled over the twin pairs of the embedded tasks "
        f"minus floor cells ({', '.join(floor) or 'none'}); each line: across-seed mean with a "
        "t interval over seeds, Holm-adjusted p over this list, per-seed values, and the "
        "per-item paired CI of the seed mean. **Shown** = the across-seed interval excludes "
        "zero in the claimed direction and Holm p < 0.05.",
        "",
        *(finding_line(i + 1, f, len(complete)) for i, f in enumerate(findings)),
        "",
        *findings_figure(findings, len(complete), plan.output / "report_findings.png"),
    ]


def render(
    plan: Plan, measured: Measurements, failures: Mapping[str, str], argv: list[str],
    report_dir: Path,
) -> str:  # fmt: skip
    """The whole report as markdown."""
    summary = summarise(measured.per_seed)
    warnings = [
        f"task {task} was evaluated at different versions ({', '.join(sorted(v))}) — rerun "
        "in a fresh --output to compare like with like"
        for task, v in measured.versions.items()
        if len(v) > 1
    ]
    mining, empty = mining_section(plan, report_dir)
    lines = _intro(plan)
    lines += [f"> warning: {w}" for w in warnings] + ([""] if warnings else [])
    lines += _problems(plan, failures, empty)
    split = eval_split(plan)
    lines += choice_lines(plan, choose(plan, measured.per_seed, split), split)
    lines += matched_section(plan)
    lines += figures_section(plan, measured, report_dir)
    lines += _task_sections(plan, summary, measured)
    lines += effects_section(plan, measured)
    lines += mining
    lines += commands_section(plan, argv, report_dir)
    lines += environment_section(plan)
    return "\n".join(lines).rstrip("\n") + "\n"
