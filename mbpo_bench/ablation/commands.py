"""The standalone commands that reproduce each run of an ablation, derived from its config.

The report promises "the exact commands". They are not reconstructed from what the user typed
but from each run's RESOLVED config: every field that differs from the command's defaults
becomes a `key=value` argument, so the command yields the same config by construction (a test
feeds them back through the CLI's config builders and compares).
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

import yaml

from mbpo_bench.config import to_dict


def yaml_scalar(value: Any) -> str:
    """A value as the right-hand side of `key=value` (parsed back with yaml.safe_load)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("...").strip()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def diff_overrides(config: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """`key=value` for every leaf of `config` that differs from its class's defaults."""
    assert dataclasses.is_dataclass(config) and not isinstance(config, type)
    now = _flatten(to_dict(config))
    default = _flatten(to_dict(type(config)()))
    return [
        f"{key}={yaml_scalar(value)}"
        for key, value in now.items()
        if key not in skip and default.get(key, object()) != value
    ]


def train_command(method: str, config: Any, output: str) -> str:
    args = ["mbpo-bench", "train", method, "--model", config.model, "--data", config.data]
    args += ["--output", output, *diff_overrides(config, skip=("model", "data"))]
    return shlex.join(args)


def mine_command(config: Any, output: str) -> str:
    args = ["mbpo-bench", "mine", "--model", config.model, "--data", config.data]
    args += ["--output", output, *diff_overrides(config, skip=("model", "data"))]
    return shlex.join(args)


def eval_command(config: Any) -> str:
    args = ["mbpo-bench", "eval", "--model", config.model]
    if config.adapter is not None:
        args += ["--adapter", config.adapter]
    args += ["--tasks", config.tasks, "--output", config.output]
    args += ["--probes", ",".join(config.probes.names)]
    if config.limit is not None:
        args += ["--limit", str(config.limit)]
    skip = ("model", "adapter", "tasks", "output", "probes.names", "limit")
    for item in diff_overrides(config, skip=skip):
        args += ["--set", item]
    return shlex.join(args)
