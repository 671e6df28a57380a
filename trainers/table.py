"""The trainer table: every training method, one row each, the single place to register one.

`mbpo-bench train METHOD` (its argument help and its unknown-name error), `ablate` (which methods
its arms may use and which config keys an override may name) and tests read this table; nothing
else lists method names. A row names its recipe module, the module's typed config dataclass and
its `run(config, output, *, resume=False, overwrite=False) -> LoopResult` function, by dotted
name: the table stays importable without torch (the CLI's start-up), and `load` imports the
recipe only when it runs. Adding a method = its module + one row here.

Each recipe's step builder is still inside its `run` for `sft` and `dpo` (only `grpo` exposes
`make_step_fn`); the table gains a step column once every recipe exposes one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mbpo_bench.errors import UserError, did_you_mean


@dataclass(frozen=True)
class TrainerSpec:
    module: str  # the recipe module
    config: str  # its config dataclass
    run: str  # its run function
    summary: str  # one line, for help texts

    def load(self) -> tuple[type, Callable[..., Any]]:
        """(config class, run function); imports the recipe (and so torch)."""
        module = importlib.import_module(self.module)
        return getattr(module, self.config), getattr(module, self.run)


TRAINERS: dict[str, TrainerSpec] = {
    "sft": TrainerSpec("mbpo_bench.trainers.sft", "SFTConfig", "run_sft", "supervised fine-tuning"),
    "dpo": TrainerSpec(
        "mbpo_bench.trainers.dpo", "DPOConfig", "run_dpo", "DPO on preference pairs"
    ),
    "grpo": TrainerSpec(
        "mbpo_bench.trainers.grpo", "GRPOConfig", "run_grpo", "GRPO with verifier rewards"
    ),
    "mbpo": TrainerSpec(
        "mbpo_bench.trainers.mbpo", "MBPOConfig", "run_mbpo", "mining + hybrid GRPO (MBPO)"
    ),
}


def get_trainer(method: str) -> TrainerSpec:
    """The row of `method`; an unknown name is one line with the closest names."""
    if method not in TRAINERS:
        raise UserError(
            f"unknown training method '{method}'{did_you_mean(method, TRAINERS)} — "
            f"choose one of: {', '.join(TRAINERS)}"
        )
    return TRAINERS[method]


def load_trainer(method: str) -> tuple[type, Callable[..., Any]]:
    """(config class, run function) of `method`."""
    return get_trainer(method).load()
