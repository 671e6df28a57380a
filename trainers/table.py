"""The trainer table: every training method, one row each, the single place to register one.

`mbpo-bench train METHOD` (its argument help and its unknown-name error), `ablate` (which methods
its arms may use and which config keys an override may name) and tests read this table; nothing
else lists method names. A row names its recipe module, by dotted name: the table stays
importable without torch (the CLI's start-up), and `load` imports the recipe only when it runs.
Every recipe exposes the same three names (`trainers/recipe.py` holds the setup they share):
`Config` (its typed config dataclass), `make_step(config, policy, data...) -> (step, position)`
and `run(config, output, *, resume=False, overwrite=False) -> LoopResult`. Adding a method = its
module + one row here.
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
    step: str = "make_step"  # its step builder

    def load(self) -> tuple[type, Callable[..., Any]]:
        """(config class, run function); imports the recipe (and so torch)."""
        module = importlib.import_module(self.module)
        return getattr(module, self.config), getattr(module, self.run)

    def step_builder(self) -> Callable[..., Any]:
        """The recipe's `make_step`; imports the recipe (and so torch)."""
        return getattr(importlib.import_module(self.module), self.step)  # type: ignore[no-any-return]


TRAINERS: dict[str, TrainerSpec] = {
    "sft": TrainerSpec("mbpo_bench.trainers.sft", "Config", "run", "supervised fine-tuning"),
    "dpo": TrainerSpec("mbpo_bench.trainers.dpo", "Config", "run", "DPO on preference pairs"),
    "grpo": TrainerSpec("mbpo_bench.trainers.grpo", "Config", "run", "GRPO with verifier rewards"),
    "mbpo": TrainerSpec("mbpo_bench.trainers.mbpo", "Config", "run", "mining + hybrid GRPO (MBPO)"),
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
