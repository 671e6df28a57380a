"""An image already through the input protocol's geometric step, made off the critical path.

Why: at photo geometry the protocol's step (decode, the checkpoint's own resize / crop, Qwen's
smart_resize) costs 28-38 ms an image on one core (H200 runs, reports/perf/h200/*_pil.md), more
than the model needs for it. The evaluation loader (`evaluation/loader.py`) runs that step in
DataLoader worker processes and hands the main process `PreparedImage`s in place of PIL images;
`ImageGeometry.size` / `prepare` and `images_to_tensor` take them as they are, so every code path
after the prompt (render, PGD, IIG, image_fields) is the one that takes a PIL image, unchanged.

Decisions:
- Pixels travel as uint8 when the step's values are whole (x / 255 then reproduces the float
  tensor bit for bit); else as the float32 tensor itself. uint8 is a quarter of the bytes through
  shared memory, the pinned copy and the host-to-device copy.
- `pin_memory()` is what torch's DataLoader calls on custom batch elements (pin_memory=True), so
  the host-to-device copy in `images_to_tensor` can be non-blocking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch
    from PIL import Image


class GeometricStep(Protocol):
    """What `prepare_image` needs of `geometry.ImageGeometry` (named structurally: geometry.py
    imports this module, so importing it back would close an import cycle)."""

    def prepare(self, img: Image.Image) -> torch.Tensor: ...

    def size(self, img: Image.Image) -> tuple[int, int]: ...


@dataclass(frozen=True)
class PreparedImage:
    """The geometric step's output for one image, standing in for the PIL image."""

    size: tuple[int, int]  # (W, H) of the source image, as PIL's `Image.size`
    processed: tuple[int, int]  # (H, W) the model sees
    pixels: torch.Tensor  # (3, H, W): uint8 (whole values) or float32 in [0, 1]

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def to_float(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(3, H, W) float32 in [0, 1] on `device`: exactly `ImageGeometry.prepare`'s tensor."""
        import torch

        x = self.pixels
        if device is not None:
            x = x.to(device, non_blocking=True)
        return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()

    def pin_memory(self) -> PreparedImage:
        return PreparedImage(self.size, self.processed, self.pixels.pin_memory())


def prepare_image(geometry: GeometricStep, image: Image.Image) -> PreparedImage:
    """Run `geometry`'s step on `image` now (in a worker), keeping what the model side needs."""
    import torch

    x = geometry.prepare(image)
    scaled = x * 255.0
    whole = scaled.round()
    if torch.equal(whole, scaled) and torch.equal(whole / 255.0, x):
        pixels = whole.to(torch.uint8)
    else:
        pixels = x.contiguous()
    return PreparedImage(tuple(image.size), geometry.size(image), pixels)  # type: ignore[arg-type]
