"""`mbpo-bench ablate`: method.md's factorial ablation plus the baselines, in one command.

- `config`: `AblationConfig` (saved as `<output>/ablation.yaml`) and the arm catalogue `ARMS`;
- `overrides`: where each `key=value` setting goes (every trainer that has the key, one method
  with `METHOD:`, the evaluations with `eval:`);
- `plan`: every mining, training and evaluation run with its resolved config (`--dry-run`);
- `driver`: `run_ablation`, the entry point: plan, run (sequential or `--jobs`), report;
- `execute`: runs the plan, resumably, and writes `report.md` and `per_seed.csv`;
- `jobs`: `--jobs N`, several groups of runs at once in spawned worker processes;
- `aggregate`: per-seed metrics from `results.json` and their mean and spread per arm;
- `report`: the markdown; `commands`: the standalone command of every run, from its config.

Importing this package is light; trainers and torch load when a plan is built.
"""

from mbpo_bench.ablation.config import ARMS, AblationConfig, Arm, select_arms
from mbpo_bench.ablation.driver import run_ablation
from mbpo_bench.ablation.execute import AblationResult
from mbpo_bench.ablation.plan import Plan, Run, build_plan, format_plan

__all__ = [
    "ARMS",
    "AblationConfig",
    "AblationResult",
    "Arm",
    "Plan",
    "Run",
    "build_plan",
    "format_plan",
    "run_ablation",
    "select_arms",
]
