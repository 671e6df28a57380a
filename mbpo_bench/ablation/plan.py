"""The ablation's plan: every run (mining, training, evaluation) with its resolved config.

Everything that can be wrong with the settings (unknown arm, bad override, a key a trainer does
not have) fails here, while building the plan, before anything trains. `--dry-run` prints this
plan and stops.

Layout under `--output` (relative paths stay as given, so the commands in the report run from
the same folder the ablation ran from):

    ablation.yaml  report.md  per_seed.csv
    base/eval/                                   the starting model, evaluated once
    mining/<source>-<iig|noiig>-seed<k>-<hash>/  pairs.parquet, shared by the arms that use it
    arms/<arm>/seed<k>/train/  arms/<arm>/seed<k>/eval/

Decisions:
- Mining runs once per (negative source, IIG filter, seed) and the arms that differ only in
  online data (and DPO, on the PGD pairs) train on the SAME pairs file: the comparison of
  online on/off is then not confounded by two draws of PGD's random start, and stage 1 runs 6
  times per seed instead of 13. The folder name carries a hash of the mining config, so arms
  whose mining settings differ (e.g. `dpo:mining.eps=...`) never share a file by accident.
- Each run's seed sets `runtime.seed` and `mining.seed`; the evaluation's probe seed stays fixed,
  so every arm and seed answers the same items with the same mismatched images.
- A starting checkpoint that is itself a LoRA run is merged into each arm's final weights
  (`save_merged=true`): an arm's adapter alone would be evaluated on the base without the
  starting adapter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mbpo_bench.ablation.config import AblationConfig, Arm, select_arms
from mbpo_bench.ablation.overrides import RoutedOverrides, override_key, route
from mbpo_bench.config import (
    RuntimeSection,
    dump_yaml,
    from_dict,
    load_config,
    merge_dicts,
    parse_overrides,
    to_dict,
    upgrade,
)
from mbpo_bench.errors import UserError


@dataclass
class Run:
    """One arm at one seed: where it trains and evaluates, and the configs it does so with."""

    arm: Arm
    seed: int
    train_dir: Path
    eval_dir: Path
    overrides: list[str]  # after --model/--data, as `mbpo-bench train` would apply them
    train_config: Any
    eval_config: Any
    mine_dir: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.arm.name} seed {self.seed}"


@dataclass
class Plan:
    config: AblationConfig
    output: Path
    start: tuple[str, str | None]  # (model folder or id, adapter folder) of --model
    arms: list[Arm]
    runs: list[Run]
    minings: dict[Path, Any] = field(default_factory=dict)  # folder -> MineConfig
    base_eval: Any = None  # EvalConfig of the starting model, or None
    eval_overrides: list[str] = field(default_factory=list)  # the user's eval: settings

    @property
    def eval_tasks(self) -> str:
        return self.config.eval_tasks or self.config.data


def config_classes() -> dict[str, type]:
    """method -> its config class, for every row of the trainer table (imports the trainer
    modules, and so torch)."""
    from mbpo_bench.trainers.table import TRAINERS

    return {name: spec.load()[0] for name, spec in TRAINERS.items()}


def eval_config(
    plan_cfg: AblationConfig, model: str, adapter: str | None, output: Path, user: list[str]
) -> Any:
    """The EvalConfig of one evaluation: the arm's weights on the eval tasks with the probes."""
    from mbpo_bench.evaluation.config import EvalConfig
    from mbpo_bench.evaluation.probes import parse_probes

    data = to_dict(EvalConfig())
    data.update(
        model=model,
        adapter=adapter,
        tasks=plan_cfg.eval_tasks or plan_cfg.data,
        output=str(output),
        limit=plan_cfg.eval_limit,
    )
    data["probes"]["names"] = list(parse_probes(plan_cfg.probes))
    given = upgrade(EvalConfig, parse_overrides(user), "eval override")
    return from_dict(EvalConfig, merge_dicts(data, given), where="eval")


def final_weights(train_dir: Path, config: Any, start_model: str) -> tuple[str, str | None]:
    """(model, adapter) that a finished training run will hold (as `resolve_start` reads it)."""
    final = train_dir / "final"
    if config.full_finetune or config.save_merged:
        return str(final / "model"), None
    return start_model, str(final / "adapter")


def mine_config(config: Any) -> Any:
    """The `mbpo-bench mine` config that mines what this DPO/MBPO config would mine itself."""
    from mbpo_bench.trainers.mining import MineConfig

    rt = config.runtime
    hybrid = getattr(config, "hybrid", None)
    return MineConfig(
        model=config.model, data=config.data, split=config.split, limit=config.limit,
        runtime=RuntimeSection(device=rt.device, dtype=rt.dtype, threads=rt.threads),
        trust_remote_code=config.trust_remote_code, mining=config.mining,
        twins_only=bool(hybrid is not None and hybrid.twins),
    )  # fmt: skip


def mining_dir(output: Path, arm: Arm, seed: int, config: Any) -> Path:
    digest = hashlib.sha256(dump_yaml(config).encode()).hexdigest()[:8]
    iig = "iig" if arm.iig_filter else "noiig"
    return output / "mining" / f"{arm.source}-{iig}-seed{seed}-{digest}"


def _run(
    cfg: AblationConfig, output: Path, arm: Arm, seed: int, routed: RoutedOverrides,
    classes: dict[str, type], start: tuple[str, str | None],
) -> tuple[Run, Any]:  # fmt: skip
    """The run of `arm` at `seed`, and its mining config (None for arms that do not mine)."""
    cls = classes[arm.method]
    overrides = [f"optim.steps={cfg.steps}", f"optim.batch_size={cfg.batch_size}"]
    overrides.append(f"runtime.seed={seed}")
    if arm.mines and not arm.miner:
        overrides.append(f"mining.seed={seed}")
    overrides += routed.for_method(arm.method, cls)
    overrides += arm.overrides
    if start[1] is not None:
        overrides.append("save_merged=true")
    given = [f"model={cfg.model}", f"data={cfg.data}"]
    miner: Any = None
    if arm.miner:  # an SFT control on mined pairs: mine as that MBPO arm would, copy its lr
        shared = [f"optim.steps={cfg.steps}", f"optim.batch_size={cfg.batch_size}",
                  f"runtime.seed={seed}", f"mining.seed={seed}"]  # fmt: skip
        shared += routed.for_method("mbpo", classes["mbpo"]) + list(arm.miner)
        miner = load_config(classes["mbpo"], None, [*given, *shared])
        o = miner.optim
        overrides += [f"optim.lr={o.lr}", f"optim.warmup_ratio={o.warmup_ratio}",
                      f"optim.schedule={o.schedule}"]  # fmt: skip
    if arm.lr is not None:  # the lr grid's value, or the lr chosen on dev (lr_from)
        overrides.append(f"optim.lr={arm.lr}")
    config: Any = load_config(cls, None, [*given, *overrides])
    mine, mine_dir = None, None
    if arm.mines:
        mine = mine_config(miner if miner is not None else config)
        mine_dir = mining_dir(output, arm, seed, mine)
        pairs = mine_dir / "pairs.parquet"
        if arm.method == "dpo":
            given = [f"model={cfg.model}", f"data={pairs}"]
        else:
            overrides.append(f"preference_data={pairs}")
        config = load_config(cls, None, [*given, *overrides])
    run_dir = output / "arms" / arm.name / f"seed{seed}"
    model, adapter = final_weights(run_dir / "train", config, start[0])
    evaluation = eval_config(cfg, model, adapter, run_dir / "eval", routed.eval)
    run = Run(arm, seed, run_dir / "train", run_dir / "eval", overrides, config, evaluation)
    run.mine_dir = mine_dir
    return run, mine


def with_lrs(arms: list[Arm], cfg: AblationConfig) -> list[Arm]:
    """The arms with their learning rates: each arm once per value of the grid `lrs` (named
    `<arm>@lr<value>`), or each arm that the dev ablation `lr_from` tuned at the lr chosen
    there (`lr_choice.json`), or unchanged."""
    from mbpo_bench.ablation.lr_choice import read_choice

    if cfg.lrs:
        return [replace(a, name=f"{a.name}@lr{lr:g}", lr=lr) for a in arms for lr in cfg.lrs]
    if cfg.lr_from:
        chosen = read_choice(Path(cfg.lr_from))
        return [replace(a, lr=chosen[a.name].lr) if a.name in chosen else a for a in arms]
    return arms


# What a control on mined pairs reads of its MBPO arm's config (`arm.miner`): how it mines and
# its optimizer (lr, schedule), so that it stays matched. Nothing else of `mbpo:` reaches it.
MINER_KEYS = ("mining.", "optim.")


def unused_overrides(by_method: dict[str, list[str]], arms: list[Arm]) -> list[str]:
    """The methods whose `<method>:` overrides no selected arm reads. A control that mines as its
    MBPO arm would reads that arm's `mbpo:mining.*` and `mbpo:optim.*`, so those count as used
    when such a control is selected even with no MBPO arm; `mbpo:hybrid.*` and the like do not."""
    used = {a.method for a in arms}
    borrows = any(a.miner for a in arms)
    unused = []
    for method, items in sorted(by_method.items()):
        if method in used:
            continue
        keys = [override_key(item) for item in items]
        if method == "mbpo" and borrows and all(k.startswith(MINER_KEYS) for k in keys):
            continue
        unused.append(method)
    return unused


def build_plan(cfg: AblationConfig, output: Path) -> Plan:
    """Resolve and check every config of the ablation (nothing runs)."""
    from mbpo_bench.trainers.policy import resolve_start

    if not cfg.model:
        raise UserError("no starting model — pass --model PATH (a checkpoint or a run folder)")
    if cfg.data.endswith(".parquet"):
        raise UserError(
            f"--data {cfg.data} is a pairs file — the ablation needs task names (it mines "
            "its own pairs per arm), e.g. --data embedded"
        )
    arms = with_lrs(select_arms(cfg.arms), cfg)
    classes = config_classes()
    routed = route(cfg.overrides, classes)
    unused = unused_overrides(routed.by_method, arms)
    if unused:
        raise UserError(
            f"overrides for {', '.join(unused)} but no selected arm trains with it — drop them "
            "or select such an arm with --arms"
        )
    start = resolve_start(cfg.model)
    plan = Plan(cfg, output, start, arms, runs=[], eval_overrides=routed.eval)
    if cfg.eval_base:
        plan.base_eval = eval_config(cfg, start[0], start[1], output / "base" / "eval", routed.eval)
    for seed in cfg.seeds:  # seed-major: a complete comparison at the first seed comes first
        for arm in arms:
            run, mine = _run(cfg, output, arm, seed, routed, classes, start)
            if run.mine_dir is not None:
                plan.minings.setdefault(run.mine_dir, mine)
            plan.runs.append(run)
    return plan


def _split(plan: Plan) -> str:
    configs = [r.eval_config for r in plan.runs] + ([plan.base_eval] if plan.base_eval else [])
    return ", ".join(sorted({str(c.split) for c in configs})) or "test"


def format_plan(plan: Plan) -> str:
    """The `--dry-run` text: every run with its resolved overrides."""
    cfg = plan.config
    n_evals = len(plan.runs) + (plan.base_eval is not None)
    lines = [
        f"ablation plan -> {plan.output}",
        f"  {len(plan.arms)} arms x {len(cfg.seeds)} seeds (seeds {','.join(map(str, cfg.seeds))})"
        f" = {len(plan.runs)} training runs, {len(plan.minings)} mining runs, "
        f"{n_evals} evaluations",
        f"  budget per arm: {cfg.steps} steps x batch {cfg.batch_size}; start: {cfg.model}; "
        f"training tasks: {cfg.data}",
        f"  evaluation: {plan.eval_tasks} ({_split(plan)} split), probes {','.join(cfg.probes)}, "
        f"limit {cfg.eval_limit if cfg.eval_limit is not None else 'none'}"
        + (f"; {' '.join(plan.eval_overrides)}" if plan.eval_overrides else ""),
    ]
    if plan.base_eval is not None:
        lines.append(f"base  eval -> {plan.base_eval.output}")
    for run in plan.runs:
        lines.append(f"{run.arm.name}  seed {run.seed}  [{run.arm.method}] -> {run.train_dir}")
        if run.mine_dir is not None:
            lines.append(f"    pairs: {run.mine_dir / 'pairs.parquet'}")
        lines.append(f"    overrides: {' '.join(run.overrides)}")
    return "\n".join(lines) + "\n"
