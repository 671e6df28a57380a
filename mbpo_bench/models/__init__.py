"""The model layer: family adapters behind one Protocol, tiny offline models, LoRA.

Importing this package is cheap (no torch/transformers): heavy imports live inside functions.

    build_tiny_model(family, out, *, size="tiny", seed=0, image_size=None, extra_corpus=()) -> Path
    load_model(path_or_id, *, adapter=None, dtype="auto", device="auto",
               trust_remote_code=False, local_files_only=True, image_size=None)
        -> VisionLanguageModel
    FAMILIES, SIZES, LOADABLE_MODEL_TYPES
LoRA helpers are in `mbpo_bench.models.lora`.
"""

from __future__ import annotations

from mbpo_bench.models.families import FAMILIES, LOADABLE_MODEL_TYPES, SIZES, SizeSpec
from mbpo_bench.models.loading import load_model
from mbpo_bench.models.protocol import AnswerLogprobs, ImageMode, Prompt, VisionLanguageModel
from mbpo_bench.models.tiny import build_tiny_model, count_parameters

__all__ = [
    "FAMILIES",
    "LOADABLE_MODEL_TYPES",
    "SIZES",
    "AnswerLogprobs",
    "ImageMode",
    "Prompt",
    "SizeSpec",
    "VisionLanguageModel",
    "build_tiny_model",
    "count_parameters",
    "load_model",
]
