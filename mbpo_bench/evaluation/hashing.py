"""Cheap content hashes of model and adapter folders for results files.

Hashing multi-gigabyte weights on every evaluation would cost minutes, so the hash covers what
changes whenever the weights change in practice: the names and byte sizes of the weight files
plus the full bytes of the small JSON files (config, adapter config, generation config,
tokenizer config, safetensors index). Two checkpoints of one training run share sizes but not
indexes or configs only rarely, so the hash is a guard against mixing runs up, not a proof of
identity; the id (path or hub name) is recorded beside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
HASHED_JSON = (
    "config.json",
    "adapter_config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
)


def content_hash(path: str | Path | None) -> str | None:
    """'sha256:<hex16>' of a local model or adapter folder; None for hub ids and missing paths."""
    if path is None:
        return None
    root = Path(path)
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        rel = p.relative_to(root).as_posix()
        if p.name.endswith(WEIGHT_SUFFIXES):
            digest.update(f"{rel}\0{p.stat().st_size}\n".encode())
        elif p.name in HASHED_JSON:
            digest.update(f"{rel}\0".encode() + p.read_bytes() + b"\n")
    return "sha256:" + digest.hexdigest()[:16]
