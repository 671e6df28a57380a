"""Modality-balance probes: the same question under different visual conditions.

- `image`       the item's own image (the ordinary evaluation);
- `blind`       a text-only prompt with NO image tokens (method.md's default "no image");
- `mismatched`  another item's image. A black or empty image is out of distribution and makes a
                model answer near chance instead of falling back on its prior (field notes);
                another real image is in distribution and exposes the prior;
- `noise`       a uniform-noise image at model resolution, seeded per item;
- `adversarial` the image after PGD against the reference answer (opt-in: costs K backward
                passes per item; uses mbpo_bench.modality.pgd);
- `backbone`    the blind prompt answered by the VLM's language backbone alone (`--backbone`,
                a text-only causal LM; not in --probes: the option adds it). With `blind` it
                gives MMStar's multimodal leakage;
- `iig`         no generation: log-probs of the reference answer with and without the image, and
                their per-token difference (Image Information Gain).

The stand-in images themselves (mismatched assignment, noise) are built in
`mbpo_bench.modality.images`, shared with the trainers' IIG; this module turns them into prompts.
Determinism decisions: the mismatched assignment is a derangement of the task's DISTINCT image
files (POPE asks six questions about one image; a derangement of items could hand an item its own
picture), seeded by the task name, over items sorted by doc id, so the same items get the same
foreign images in every run and checkpoint (pairing across checkpoints stays valid). Noise is
seeded by crc32(task/doc_id). Nothing depends on batch order or on which items a resumed run
still has to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbpo_bench.errors import UserError, did_you_mean
from mbpo_bench.modality.images import noise_image, stable_seed
from mbpo_bench.models.protocol import Prompt

if TYPE_CHECKING:
    from mbpo_bench.data.items import TaskItem

PROBES: tuple[str, ...] = ("image", "blind", "mismatched", "noise", "adversarial", "iig")
CHEAP_PROBES: tuple[str, ...] = ("image", "blind", "mismatched", "noise", "iig")
BACKBONE = "backbone"  # added by --backbone, answered by the text-only language backbone
GENERATION_PROBES: frozenset[str] = frozenset(
    {"image", "blind", "mismatched", "noise", "adversarial", BACKBONE}
)


def parse_probes(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """'image,blind' -> ('image', 'blind') in canonical order; None or '' -> the cheap probes."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return CHEAP_PROBES
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if names == ["all"]:
        return PROBES
    for name in names:
        if name not in PROBES:
            raise UserError(
                f"unknown probe '{name}'{did_you_mean(name, PROBES)} — "
                f"choose from: {', '.join(PROBES)} (or 'all')"
            )
    return tuple(p for p in PROBES if p in names)


@dataclass(frozen=True)
class ProbeInput:
    """A prompt under a probe plus a short description of the image that was used."""

    prompt: Prompt
    image: str | None  # "path", "mismatched:path", "noise:seed" or None (blind)


def probe_input(
    probe: str,
    item: TaskItem,
    *,
    image_size: int,
    mismatched: dict[str, Path],
    seed: int = 0,
) -> ProbeInput:
    """The prompt for `item` under `probe` (image, blind, mismatched, noise, adversarial).

    The adversarial probe starts from the clean image; the runner perturbs its pixels.
    """
    if probe in ("image", "adversarial"):
        return ProbeInput(Prompt(item.question, item.load_image()), str(item.image_path))
    if probe in ("blind", BACKBONE):
        return ProbeInput(Prompt(item.question, None), None)
    if probe == "mismatched":
        path = mismatched[item.doc_id]
        from mbpo_bench.data.images import load_rgb

        img = load_rgb(path, item=f"{item.task}/{item.doc_id} (mismatched)")
        return ProbeInput(Prompt(item.question, img), f"mismatched:{path}")
    if probe == "noise":
        s = stable_seed(item.task, item.doc_id, "noise", str(seed))
        return ProbeInput(Prompt(item.question, noise_image(image_size, s)), f"noise:{s}")
    raise ValueError(f"probe {probe!r} builds no generation prompt")


def applicable(probe: str, item: TaskItem, mismatched: dict[str, Path]) -> bool:
    """Whether `probe` can run on `item` (text-only items have no image to take away)."""
    if item.image_path is None or probe == BACKBONE:
        return probe in ("image", "blind", BACKBONE)
    if probe == "mismatched":
        return item.doc_id in mismatched
    return True
