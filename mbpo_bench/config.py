"""Typed configs: dataclasses <-> YAML, with `section.key=value` overrides.

Why not a config framework: we need three things only, and each must be loud. Unknown keys are
rejected with the closest valid names (a typo must never be silently ignored), values are checked
against the field's type (an int where a float is expected is fine, a string is not), and the
resolved config round-trips to YAML so that it can be saved beside every run and reloaded.
`None` means "not given"; no field relies on truthiness.

One dialect: every command's config (eval, train, mine) has a `runtime` section with the same
keys for the same things (`RuntimeSection`; training's `RuntimeConfig` carries them and its own).
A config class lists the old spellings it still reads in `MOVED_KEYS` (old key -> new dotted key):
they work for one release, each with a one-line warning, in a file, a `--set`/positional override
or a saved config.yaml alike (`upgrade`).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from mbpo_bench.errors import UserError, did_you_mean

T = TypeVar("T")


@dataclass
class RuntimeSection:
    """Where and how a command runs: the keys every command's `runtime` section shares.

    device: auto | cpu | cuda | cuda:N; dtype: auto (bf16 on GPU, fp32 on CPU) | float32 |
    bfloat16 | float16; threads: torch CPU threads (None: torch's default); compile_layers:
    torch.compile'd decoder layers for the scoring / training passes (never for generation or
    PGD); protocol: what the model is fed (models/families.py PROTOCOLS) and Qwen's pixel limits
    (None: the protocol's / checkpoint's).
    """

    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    compile_layers: bool = False
    protocol: str = "native"
    min_pixels: int | None = None
    max_pixels: int | None = None

    # training's sharding keys (trainers/loop.py RuntimeConfig), refused here with the reason:
    # eval and mine hold the whole model in each process and give the ranks different numbers of
    # forwards (uneven item shares, PGD batches), so sharded weights would have to be gathered
    # whole for every forward anyway, as mining inside a sharded training run does
    KEY_HINTS: typing.ClassVar[dict[str, str]] = dict.fromkeys(
        ("strategy", "fsdp_offload", "fsdp_rollout"),
        "is a training option (`train sft|dpo|grpo|mbpo`): eval and mine keep the whole model in "
        "each process, because under torchrun their ranks run different numbers of forwards "
        "(each forward on sharded weights is a collective) — drop it; to mine under FSDP, run "
        "`train dpo` or `train mbpo` with runtime.strategy=fsdp (they mine with the weights "
        "gathered)",
    )


@functools.cache
def _warn_moved(where: str, old: str, new: str) -> None:
    print(
        f"warning: {where} key '{old}' is deprecated and will be removed in the next release "
        f"— write {new}",
        file=sys.stderr,
    )


def upgrade(cls: type, data: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """`data` with the old spellings of `cls.MOVED_KEYS` moved to their new keys (one warning
    per old key and place). Upgrade each raw input (file, overrides) before merging it over the
    defaults: an old key overrides its new key's value in the same mapping."""
    moved: dict[str, str] = getattr(cls, "MOVED_KEYS", {})
    if not any(old in data for old in moved):
        return data
    out = dict(data)
    for old, new in moved.items():
        if old not in out:
            continue
        value = out.pop(old)
        section, key = new.split(".", 1)
        _warn_moved(where, old, new)
        given = out.get(section)
        given = dict(given) if isinstance(given, dict) else {}
        given[key] = value
        out[section] = given
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _fix(errors: list[str]) -> str:
    """The fix of the first alternative's error (`X | None` fields: the X one), or a default."""
    for error in errors:
        if " — " in error:
            return error.split(" — ", 1)[1]
    return "use a value of that type, or null"


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


@dataclass(frozen=True)
class _Mode:
    """How `from_dict` reads: configs (lenient where lossless: "3e-4" is a number, 8 may be a
    string) or, `strict`, files this package wrote (results.json: exact types, every required
    field present, mapping values checked), raising `error`."""

    strict: bool = False
    error: type[UserError] = UserError


CONFIG = _Mode()


def _coerce(value: Any, tp: Any, where: str, mode: _Mode = CONFIG) -> Any:
    """Check `value` against the annotation `tp`; return it, converted only where lossless."""
    origin = get_origin(tp)
    error = mode.error
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, mode)
            except UserError as exc:
                errors.append(str(exc))
        raise error(f"{where}: expected {_type_name(tp)}, got {_shown(value)} — {_fix(errors)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise error(
                f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}"
                f"{did_you_mean(str(value), map(str, allowed))} — use one of those values"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise error(f"{where}: expected a list, got {_shown(value)} — write it as [a, b, ...]")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]", mode) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise error(
                f"{where}: expected a mapping, got {_shown(value)} — write it as {{key: value}}"
            )
        if not mode.strict:
            return dict(value)
        _, value_tp = get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, value_tp, f"{where}.{k}", mode) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise error(
                f"{where}: expected a mapping of {tp.__name__} fields, got {_shown(value)} — set "
                "its fields one by one, e.g. section.key=value"
            )
        return _from_dict(tp, value, where, mode)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise error(f"{where}: expected true or false, got {_shown(value)} — write true or false")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and not mode.strict:
            # YAML 1.1 reads "3e-4" (no dot) as a string; accept any numeric spelling.
            try:
                return float(value)
            except ValueError:
                pass
        raise error(
            f"{where}: expected a number, got {_shown(value)} — write a number such as 3e-4"
        )
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise error(
            f"{where}: expected an integer, got {_shown(value)} — write a whole number such as 8"
        )
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and not mode.strict:
            return str(value)
        raise error(f"{where}: expected a string, got {_shown(value)} — quote it")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise error(f"{where}: expected a path, got {_shown(value)} — write a file or folder path")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(
    cls: type[T],
    data: dict[str, Any],
    where: str = "config",
    *,
    strict: bool = False,
    error: type[UserError] = UserError,
) -> T:
    """Build dataclass `cls` from a (nested) mapping; unknown keys and wrong types raise.

    The one typed loader: configs (YAML, overrides) and, with `strict`, the files this package
    writes (results.json, `evaluation/schema.py`), whose every required field must be present."""
    return _from_dict(cls, data, where, _Mode(strict, error))


def _from_dict(cls: type[T], data: dict[str, Any], where: str, mode: _Mode) -> T:
    assert dataclasses.is_dataclass(cls)
    data = upgrade(cls, data, where)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            if mode.strict:
                raise mode.error(f"{where}: unknown field '{key}' in {cls.__name__}")
            hint = getattr(cls, "KEY_HINTS", {}).get(key)
            if hint is not None:
                raise mode.error(f"{where}.{key} {hint}")
            raise mode.error(
                f"unknown config key '{where}.{key}'{did_you_mean(key, names)}; "
                f"valid keys of {where}: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}", mode)
    if mode.strict:
        for name, f in fields.items():
            missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if missing and name not in kwargs:
                raise mode.error(f"{where}: missing field '{name}' of {cls.__name__}")
    from mbpo_bench.ranges import range_error

    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        text = str(exc) if " — " in str(exc) else f"{exc} — fix that setting"
        raise mode.error(f"{where}: {text}") from exc
    problem = range_error(obj, where)
    if problem is not None:
        raise mode.error(problem)
    return obj


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-safe mapping of a dataclass config (paths become strings)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return typing.cast(dict[str, Any], plain(config))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['a.b=1', 'c=x'] into {'a': {'b': 1}, 'c': 'x'}; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(
                f"override '{item}' is not of the form section.key=value — write e.g. optim.lr=1e-4"
            )
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        if not all(keys):
            raise UserError(f"override '{item}' has an empty key — write e.g. optim.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(
                    f"override '{item}' sets a key below a value — set the section's own keys"
                )
        node[keys[-1]] = value
    return tree


def merge_dicts(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` laid over `base`, recursively for nested mappings (neither is changed)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a `--config` YAML file; a missing or malformed file is one line."""
    if not path.is_file():
        raise UserError(f"config file not found: {path} — pass an existing YAML file")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(loaded, dict):
        raise UserError(
            f"config file {path} must hold a mapping at the top level — write key: value lines"
        )
    return loaded


def load_config(cls: type[T], path: Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of `cls`, then the YAML file at `path`, then `section.key=value` overrides."""
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        data = merge_dicts(data, upgrade(cls, read_config_file(path), str(path)))
    data = merge_dicts(data, upgrade(cls, parse_overrides(overrides or []), "override"))
    return from_dict(cls, data, where=cls.__name__)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def print_config(config: Any, title: str = "config") -> None:
    """Print the resolved config at the start of a run (rich, to stderr)."""
    from rich.console import Console
    from rich.syntax import Syntax

    Console(stderr=True).print(Syntax(dump_yaml(config), "yaml", theme="ansi_dark"), style="dim")
