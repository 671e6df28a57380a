"""lmms-eval entry point: `lmms-eval --model mbpo --model_args pretrained=DIR --tasks ...`.

pyproject.toml declares `[project.entry-points."lmms_eval.models"] mbpo =
"mbpo_bench.evaluation.lmms_plugin:manifests"`. lmms-eval 0.7.3 resolves models only through
`MODEL_REGISTRY_V2` (its `@register_model` decorator alone does nothing); while initialising that
registry it loads every entry point of the group and accepts a callable returning
`ModelManifest`s. The manifest names a class path; the registry imports this module and reads
`MbpoLmms` from it, which `__getattr__` builds on first access from `lmms_model.py`.

Why two modules: this one must stay importable while `lmms_eval.models` is still initialising
(and on machines without lmms-eval, e.g. for `mbpo-bench --help` or mypy), so it imports
nothing of lmms-eval at module level; `lmms_model.py` subclasses `lmms_eval.api.model.lmms`
and is imported only when the class is actually requested.
"""

from __future__ import annotations

from typing import Any

MODEL_ID = "mbpo"
CLASS_PATH = "mbpo_bench.evaluation.lmms_plugin.MbpoLmms"


def manifests() -> list[Any]:
    """The payload of our `lmms_eval.models` entry point."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH, aliases=("mbpo_bench",))]


def __getattr__(name: str) -> Any:
    if name == "MbpoLmms":
        from mbpo_bench.evaluation.lmms_model import MbpoLmms

        return MbpoLmms
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
