"""Probe construction: derangement, mismatched images, noise, probe selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mbpo_bench.data.items import TaskItem
from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.probes import CHEAP_PROBES, applicable, parse_probes, probe_input
from mbpo_bench.modality.images import derangement, mismatched_images, noise_image


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 60), st.integers(0, 10_000))
def test_derangement_has_no_fixed_point(n: int, seed: int) -> None:
    p = derangement(n, seed)
    assert sorted(p) == list(range(n))
    assert all(p[i] != i for i in range(n))
    assert derangement(n, seed) == p


def _items(tmp_path: Path, n_images: int, per_image: int) -> list[TaskItem]:
    items = []
    for i in range(n_images):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(path)
        for j in range(per_image):
            items.append(TaskItem("t", f"{i}-{j}", f"q{j}?", "yes", "yesno", path))
    return items


def test_mismatched_never_uses_the_items_own_image(tmp_path: Path) -> None:
    items = _items(tmp_path, 5, 3)  # POPE-like: several questions per image
    mm = mismatched_images(items, seed=0)
    assert set(mm) == {it.doc_id for it in items}
    for it in items:
        assert mm[it.doc_id] != it.image_path
    # questions about the same image get the same foreign image (a consistent swap)
    assert mm["0-0"] == mm["0-1"] == mm["0-2"]
    assert mismatched_images(list(reversed(items)), seed=0) == mm


def test_mismatched_not_applicable_with_one_image(tmp_path: Path) -> None:
    items = _items(tmp_path, 1, 2)
    mm = mismatched_images(items)
    assert mm == {}
    assert not applicable("mismatched", items[0], mm)
    assert applicable("blind", items[0], mm)


def test_probe_inputs(tmp_path: Path) -> None:
    items = _items(tmp_path, 2, 1)
    mm = mismatched_images(items)
    it = items[0]
    blind = probe_input("blind", it, image_size=4, mismatched=mm)
    assert blind.prompt.image is None and blind.image is None and blind.prompt.text == it.question
    img = probe_input("image", it, image_size=4, mismatched=mm)
    # decoded as stored (8 px): the model's input protocol does the geometry, not the probe
    assert img.prompt.image is not None and img.prompt.image.size == (8, 8)
    mis = probe_input("mismatched", it, image_size=4, mismatched=mm)
    assert mis.image == f"mismatched:{items[1].image_path}"
    n1 = probe_input("noise", it, image_size=4, mismatched=mm)
    n2 = probe_input("noise", it, image_size=4, mismatched=mm)
    assert n1.image == n2.image and n1.image is not None and n1.image.startswith("noise:")
    assert n1.prompt.image is not None and n2.prompt.image is not None
    assert np.array_equal(np.asarray(n1.prompt.image), np.asarray(n2.prompt.image))


def test_every_probe_that_runs_on_a_text_only_item_builds_a_text_only_prompt() -> None:
    """A row without an image (HallusionBench has them; the first-hour fuzz made one in a POPE
    file) runs under `image` as given, not as a ValueError out of `eval` (it was one)."""
    it = TaskItem("t", "0", "Is the sky blue? Answer yes or no.", "yes", "yesno", None)
    for probe in ("image", "blind"):
        assert applicable(probe, it, {})
        built = probe_input(probe, it, image_size=4, mismatched={})
        assert built.prompt.image is None and built.image is None
        assert built.prompt.text == it.question


def test_noise_image_is_seeded() -> None:
    a, b = noise_image(6, 1), noise_image(6, 2)
    assert a.size == (6, 6) and a.mode == "RGB"
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_parse_probes() -> None:
    assert parse_probes(None) == CHEAP_PROBES
    assert parse_probes("blind,image") == ("image", "blind")
    assert "adversarial" in parse_probes("all")
    with pytest.raises(UserError, match="did you mean: mismatched"):
        parse_probes("image,mismatch")
