"""Image decoding with errors that name the item and the file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mbpo_bench.errors import UserError

if TYPE_CHECKING:
    from PIL import Image


class BadImageError(UserError):
    """An image that is missing or fails to decode; evaluation may skip these on request."""


def load_rgb(path: Path, *, size: int | None = None, item: str = "") -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    where = f"item {item}: " if item else ""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise BadImageError(
            f"{where}image file not found: {path} — regenerate or fix the data"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise BadImageError(
            f"{where}image {path} cannot be decoded ({exc.__class__.__name__}) — replace the file or pass --skip-bad-items"
        ) from exc
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return rgb
