"""The stand-in images of the modality probes and of IIG's null condition, seeded so that every
run and checkpoint sees the same ones.

Determinism decisions: the mismatched assignment is a derangement of the task's DISTINCT image
files (POPE asks six questions about one image; a derangement of items could hand an item its own
picture), seeded by the task name, over items sorted by doc id, so the same items get the same
foreign images in every run and checkpoint (pairing across checkpoints stays valid). Noise is
seeded by the caller (crc32 of task/doc_id for the probes). Nothing depends on batch order.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from mbpo_bench.data.items import TaskItem


def stable_seed(*parts: str) -> int:
    """A seed that is the same on every machine and Python run (unlike hash())."""
    return zlib.crc32("/".join(parts).encode())


def derangement(n: int, seed: int) -> list[int]:
    """A permutation p of range(n) with p[i] != i for all i (n >= 2): one random n-cycle."""
    if n < 2:
        raise ValueError("a derangement needs at least two elements")
    order = np.random.default_rng(seed).permutation(n)
    out = [0] * n
    for pos, i in enumerate(order):
        out[int(i)] = int(order[(pos + 1) % n])
    return out


def mismatched_images(items: Sequence[TaskItem], seed: int = 0) -> dict[str, Path]:
    """doc_id -> another image of the same task (never the item's own file).

    Empty when the task has fewer than two distinct images (the probe is then not applicable).
    """
    paths = sorted({it.image_path for it in items if it.image_path is not None}, key=str)
    if len(paths) < 2:
        return {}
    task = items[0].task if items else ""
    perm = derangement(len(paths), stable_seed(task, "mismatched", str(seed)))
    foreign = {paths[i]: paths[perm[i]] for i in range(len(paths))}
    return {it.doc_id: foreign[it.image_path] for it in items if it.image_path is not None}


def noise_image(size: int, seed: int) -> Image.Image:
    """Uniform RGB noise at `size` x `size`, reproducible from `seed`."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")
