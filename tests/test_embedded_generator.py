"""The embedded benchmark generator: determinism, caching, balance, answer vocabulary, images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mbpo_bench.data.embedded import KINDS, EmbeddedConfig, dataset_dir, generate_embedded
from mbpo_bench.data.embedded_config import ANSWER_WORDS, COLOR_RGB
from mbpo_bench.errors import UserError

SMALL = EmbeddedConfig(seed=3, n_train=300, n_eval_per_cell=24, n_dev_per_cell=12)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_embedded(SMALL, tmp_path_factory.mktemp("cache"))


def test_same_seed_same_bytes_and_cache_is_reused(small: Path, tmp_path: Path) -> None:
    again = generate_embedded(SMALL, tmp_path)
    assert _digest(again) == _digest(small)
    marker = again / "FINISHED"
    before = marker.stat().st_mtime_ns
    assert generate_embedded(SMALL, tmp_path) == again
    assert marker.stat().st_mtime_ns == before
    assert not [p for p in tmp_path.rglob(".*tmp*")]  # no temporary folder left behind


def test_cache_folder_is_keyed_by_config(tmp_path: Path) -> None:
    a = dataset_dir(SMALL, tmp_path)
    assert a == tmp_path / "embedded" / SMALL.fingerprint()
    assert dataset_dir(EmbeddedConfig(seed=4, n_train=300, n_eval_per_cell=24), tmp_path) != a


def test_default_cache_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path))
    assert dataset_dir(SMALL).parent.parent == tmp_path


@pytest.mark.parametrize("split", ["test", "dev"])
def test_eval_splits_are_twin_pairs_balanced_and_labelled(small: Path, split: str) -> None:
    n_pairs = SMALL.n_eval_per_cell if split == "test" else SMALL.n_dev_per_cell
    for kind in KINDS:
        rows = pq.read_table(small / kind / f"{split}.parquet").to_pylist()
        assert len(rows) == 2 * n_pairs
        priors = [r["prior"] for r in rows]
        assert priors.count("consistent") == priors.count("counter")
        assert priors[:2] == ["consistent", "counter"]  # interleaved: prefixes stay balanced
        for twin, counter in zip(rows[::2], rows[1::2], strict=True):
            assert (
                twin["pair_id"] == counter["pair_id"] and twin["pair_cell"] == counter["pair_cell"]
            )
            # the same text and options; only the answer (and the image) differ
            assert twin["question"] == counter["question"] and twin["options"] == counter["options"]
            assert twin["answer"] == twin["prior_answer"] == counter["prior_answer"]
            assert counter["answer"] != counter["prior_answer"]
    existence = pq.read_table(small / "existence" / f"{split}.parquet").to_pylist()
    for cell in ("consistent", "counter"):
        answers = [r["answer"] for r in existence if r["prior"] == cell]
        assert answers.count("yes") == answers.count("no")
    splits = {r["negative_split"] for r in existence if r["answer"] == "no"}
    assert splits == {"random", "popular", "adversarial"}
    assert all(r["prior"] == "counter" for r in existence if r["negative_split"] == "adversarial")
    assert all(r["negative_split"] is None for r in existence if r["answer"] == "yes")


def test_dev_and_test_are_different_items(small: Path) -> None:
    for kind in KINDS:
        test = pq.read_table(small / kind / "test.parquet").to_pylist()
        dev = pq.read_table(small / kind / "dev.parquet").to_pylist()
        images = {(small / r["image"]).read_bytes() for r in test}
        assert sum((small / r["image"]).read_bytes() in images for r in dev) < len(dev) // 4
        assert not {r["doc_id"] for r in test} & {r["doc_id"] for r in dev}


@pytest.mark.parametrize("kind", KINDS)
def test_twin_scene_changes_only_the_asked_attribute(kind: str) -> None:
    import random
    from collections import Counter

    from mbpo_bench.data.embedded_scenes import World, eval_pair

    world = World.from_config(SMALL)
    rng = random.Random(0)
    for index in range(200):
        (twin, _), (counter, row) = eval_pair(kind, index, rng, SMALL, world, Counter())
        shape, query = row["shape"], row["query"]
        asked = query if kind == "existence" else shape
        rest_t = sorted((o for o in twin if o.shape != asked), key=lambda o: o.cell)
        rest_c = sorted((o for o in counter if o.shape != asked), key=lambda o: o.cell)
        assert rest_t == rest_c  # every object not asked about is untouched
        mine_t = [o for o in twin if o.shape == asked]
        mine_c = [o for o in counter if o.shape == asked]
        if kind == "color":
            assert [(o.cell, o.size) for o in mine_t] == [(o.cell, o.size) for o in mine_c]
            assert {o.color for o in mine_t} == {world.usual_color[shape]}
        elif kind == "count":
            assert len(mine_t) == world.usual_count[shape] != len(mine_c)
            small_, big = sorted((mine_t, mine_c), key=len)
            assert set(small_) <= set(big)  # objects are added or removed, never moved
        else:
            assert bool(mine_t) != bool(mine_c)


def test_training_twins_pair_every_counter_prior_training_row(small: Path) -> None:
    for kind in KINDS:
        train = pq.read_table(small / kind / "train.parquet").to_pylist()
        twins = {
            r["pair_id"]: r for r in pq.read_table(small / kind / "train_twins.parquet").to_pylist()
        }
        counter = [r for r in train if r["prior"] == "counter"]
        assert counter and len(twins) == len(counter)
        for r in counter:
            twin = twins[r["doc_id"]]
            assert r["pair_id"] == r["doc_id"] and twin["question"] == r["question"]
            assert twin["answer"] == r["prior_answer"] and twin["prior"] == "consistent"
        assert all(r["pair_id"] is None for r in train if r["prior"] == "consistent")


def test_training_split_follows_priors_at_strength_p(small: Path) -> None:
    rows = pq.read_table(small / "color" / "train.parquet").to_pylist()
    follows = sum(r["scene_follows_prior"] for r in rows) / len(rows)
    assert abs(follows - SMALL.prior_strength) < 0.06
    world = json.loads((small / "world.json").read_text())
    stats = json.loads((small / "stats.json").read_text())
    for shape, counts in stats["cooccurrence"].items():  # adversarial = top co-occurring shape
        assert max(counts, key=counts.get) == world["partner"][shape]


def test_answers_and_options_use_the_single_token_vocabulary(small: Path) -> None:
    for kind in KINDS:
        for split in ("train", "train_twins", "test", "dev"):
            for r in pq.read_table(small / kind / f"{split}.parquet").to_pylist():
                assert r["answer"] in ANSWER_WORDS
                assert set(r["options"]) <= ANSWER_WORDS
                if kind == "color":
                    assert r["answer"] in r["options"] and len(r["options"]) == 4


def test_images_put_one_object_per_patch(small: Path) -> None:
    rows = pq.read_table(small / "color" / "test.parquet").to_pylist()
    background = COLOR_RGB[SMALL.background]
    for r in rows[:10]:
        img = Image.open(small / r["image"]).convert("RGB")
        assert img.size == (48, 48)
        centres = [img.getpixel((16 * (c % 3) + 8, 16 * (c // 3) + 8)) for c in range(9)]
        # rings are hollow; every other shape covers its cell centre
        filled = sum(px != background for px in centres)
        assert filled <= r["n_objects"]
        # nothing is drawn on the borders between patches' outer rows (objects stay in cells)
        assert img.getpixel((0, 0)) == background


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shapes": ("circle", "blob", "star", "square")}, "unknown shapes"),
        ({"colors": ("red", "mauve")}, "unknown colors"),
        ({"background": "red"}, "also an object color"),
        ({"image_size": 50}, "multiple of patch"),
        ({"prior_strength": 1.5}, "prior_strength"),
        ({"max_objects": 2}, "usual_counts"),
    ],
)
def test_bad_configs_are_user_errors(change: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        EmbeddedConfig(**change)  # type: ignore[arg-type]


def test_defaults_are_the_documented_sizes() -> None:
    config = EmbeddedConfig()
    assert (config.image_size, config.patch, config.grid) == (48, 16, 3)
    assert config.n_train == 20000 and config.n_eval_per_cell >= 500
    assert config.prior_strength == 0.9


def test_output_does_not_depend_on_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mbpo_bench.data.embedded as embedded

    monkeypatch.setattr(embedded, "POOL_MIN_JOBS", 10)
    config = EmbeddedConfig(seed=8, n_train=200, n_eval_per_cell=2, n_dev_per_cell=2)
    one = generate_embedded(config, tmp_path / "one", workers=1)
    two = generate_embedded(config, tmp_path / "two", workers=2)
    assert _digest(one) == _digest(two)


def test_task_version_follows_the_generator_version() -> None:
    """Results carry the task version, and `mbpo-bench report` refuses to compare versions: the
    embedded tasks' version must move with the generator's, so v2 results are never mixed in."""
    from mbpo_bench.data.embedded_config import GENERATOR_VERSION
    from mbpo_bench.data.registry import get_task

    for kind in KINDS:
        assert str(get_task(f"mbpo_embedded_{kind}").version) == str(GENERATOR_VERSION) == "3"
