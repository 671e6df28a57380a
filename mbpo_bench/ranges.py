"""Allowed ranges of the numeric config fields, checked where a config is parsed.

Why one table instead of a `__post_init__` per class: the check runs in `config.from_dict`, the
one place every `--set`, `key=value`, `--config FILE` and typed CLI option passes through, so a
negative `--limit`, a zero batch size or a learning rate of `nan` is refused in one line before
any run folder exists, whatever the command. Classes are named by `__name__` (the config
modules import torch-free, but some import slowly); `tests/test_first_hour_inputs.py` checks
that every entry names a real field, so a renamed field cannot leave a dead rule behind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bound:
    """low <= value (< when low_open) and value <= high (< when high_open); None: unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    option: str | None = None  # the CLI option that sets the field, named in the message

    def ok(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def text(self) -> str:
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        assert self.high is not None
        return f"{'<' if self.high_open else '<='} {_num(self.high)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# no model here has a context this long; a larger value is a typo that would generate for hours
MAX_TOKENS = 65536
TOKENS = Bound(low=1, high=MAX_TOKENS)
POSITIVE = Bound(low=0, low_open=True)
AT_LEAST_1 = Bound(low=1)
NON_NEGATIVE = Bound(low=0)
FRACTION = Bound(low=0, high=1)  # [0, 1]
OPEN_FRACTION = Bound(low=0, high=1, low_open=True)  # (0, 1]
PROBABILITY_LT_1 = Bound(low=0, high=1, high_open=True)  # [0, 1)
CONFIDENCE = Bound(low=0, high=1, low_open=True, high_open=True)  # (0, 1)

RANGES: dict[str, dict[str, Bound]] = {
    "EvalConfig": {
        "limit": Bound(low=1, option="--limit"),
        "batch_size": Bound(low=1, option="--batch-size"),
        "max_new_tokens": Bound(low=1, high=MAX_TOKENS, option="--max-new-tokens"),
    },
    "ProbeConfig": {
        "adversarial_eps": NON_NEGATIVE,
        "adversarial_alpha": POSITIVE,
        "adversarial_steps": AT_LEAST_1,
    },
    "BootstrapConfig": {
        "n_resamples": AT_LEAST_1,
        "confidence": CONFIDENCE,
        "task_metric_resamples": AT_LEAST_1,
    },
    "ReportConfig": {"n_resamples": AT_LEAST_1, "confidence": CONFIDENCE, "digits": NON_NEGATIVE},
    "OptimConfig": {
        "lr": POSITIVE,
        "steps": AT_LEAST_1,
        "batch_size": AT_LEAST_1,
        "grad_accum": AT_LEAST_1,
        "warmup_ratio": FRACTION,
        "weight_decay": NON_NEGATIVE,
        "adam_beta1": PROBABILITY_LT_1,
        "adam_beta2": PROBABILITY_LT_1,
        "adam_eps": POSITIVE,
        "max_grad_norm": POSITIVE,
    },
    "RuntimeConfig": {
        "threads": AT_LEAST_1,
        "save_every": AT_LEAST_1,
        "keep_checkpoints": AT_LEAST_1,
    },
    "LoraSettings": {"r": AT_LEAST_1, "alpha": POSITIVE, "dropout": PROBABILITY_LT_1},
    "SFTConfig": {"limit": AT_LEAST_1, "blind_fraction": FRACTION},
    "DPOConfig": {
        "limit": AT_LEAST_1,
        "beta": POSITIVE,
        "mdpo_weight": NON_NEGATIVE,
        "mdpo_crop_keep": OPEN_FRACTION,
        "mdpo_noise_std": NON_NEGATIVE,
        "anchor_weight": NON_NEGATIVE,
    },
    "GRPOSettings": {
        "num_generations": Bound(low=2),
        "temperature": POSITIVE,
        "top_p": OPEN_FRACTION,
        "max_new_tokens": TOKENS,
        "generation_batch_size": AT_LEAST_1,
        "beta": NON_NEGATIVE,
        "eps_low": NON_NEGATIVE,
        "eps_high": NON_NEGATIVE,
        "adv_eps": POSITIVE,
        "oversample": AT_LEAST_1,
        "reward_max_words": AT_LEAST_1,
        "max_length": AT_LEAST_1,
    },
    "GRPOConfig": {"limit": AT_LEAST_1},
    "MBPOConfig": {"limit": AT_LEAST_1},
    "HybridSettings": {"offline_ratio": FRACTION, "offline_extra_samples": NON_NEGATIVE},
    "MiningConfig": {
        "iig_top_fraction": OPEN_FRACTION,
        "eps": NON_NEGATIVE,
        "alpha": NON_NEGATIVE,
        "steps": NON_NEGATIVE,
        "temperature": POSITIVE,
        "max_new_tokens": TOKENS,
        "batch_size": AT_LEAST_1,
        "limit": AT_LEAST_1,
        "reward_max_words": AT_LEAST_1,
    },
    "MineConfig": {"limit": AT_LEAST_1},
    "RuntimeSection": {"threads": AT_LEAST_1},  # eval's and mine's runtime
    "QuickstartConfig": {
        "threads": Bound(low=1, option="--threads"),
        "control_time_factor": POSITIVE,
        "eval_limit": Bound(low=1, option="--eval-limit"),
        "eval_batch_size": AT_LEAST_1,
    },
    "AblationConfig": {"steps": AT_LEAST_1, "batch_size": AT_LEAST_1, "eval_limit": AT_LEAST_1},
}


def range_error(config: Any, where: str) -> str | None:
    """The first field of `config` outside its range, as `<what> — <fix>`; None when all fit."""
    for name, bound in RANGES.get(type(config).__name__, {}).items():
        value = getattr(config, name, None)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        label = f"{where}.{name}" + (f" ({bound.option})" if bound.option else "")
        if isinstance(value, float) and not math.isfinite(value):
            return f"{label} is {value}, not a finite number — use a value {bound.text()}"
        if not bound.ok(value):
            return f"{label} is {value!r}, out of range — use a value {bound.text()}"
    return None
