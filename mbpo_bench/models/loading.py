"""Load a checkpoint (local folder or hub id) into the family adapter, with clear errors.

Decisions:
- A hub id resolves to a local snapshot first (`huggingface_hub.snapshot_download`, with
  `local_files_only=True` unless the user passes --online), so hub ids and folders share one code
  path and one set of checks. Only configs, safetensors and tokenizer files are fetched.
- The folder is checked before transformers sees it (config.json, *.safetensors, tokenizer files,
  a supported `model_type`), so a mistake gets one line naming the folder and the fix, not a
  traceback from deep inside `from_pretrained`.
- bf16 on GPU, fp32 on CPU; sdpa attention; safetensors only; `trust_remote_code` only if asked.
- The model comes back frozen (`requires_grad=False`) and in eval mode: PGD and scoring must not
  build weight gradients; `lora.apply_lora` (or the caller, for full fine-tuning) unfreezes.
- The processor: `AutoProcessor` where it works; otherwise (a Qwen folder on a machine without
  torchvision, whose stock processor demands a video processor, or an older Qwen2.5-VL snapshot
  naming `Qwen2_5_VLImageProcessor`) the stock processor class built from the folder's own
  preprocessor_config.json, tokenizer and chat template, without the video half. Nothing reads
  an attribute only our tiny tokenizer has (a real Qwen tokenizer has no `image_token`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError, did_you_mean, exception_line
from mbpo_bench.models.families import LOADABLE_MODEL_TYPES
from mbpo_bench.parallel import resolve_device  # used here, and imported from here elsewhere

if TYPE_CHECKING:
    import torch

    from mbpo_bench.models.protocol import VisionLanguageModel

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}  # fmt: skip


def resolve_folder(path_or_id: str | Path, *, local_files_only: bool = True) -> Path:
    """A local folder for `path_or_id`: the folder itself or the hub snapshot in the HF cache."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model path {path} is a file — pass the checkpoint folder")
        return path
    text = str(path_or_id)
    init_hint = f"mbpo-bench models init --family llava --out {text}"
    if not _HUB_ID.match(text):
        raise UserError(
            f"model folder not found: {text} — check the path or build one ({init_hint})"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(text, local_files_only=local_files_only, allow_patterns=_HUB_PATTERNS)
        )
    except LocalEntryNotFoundError as exc:
        raise UserError(
            f"model '{text}' is neither a local folder nor in the Hugging Face cache — fix the "
            f"path or download it first (hf download {text}; `mbpo-bench eval --online` may "
            "fetch it)"
        ) from exc
    except HfHubHTTPError as exc:
        raise UserError(
            f"model '{text}' could not be fetched from the hub ({exc.__class__.__name__}) — check "
            "the id and your network/token"
        ) from exc


def check_folder(folder: Path) -> str:
    """Validate a checkpoint folder; return its `model_type`."""
    init = "rebuild it (mbpo-bench models init ...) or point at the checkpoint folder"
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"model folder {folder} has no config.json — {init}")
    if not (
        list(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").exists()
    ):
        if list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
            raise UserError(
                f"model folder {folder} has only pickle weights (*.bin/*.pt) — safetensors only: "
                "re-save it with save_pretrained(safe_serialization=True)"
            )
        raise UserError(f"model folder {folder} has no weights (*.safetensors) — {init}")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise UserError(
            f"model folder {folder} has no tokenizer (tokenizer.json / tokenizer.model) — save the "
            "tokenizer into it or rebuild it"
        )
    try:
        model_type = str(json.loads(config_path.read_text()).get("model_type", ""))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{config_path} is not valid JSON — {init}") from exc
    if model_type not in LOADABLE_MODEL_TYPES:
        raise UserError(
            f"model_type '{model_type}' in {config_path} is not supported"
            f"{did_you_mean(model_type, LOADABLE_MODEL_TYPES)} — supported: "
            f"{', '.join(LOADABLE_MODEL_TYPES)}"
        )
    return model_type


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise UserError(
            f"unknown dtype '{dtype}'{did_you_mean(dtype, _DTYPES)} — use auto, bf16, fp16 or fp32"
        )
    return getattr(torch, _DTYPES[dtype])  # type: ignore[no-any-return]


def image_only_qwen_processor(
    family: str, image_processor: Any, tokenizer: Any, chat_template: str | None = None
) -> Any:
    """A Qwen2(.5)-VL processor without the video processor (which needs torchvision).

    It is the stock processor class, so its `__call__` (image-token expansion, grids) is
    transformers' own; only the video half is left out. Token names follow the stock
    `__init__`: the tokenizer's attribute where it has one, else Qwen's literal token (a real
    Qwen tokenizer defines no `image_token`).
    """
    import transformers as tf
    from transformers.processing_utils import ProcessorMixin

    from mbpo_bench.models.families import FAMILIES

    base = getattr(tf, FAMILIES[family].processor_class)

    class ImageOnlyQwenProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(
            self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None
        ) -> None:
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    template = chat_template or tokenizer.chat_template
    return ImageOnlyQwenProcessor(image_processor, tokenizer, chat_template=template)


# preprocessor_config.json image_processor_type values a Qwen2(.5)-VL checkpoint may carry: the
# older Qwen2.5-VL snapshots name a class transformers never had under that name.
_QWEN_IMAGE_PROCESSORS = ("Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast",
                          "Qwen2_5_VLImageProcessor", "Qwen2VLImageProcessorPil")  # fmt: skip


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is not readable JSON ({type(exc).__name__}) — re-download it"
        ) from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object — re-download it")
    return data


def _folder_chat_template(folder: Path) -> str | None:
    """The checkpoint's chat template file (chat_template.jinja / .json), if it has one."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        value = _read_json(folder / "chat_template.json").get("chat_template")
        return value if isinstance(value, str) else None
    return None


def check_qwen_image_processor(folder: Path) -> None:
    """A Qwen folder's `preprocessor_config.json` must name a Qwen2-VL image processor: with
    torchvision installed `AutoProcessor` would otherwise load another class without a word."""
    config_path = folder / "preprocessor_config.json"  # (ours keep it in processor_config.json)
    kind = _read_json(config_path).get("image_processor_type") if config_path.is_file() else None
    if kind is not None and kind not in _QWEN_IMAGE_PROCESSORS:
        raise UserError(
            f"{config_path}: image_processor_type '{kind}' is not a Qwen2-VL image processor — "
            f"set it to Qwen2VLImageProcessor"
        )


def qwen_processor_from_files(folder: Path, family: str, *, trust_remote_code: bool) -> Any:
    """The Qwen processor from the checkpoint's own files, on any install (no torchvision).

    The image processor class is transformers' Qwen2-VL one on this machine's backend (PIL
    without torchvision), whichever of the known names `preprocessor_config.json` carries
    (`load_processor` has checked that name through the family's `processor_check`).
    """
    import transformers as tf
    from transformers.utils import is_torchvision_available

    improc_cls = (
        tf.Qwen2VLImageProcessor if is_torchvision_available() else tf.Qwen2VLImageProcessorPil
    )
    improc = improc_cls.from_pretrained(folder)
    tok = tf.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return image_only_qwen_processor(family, improc, tok, _folder_chat_template(folder))


def load_processor(folder: Path, family: str, *, trust_remote_code: bool = False) -> Any:
    """The checkpoint's processor: `AutoProcessor` where it loads, else built from its files.

    `AutoProcessor` fails on a plain install for real Qwen folders (the stock processor demands
    a torchvision video processor) and on older Qwen2.5-VL snapshots (an image processor name
    transformers does not know); both are rebuilt from the same files.
    """
    import transformers as tf

    from mbpo_bench.models.families import FAMILIES, FamilySpec

    spec = FAMILIES[family]
    if spec.processor_check is not None:
        FamilySpec.load(spec.processor_check)(folder)
    error: Exception | None = None
    try:
        proc = tf.AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (ImportError, OSError, ValueError, TypeError, KeyError) as exc:
        proc, error = None, exc
    if proc is not None and hasattr(proc, "image_processor"):
        return proc
    rebuild = spec.processor_from_files
    if rebuild is None:
        why = f" ({exception_line(error, 120)})" if error else ""
        raise UserError(
            f"the processor in {folder} cannot be loaded{why} — check preprocessor_config.json "
            "and processor_config.json against the original checkpoint"
        )
    return FamilySpec.load(rebuild)(folder, family, trust_remote_code=trust_remote_code)


def resolve_training_run(model: str | Path) -> tuple[str, str | None]:
    """(model folder or id, adapter folder or None): a training run folder is followed.

    `mbpo-bench train` writes `<run>/final/info.json` naming a full model (`final/model`) or an
    adapter over a base; every command that takes `--model` accepts such a run folder.
    """
    import json

    info_path = Path(model) / "final" / "info.json"
    if not info_path.is_file():
        return str(model), None
    info = json.loads(info_path.read_text())
    final = info_path.parent
    if info.get("model"):
        return str(final / info["model"]), None
    if info.get("adapter"):
        return str(info["base"]), str(final / info["adapter"])
    raise UserError(f"{info_path} names neither a model nor an adapter — rerun that training")


def validate_model(path_or_id: str | Path) -> str:
    """Cheap checks of `--model` (no weights loaded), run before any run folder is written, so
    a typo leaves nothing behind that would block the corrected command. Returns model_type."""
    path, _ = resolve_training_run(path_or_id)
    return check_folder(resolve_folder(path))


def load_model(
    path_or_id: str | Path,
    *,
    adapter: str | Path | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    local_files_only: bool = True,
    image_size: int | None = None,
    protocol: str = "native",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    empty: bool = False,
) -> VisionLanguageModel:
    """Load a LLaVA / Qwen2-VL / Qwen2.5-VL checkpoint as a `VisionLanguageModel`.

    `empty`: the model's structure, dtype and generation config without its weights (on the
    meta device; FSDP ranks other than 0 build this and receive the weights from rank 0,
    `trainers/sharding.load_sharded`); no adapter is loaded then.

    `protocol` picks what the model is fed (`families.PROTOCOLS`: native, lmms-eval, original);
    `min_pixels` / `max_pixels` override a Qwen checkpoint's pixel limits. `image_size` only
    sets the side of synthetic square images (black / noise) for Qwen (default: the tiny
    model's pinned size, else 448); LLaVA's is fixed by its vision tower.
    """
    import transformers as tf

    from mbpo_bench.models.families import FAMILIES, FamilySpec, check_protocol, model_class

    if adapter is None:
        path_or_id, adapter = resolve_training_run(path_or_id)
    folder = resolve_folder(path_or_id, local_files_only=local_files_only)
    family = check_folder(folder)
    check_protocol(family, protocol)  # before the weights load
    dev = resolve_device(device)
    model = model_class(family).from_pretrained(
        folder,
        dtype=resolve_dtype(dtype, dev),
        attn_implementation="sdpa",
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        device_map={"": "meta"} if empty else {"": dev} if dev != "cpu" else None,
    )
    model.eval().requires_grad_(False)
    processor = load_processor(folder, family, trust_remote_code=trust_remote_code)
    tokenizer = getattr(processor, "tokenizer", None) or tf.AutoTokenizer.from_pretrained(folder)
    name = str(path_or_id)
    spec = FAMILIES[family]
    adapter_class = FamilySpec.load(spec.adapter)
    vlm: VisionLanguageModel
    if not spec.pixel_limits:
        if min_pixels is not None or max_pixels is not None:
            raise UserError("--min-pixels/--max-pixels apply to Qwen checkpoints — drop them")
        vlm = adapter_class(model, processor, tokenizer, name=name, protocol=protocol)
    else:
        vlm = adapter_class(
            model, processor, tokenizer, name=name, family=family, image_size=image_size,
            protocol=protocol, min_pixels=min_pixels, max_pixels=max_pixels,
        )  # fmt: skip
    if adapter is not None and not empty:
        from mbpo_bench.models.lora import load_adapter

        load_adapter(vlm, adapter)
    return vlm
