"""The geometric step of an input protocol: PIL image -> [0,1] tensor at the processed geometry.

Why a separate step: everything after it (normalisation, Qwen's patchify) is differentiable and
runs on the model side (`pixels_to_inputs`), so PGD, IIG and the adversarial probe work on the
very pixels the model sees, for any image size. The step itself (JPEG round trip, pad to square,
resize, crop, smart_resize) is done once per image and is not differentiable.

Decisions:
- The resize/crop is the checkpoint's own image processor, called with normalisation and
  rescaling off (`do_normalize=False, do_rescale=False`): whatever backend the machine has (PIL or
  torchvision), our geometry is the processor's, and `x / 255` followed by `(x - mean) / std`
  reproduces its `pixel_values` bit for bit (tests compare with `torch.equal`).
- Qwen's processor returns patches, not an image: they are folded back into (3, H, W) (frame 0 of
  the temporal repeat), the exact inverse of `qwen2_vl.patchify`.
- `size(image)` predicts the processed (H, W) without resizing, so a batch of perturbed images
  can be cropped back to each item's geometry from its prompt image alone.
- Protocol extras follow their references: LLaVA-1.5 `expand2square` with the image-mean colour;
  lmms-eval's JPEG quality-85 round trip and qwen_vl_utils 0.0.14 `fetch_image` resize
  (its own smart_resize with factor patch*merge, then PIL's default bicubic resize).
"""

from __future__ import annotations

import importlib
import io
import math
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError
from mbpo_bench.models.families import ProtocolSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mbpo_bench.models.prepared import PreparedImage

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


def expand2square(img: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """LLaVA-1.5's `expand2square` (llava/mm_utils.py): centre the image on a square canvas."""
    from PIL import Image as PILImage

    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    canvas = PILImage.new(img.mode, (side, side), background)
    canvas.paste(img, ((side - width) // 2, (side - height) // 2))
    return canvas


def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at `quality` and decode again (lmms-eval's base64 data URL of the image)."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return PILImage.open(buf).convert("RGB")


def qwen_vl_utils_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """qwen_vl_utils 0.0.14 `smart_resize` (differs from transformers' at tiny sides)."""
    if max(height, width) / min(height, width) > 200:
        raise UserError(
            f"image of {width}x{height} px has an aspect ratio above 200 — Qwen cannot take it; "
            "crop or pad the image"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _size_field(size: Any, key: str) -> Any:
    if size is None:
        return None
    value = getattr(size, key, None)
    if value is None and isinstance(size, dict):
        value = size.get(key)
    return value


def qwen_pixel_limits(improc: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) the checkpoint's Qwen image processor is configured with."""
    size = getattr(improc, "size", None)
    lo = _size_field(size, "shortest_edge") or getattr(improc, "min_pixels", None)
    hi = _size_field(size, "longest_edge") or getattr(improc, "max_pixels", None)
    if lo is None or hi is None:
        raise UserError(
            "the Qwen image processor names no min/max pixels — add min_pixels and max_pixels "
            "to preprocessor_config.json"
        )
    return int(lo), int(hi)


def unpatchify(patches: torch.Tensor, grid: list[int], patch: int, merge: int) -> torch.Tensor:
    """Qwen patches (gh*gw, C*T*p*p) of one image -> (C, gh*p, gw*p), frame 0 of the repeat."""
    _, gh, gw = grid
    c = 3
    t = patches.shape[1] // (c * patch * patch)
    x = patches.reshape(gh // merge, gw // merge, merge, merge, c, t, patch, patch)[..., 0, :, :]
    # (gh/m, gw/m, m, m, C, p, p) -> (C, gh/m, m, p, gw/m, m, p)
    return x.permute(4, 0, 2, 5, 1, 3, 6).reshape(c, gh * patch, gw * patch)


class ImageGeometry:
    """One family's geometric step under one protocol (see the module docstring)."""

    def __init__(
        self,
        family: str,
        improc: Any,
        spec: ProtocolSpec,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self.family = family
        self.improc = improc
        self.spec = spec
        self.qwen = family in QWEN_FAMILIES
        self.call_kwargs: dict[str, Any] = {}
        if self.qwen:
            lo, hi = qwen_pixel_limits(improc)
            lo = min_pixels or spec.min_pixels or lo
            hi = max_pixels or spec.max_pixels or hi
            if lo > hi:
                raise UserError(
                    f"min_pixels {lo} is above max_pixels {hi} — pass --min-pixels <= --max-pixels"
                )
            self.min_pixels, self.max_pixels = lo, hi
            self.patch = int(improc.patch_size)
            self.merge = int(improc.merge_size)
            self.call_kwargs["size"] = {"shortest_edge": lo, "longest_edge": hi}
            module = importlib.import_module(type(improc).__module__)
            self._smart_resize = module.smart_resize
        elif min_pixels is not None or max_pixels is not None:
            raise UserError(
                f"--min-pixels/--max-pixels apply to Qwen checkpoints, not family '{family}' — "
                "drop them"
            )

    def _pre(self, img: Image.Image) -> Image.Image:
        """The protocol's steps before the processor (JPEG, pad to square, qwen_vl_utils)."""
        img = img.convert("RGB")
        if self.spec.jpeg_quality is not None:
            img = jpeg_roundtrip(img, self.spec.jpeg_quality)
        if self.spec.geometry == "pad_square":
            mean = self.improc.image_mean
            img = expand2square(img, tuple(int(x * 255) for x in mean))
        elif self.spec.geometry == "qwen_vl_utils":
            w, h = img.size
            factor = self.patch * self.merge
            rh, rw = qwen_vl_utils_resize(h, w, factor, self.min_pixels, self.max_pixels)
            img = img.resize((rw, rh))  # qwen_vl_utils: PIL's default resample (bicubic)
        return img

    def size(self, img: Image.Image | PreparedImage) -> tuple[int, int]:
        """Processed (H, W) of `img` under this protocol, without resizing it."""
        from mbpo_bench.models.prepared import PreparedImage

        if isinstance(img, PreparedImage):  # the step already ran (evaluation/loader.py)
            return img.processed
        w, h = img.size
        if self.qwen:
            factor = self.patch * self.merge
            if self.spec.geometry == "qwen_vl_utils":
                h, w = qwen_vl_utils_resize(h, w, factor, self.min_pixels, self.max_pixels)
            rh, rw = self._smart_resize(
                h, w, factor=factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels
            )
            return int(rh), int(rw)
        improc = self.improc
        if getattr(improc, "do_center_crop", False) and getattr(improc, "crop_size", None):
            crop = improc.crop_size
            return int(_size_field(crop, "height")), int(_size_field(crop, "width"))
        size = improc.size
        return int(_size_field(size, "height")), int(_size_field(size, "width"))

    def prepare(self, img: Image.Image | PreparedImage) -> torch.Tensor:
        """(3, H, W) float32 in [0,1] at the processed geometry (values are uint8 / 255)."""
        from mbpo_bench.models.prepared import PreparedImage

        if isinstance(img, PreparedImage):
            return img.to_float()
        out = self.improc(
            images=[self._pre(img)],
            do_normalize=False,
            do_rescale=False,
            return_tensors="pt",
            **self.call_kwargs,
        )
        pixels = out["pixel_values"]
        if self.qwen:
            grid = [int(v) for v in out["image_grid_thw"][0]]
            pixels = unpatchify(pixels, grid, self.patch, self.merge)
        else:
            pixels = pixels[0]
        return pixels.float() / 255.0
