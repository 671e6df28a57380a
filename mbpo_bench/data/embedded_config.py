"""The embedded benchmark's configuration: every knob of the synthetic world is a field here.

Defaults follow shared/docs/field-notes.md (what made a 2.8M-parameter LLaVA learn the world and
show a language-prior bias in ~75 s of CPU): 48 px images with objects on the 3x3 grid of 16 px
patches (one object = one image token), 4 shapes x 4 colours, 1-3 objects, prior strength 0.9,
colour questions as 4-option multiple choice answered with the colour word. 500 test twin pairs
per task (500 items per prior cell) because effects of ~0.08 need 500+ per cell; 250 dev pairs.

Every answer word must be a single token of the tiny models' tokenizer, so shapes and colours are
checked against `ANSWER_WORDS`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from mbpo_bench.errors import UserError

# Bump when the generator's output changes for the same config (invalidates every cache).
# 2: counter-prior eval scenes differ from consistent ones only in the asked attribute.
# 3: twin pairs (each counter-prior item and its prior twin share scene and text), a `dev` split
#    with its own seed stream beside `test`, and twins of the counter-prior training items.
GENERATOR_VERSION = 3

SHAPE_WORDS = ("circle", "square", "triangle", "star", "cross", "diamond", "heart", "ring")
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (240, 220, 40), "purple": (150, 60, 200), "orange": (250, 140, 20),
    "white": (250, 250, 250), "gray": (128, 128, 128), "black": (0, 0, 0),
    "pink": (250, 150, 190), "brown": (130, 80, 40),
}  # fmt: skip
NUMBER_ANSWERS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
ANSWER_WORDS = frozenset(
    {"yes", "no", "A", "B", "C", "D", "one", "two", "three", "four", "five"}
    | set(NUMBER_ANSWERS) | set(COLOR_RGB) | set(SHAPE_WORDS)
)  # fmt: skip


@dataclass(frozen=True)
class EmbeddedConfig:
    """The synthetic world, its priors and the split sizes (sizes are per task)."""

    seed: int = 0
    image_size: int = 48
    patch: int = 16  # objects sit on the (image_size // patch)^2 grid: one object per image token
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "star")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow")
    background: str = "black"
    min_objects: int = 1
    max_objects: int = 3
    size_range: tuple[float, float] = (0.6, 0.95)  # object side as a fraction of the patch
    prior_strength: float = 0.9  # P(a training scene follows the priors)
    usual_counts: tuple[int, ...] = (1, 2)  # each shape's usual count is drawn from these
    n_color_options: int = 4
    n_train: int = 20000  # training scenes; every task asks one question per scene
    n_eval_per_cell: int = 500  # test twin pairs per task (= items per prior cell)
    n_dev_per_cell: int = 250  # dev twin pairs per task: for choosing settings, never reported

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise UserError(f"invalid embedded benchmark config: {'; '.join(problems)}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    def fingerprint(self) -> str:
        """A short hash of every field and the generator version: the cache folder's key."""
        from mbpo_bench.config import to_dict

        blob = json.dumps({"v": GENERATOR_VERSION, **to_dict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _problems(c: EmbeddedConfig) -> list[str]:
    out = []
    bad_shapes = [s for s in c.shapes if s not in SHAPE_WORDS]
    if bad_shapes:
        out.append(f"unknown shapes {bad_shapes} — choose from {', '.join(SHAPE_WORDS)}")
    bad_colors = [x for x in (*c.colors, c.background) if x not in COLOR_RGB]
    if bad_colors:
        out.append(f"unknown colors {bad_colors} — choose from {', '.join(COLOR_RGB)}")
    if c.background in c.colors:
        out.append(f"background '{c.background}' is also an object color — pick another")
    if len(c.shapes) < 4 or len(c.shapes) % 2 or len(set(c.shapes)) != len(c.shapes):
        out.append("shapes must be an even number (>= 4) of distinct names (they form pairs)")
    if len(c.colors) < 2 or len(set(c.colors)) != len(c.colors):
        out.append("colors must be at least 2 distinct names")
    if not 2 <= c.n_color_options <= min(4, len(c.colors)):
        out.append("n_color_options must be between 2 and min(4, number of colors)")
    if c.patch < 4 or c.image_size % c.patch:
        out.append("image_size must be a multiple of patch (patch >= 4)")
    if not 1 <= c.min_objects <= c.max_objects <= min(9, c.grid * c.grid):
        out.append("need 1 <= min_objects <= max_objects <= min(9, grid cells)")
    if not c.usual_counts or min(c.usual_counts) < 1 or max(c.usual_counts) + 1 > c.max_objects:
        out.append(
            "usual_counts must be >= 1 and leave room for the partner (max + 1 <= max_objects)"
        )
    if not 0.0 <= c.prior_strength <= 1.0:
        out.append("prior_strength must be in [0, 1]")
    if not 0.1 <= c.size_range[0] <= c.size_range[1] <= 1.0:
        out.append("size_range must satisfy 0.1 <= low <= high <= 1")
    if c.n_train < 0 or c.n_eval_per_cell < 2 or c.n_dev_per_cell < 2:
        out.append("n_train must be >= 0, n_eval_per_cell and n_dev_per_cell >= 2")
    return out
