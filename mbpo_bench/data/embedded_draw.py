"""Drawing embedded-benchmark scenes with PIL: one object per grid cell, PNG bytes out.

Objects are centred in their patch-grid cell (with a small seeded offset inside the free margin),
so that with a ViT of the same patch size each object falls in exactly one image token. PNG
compression level 1: the images are tiny and encoding speed dominates generation time.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mbpo_bench.data.embedded_config import COLOR_RGB, EmbeddedConfig

if TYPE_CHECKING:
    from PIL import ImageDraw

    from mbpo_bench.data.embedded_scenes import Obj

Point = tuple[float, float]


def _star(cx: float, cy: float, r: float, points: int = 5, inner: float = 0.45) -> list[Point]:
    out = []
    for k in range(points * 2):
        rad = r if k % 2 == 0 else r * inner
        angle = -math.pi / 2 + k * math.pi / points
        out.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
    return out


def _draw_one(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
              rgb: tuple[int, int, int]) -> None:  # fmt: skip
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=rgb)
    elif shape == "square":
        draw.rectangle(box, fill=rgb)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=rgb)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r * 1.1), fill=rgb)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=rgb)
    elif shape == "cross":
        w = r / 3
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=rgb)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=rgb)
    elif shape == "heart":
        h = r / 2
        draw.ellipse((cx - r, cy - r, cx, cy), fill=rgb)
        draw.ellipse((cx, cy - r, cx + r, cy), fill=rgb)
        draw.polygon([(cx - r, cy - h), (cx + r, cy - h), (cx, cy + r)], fill=rgb)
    elif shape == "ring":
        draw.ellipse(box, outline=rgb, width=max(2, round(r / 2.5)))
    else:  # pragma: no cover - the config validates shape names
        raise ValueError(f"no drawing for shape {shape!r}")


def render_png(objs: Iterable[Obj], config: EmbeddedConfig) -> bytes:
    """The scene as PNG bytes (RGB, image_size square)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (config.image_size, config.image_size), COLOR_RGB[config.background])
    draw = ImageDraw.Draw(img)
    p = config.patch
    for o in objs:
        r = o.size * p / 2
        margin = p / 2 - r
        cx = (o.cell % config.grid) * p + p / 2 + o.dx * margin
        cy = (o.cell // config.grid) * p + p / 2 + o.dy * margin
        _draw_one(draw, o.shape, cx, cy, r - 0.5, COLOR_RGB[o.color])
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
