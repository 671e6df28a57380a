"""Route the user's `key=value` settings of an ablation to the configs that have those keys.

One command trains four kinds of configs (SFT, DPO, GRPO, MBPO) and evaluates with a fifth, so a
setting is sent where it means something:

- `section.key=value`: every TRAINING config that has the key (`grpo.beta` reaches GRPO and MBPO,
  `mining.eps` reaches DPO and MBPO, `optim.lr` all four); a key that no trainer has is an error
  with the closest valid keys, never silently dropped;
- `METHOD:section.key=value` (METHOD = sft, dpo, grpo, mbpo): that method only, checked
  against its config;
- `eval:key=value`: the evaluations (`eval:batch_size=4`).

Keys that the ablation itself sets per arm or per seed (model, data, the budget, seeds and the
factors) are refused with the option that sets them, so an override can never quietly break
"same budget, differ only in the factors".
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin

from mbpo_bench.errors import UserError, did_you_mean

EVAL_PREFIX = "eval"

# key -> how it is set instead
TRAIN_PROTECTED: dict[str, str] = {
    "model": "pass --model",
    "data": "pass --data",
    "preference_data": "the ablation mines the pairs of each arm itself",
    "optim.steps": "the budget is the same for every arm: pass --steps",
    "optim.batch_size": "the budget is the same for every arm: pass --batch-size",
    "runtime.seed": "pass --seeds",
    "mining.seed": "pass --seeds (mining is seeded with the run's seed)",
    "mining.source": "it is a factor of the arms: choose arms with --arms",
    "mining.iig_filter": "it is a factor of the arms: choose arms with --arms",
}
EVAL_PROTECTED: dict[str, str] = {
    "model": "each arm's evaluation uses its own trained weights",
    "adapter": "each arm's evaluation uses its own trained weights",
    "output": "the ablation places every evaluation under --output",
    "tasks": "pass --eval-tasks",
    "limit": "pass --eval-limit",
    "probes.names": "pass --probes",
}


def _unwrap(tp: Any) -> Any:
    """X | None -> X (only for one non-None member)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def accepts(cls: type, dotted: str) -> bool:
    """Whether the dataclass `cls` has the (nested) key `dotted`, e.g. 'optim.lr'."""
    head, _, rest = dotted.partition(".")
    names = {f.name for f in dataclasses.fields(cls)}
    if head not in names:
        return False
    if not rest:
        return True
    tp = _unwrap(typing.get_type_hints(cls)[head])
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return accepts(tp, rest)
    return get_origin(tp) is dict or tp is dict


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of `cls` (nested dataclasses expanded), for did-you-mean."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _unwrap(hints[f.name])
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out.extend(leaf_keys(tp, f"{name}."))
        else:
            out.append(name)
    return out


def override_key(item: str) -> str:
    """The key of a `key=value` override (a one-line error when it is not one)."""
    if "=" not in item:
        raise UserError(
            f"'{item}' is not a key=value override — write e.g. optim.lr=1e-4, "
            "sft:optim.lr=3e-4 or eval:batch_size=4"
        )
    return item.split("=", 1)[0].strip()


def _check_protected(item: str, key: str, protected: dict[str, str], where: str) -> None:
    for name, how in protected.items():
        if key == name or key.startswith(name + ".") or name.startswith(key + "."):
            raise UserError(
                f"override '{item}' sets {where}'{name}', which the ablation sets — {how}"
            )


@dataclass
class RoutedOverrides:
    """The user's overrides, split by target; each list keeps the user's order."""

    common: list[str] = field(default_factory=list)
    by_method: dict[str, list[str]] = field(default_factory=dict)
    eval: list[str] = field(default_factory=list)

    def for_method(self, method: str, config_cls: type) -> list[str]:
        """The common overrides this method's config has, then the method's own."""
        common = [o for o in self.common if accepts(config_cls, override_key(o))]
        return [*common, *self.by_method.get(method, [])]


def route(items: Sequence[str], config_classes: dict[str, type]) -> RoutedOverrides:
    """Split `items` by prefix and check every key (see the module docstring)."""
    routed = RoutedOverrides()
    prefixes = (*config_classes, EVAL_PREFIX)  # the trainer table's methods, and eval
    for raw in items:
        item = raw.strip()
        key = override_key(item)
        prefix, sep, bare = key.partition(":")
        if not sep:
            bare, prefix = key, ""
        elif prefix not in prefixes:
            raise UserError(
                f"override '{item}' names '{prefix}'{did_you_mean(prefix, prefixes)} — prefix a "
                f"key with one of {', '.join(p + ':' for p in prefixes)} or with nothing"
            )
        value = item.split("=", 1)[1]
        plain = f"{bare}={value}"
        if prefix == EVAL_PREFIX:
            _check_protected(item, bare, EVAL_PROTECTED, "eval ")
            routed.eval.append(plain)
            continue
        _check_protected(item, bare, TRAIN_PROTECTED, "")
        if prefix:
            routed.by_method.setdefault(prefix, []).append(plain)
        elif not any(accepts(cls, bare) for cls in config_classes.values()):
            keys = sorted({k for cls in config_classes.values() for k in leaf_keys(cls)})
            raise UserError(
                f"override '{item}' is not a setting of any trainer{did_you_mean(bare, keys)} — "
                "check the key (evaluation settings take the prefix eval:)"
            )
        else:
            routed.common.append(plain)
    return routed
