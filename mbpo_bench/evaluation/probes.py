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

Every probe is one row of `PROBE_TABLE` (how its prompt is made, whether it runs by default,
on text-only items, needs gradients, counts as visual reliance); `PROBES`, `CHEAP_PROBES`,
`RELIANCE_PROBES` and the report's probe order are read from it. A generation probe needs only
its row; `adversarial` and `iig` also have batch functions of their own (batches.py).

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbpo_bench.errors import UserError, did_you_mean
from mbpo_bench.modality.images import noise_image, stable_seed
from mbpo_bench.models.protocol import Prompt

if TYPE_CHECKING:
    from mbpo_bench.data.items import TaskItem


@dataclass(frozen=True)
class ProbeInput:
    """A prompt under a probe plus a short description of the image that was used."""

    prompt: Prompt
    image: str | None  # "path", "mismatched:path", "noise:seed" or None (blind)


def _own_image(
    item: TaskItem, image_size: int, mismatched: dict[str, Path], seed: int
) -> ProbeInput:
    if item.image_path is None:  # a text-only item (HallusionBench has them): as given
        return ProbeInput(Prompt(item.question, None), None)
    return ProbeInput(Prompt(item.question, item.load_image()), str(item.image_path))


def _no_image(
    item: TaskItem, image_size: int, mismatched: dict[str, Path], seed: int
) -> ProbeInput:
    return ProbeInput(Prompt(item.question, None), None)


def _mismatched(
    item: TaskItem, image_size: int, mismatched: dict[str, Path], seed: int
) -> ProbeInput:
    from mbpo_bench.data.images import load_rgb

    path = mismatched[item.doc_id]
    img = load_rgb(path, item=f"{item.task}/{item.doc_id} (mismatched)")
    return ProbeInput(Prompt(item.question, img), f"mismatched:{path}")


def _noise(item: TaskItem, image_size: int, mismatched: dict[str, Path], seed: int) -> ProbeInput:
    s = stable_seed(item.task, item.doc_id, "noise", str(seed))
    return ProbeInput(Prompt(item.question, noise_image(image_size, s)), f"noise:{s}")


Builder = Callable[["TaskItem", int, dict[str, Path], int], ProbeInput]


@dataclass(frozen=True)
class ProbeSpec:
    """One probe: how its prompt is made and what it is for."""

    summary: str
    build: Builder | None  # (item, image_size, mismatched, seed) -> prompt; None: scored (iig)
    default: bool  # run when --probes is not given
    # takes the image away or replaces it: image - probe = `visual_reliance_<name>` (a metric of
    # schema.BALANCE_METRICS)
    reliance: bool = False
    gradients: bool = False  # needs backward passes (PGD)
    on_text_only: bool = False  # also runs on items without an image
    needs_mismatched: bool = False  # needs another image of the task
    selectable: bool = True  # named in --probes (backbone: added by --backbone instead)


BACKBONE = "backbone"  # added by --backbone, answered by the text-only language backbone
# The probe table: the one place a probe is registered. A generation probe needs only its row
# (the runner builds its prompts with `build`); `adversarial` and `iig` also have their own
# batch functions in batches.py (perturbing the pixels, scoring log-probs).
PROBE_TABLE: dict[str, ProbeSpec] = {
    "image": ProbeSpec("the item's own image", _own_image, True, on_text_only=True),
    "blind": ProbeSpec(
        "text only, no image tokens", _no_image, True, reliance=True, on_text_only=True
    ),
    "mismatched": ProbeSpec(
        "another item's image", _mismatched, True, reliance=True, needs_mismatched=True
    ),
    "noise": ProbeSpec("a uniform-noise image", _noise, True, reliance=True),
    "adversarial": ProbeSpec("the image after PGD", _own_image, False, gradients=True),
    "iig": ProbeSpec("image information gain (log-probs)", None, True),
    BACKBONE: ProbeSpec(
        "the language backbone alone", _no_image, False, on_text_only=True, selectable=False
    ),
}
PROBES: tuple[str, ...] = tuple(n for n, s in PROBE_TABLE.items() if s.selectable)
CHEAP_PROBES: tuple[str, ...] = tuple(n for n, s in PROBE_TABLE.items() if s.default)
RELIANCE_PROBES: tuple[str, ...] = tuple(n for n, s in PROBE_TABLE.items() if s.reliance)


def parse_probes(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """'image,blind' -> ('image', 'blind') in canonical order; None or '' -> the cheap probes."""
    selectable = tuple(n for n, s in PROBE_TABLE.items() if s.selectable)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return tuple(n for n, s in PROBE_TABLE.items() if s.default)
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if names == ["all"]:
        return selectable
    for name in names:
        if name not in selectable:
            raise UserError(
                f"unknown probe '{name}'{did_you_mean(name, selectable)} — "
                f"choose from: {', '.join(selectable)} (or 'all')"
            )
    return tuple(p for p in selectable if p in names)


def run_probes(spec: str | Sequence[str] | None, backbone: bool) -> tuple[str, ...]:
    """The probes a run evaluates: the parsed selection, plus the backbone's with `--backbone`."""
    probes = parse_probes(spec)
    return (*probes, BACKBONE) if backbone else probes


def probe_input(
    probe: str,
    item: TaskItem,
    *,
    image_size: int,
    mismatched: dict[str, Path],
    seed: int = 0,
) -> ProbeInput:
    """The prompt for `item` under `probe`, made by its row's `build`.

    The adversarial probe starts from the clean image; the runner perturbs its pixels.
    """
    spec = PROBE_TABLE.get(probe)
    if spec is None or spec.build is None:
        raise ValueError(f"probe {probe!r} builds no generation prompt")
    return spec.build(item, image_size, mismatched, seed)


def applicable(probe: str, item: TaskItem, mismatched: dict[str, Path]) -> bool:
    """Whether `probe` can run on `item` (text-only items have no image to take away)."""
    spec = PROBE_TABLE[probe]
    if item.image_path is None:
        return spec.on_text_only
    if spec.needs_mismatched:
        return item.doc_id in mismatched
    return True
