"""Input preparation in DataLoader workers (`evaluation/loader.py`) changes speed, not rows.

The workers run the protocol's geometric step and hand over `PreparedImage`s; everything after
(render, tokens, the model) is the path a PIL image takes. Checked here on tiny checkpoints laid
out like the hub folders: the prepared pixels equal the geometric step's bit for bit, and a whole
`eval` with workers writes the same samples.jsonl, byte for byte, as one without.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support_checkpoints import LLAVA, QWEN2, build_real_layout

from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.loader import available_workers, default_workers, prefetched
from mbpo_bench.models.prepared import PreparedImage, prepare_image


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("loader")
    cfg = root / "embedded.yaml"
    cfg.write_text("n_train: 16\nn_eval_per_cell: 2\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(cfg))
        yield {
            "root": root,
            LLAVA: build_real_layout(LLAVA, root / "llava"),
            QWEN2: build_real_layout(QWEN2, root / "qwen2"),
        }


def _photo(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _pid(_: int) -> int:
    return os.getpid()


def test_prefetched_runs_jobs_in_worker_processes_in_order() -> None:
    jobs = list(range(7))
    assert list(prefetched(jobs, lambda j: j * j, workers=2)) == [j * j for j in jobs]
    pids = list(prefetched(jobs, _pid, workers=2))
    assert os.getpid() not in pids and len(set(pids)) == 2
    assert list(prefetched(jobs, _pid, workers=0)) == [os.getpid()] * 7


def test_worker_count_defaults_to_none_on_every_device() -> None:
    # measured: 8 workers were 6-8% slower than none on the H200 (reports/perf/h200/eval_*_640x480.md)
    assert default_workers("cpu") == 0
    assert default_workers("cuda") == 0
    assert default_workers("cpu", 3) == 3
    assert default_workers("cuda", 8) == 8
    assert 0 <= available_workers() <= 8
    with pytest.raises(UserError, match="input_workers -1 is negative"):
        default_workers("cuda", -1)


@pytest.mark.parametrize("layout", [LLAVA, QWEN2])
def test_prepared_images_are_the_geometric_step_bit_for_bit(env, layout) -> None:
    import torch

    from mbpo_bench.models import load_model

    vlm = load_model(env[layout], device="cpu")
    photos = [_photo(640, 480, 0), _photo(300, 500, 1), _photo(48, 48, 2)]
    ready = [prepare_image(vlm.geometry, p) for p in photos]
    for photo, prep in zip(photos, ready, strict=True):
        assert prep.pixels.dtype == torch.uint8  # whole values travel as bytes
        assert torch.equal(prep.to_float(), vlm.geometry.prepare(photo))
        assert vlm.processed_size(prep) == vlm.processed_size(photo) and prep.size == photo.size
    assert torch.equal(vlm.images_to_tensor(ready), vlm.images_to_tensor(photos))
    pinned = ready[0].pin_memory() if torch.cuda.is_available() else ready[0]
    assert isinstance(pinned, PreparedImage)


@pytest.mark.parametrize(
    ("layout", "mode", "probes"),
    [
        pytest.param(QWEN2, "choice", "image,mismatched,iig", marks=pytest.mark.slow),  # ~10 s
        (LLAVA, "generate", "image,blind,iig"),
    ],
)
def test_eval_with_input_workers_writes_the_same_rows(env, layout, mode, probes) -> None:
    from mbpo_bench.cli.main import main

    runs = {}
    for workers in (0, 2):
        out = env["root"] / f"{layout.replace('/', '_')}-{mode}-{workers}"
        argv = ["eval", "--model", str(env[layout]), "--tasks", "mbpo_embedded_color",
                "--output", str(out), "--limit", "4", "--probes", probes, "--max-new-tokens",
                "2", "--no-progress", "--answer-mode", mode, "--set", "batch_size=3",
                "--set", f"input_workers={workers}"]  # fmt: skip
        assert main(argv) == 0
        runs[workers] = (out / "samples.jsonl").read_text()
    assert runs[0] == runs[2]
    assert runs[0].count("\n") >= 8


def test_default_token_budget_cuts_batches_of_720p_qwen_photos(env, tmp_path) -> None:
    """A 1280x720 photo is 1196 Qwen image tokens: the default budget (32768 prompt tokens)
    keeps such a batch to 27 prompts whatever `batch_size` says (questions of a few tokens)."""
    from types import SimpleNamespace

    from mbpo_bench.evaluation.config import EvalConfig
    from mbpo_bench.evaluation.plan import batches
    from mbpo_bench.evaluation.runner import prompt_cost
    from mbpo_bench.models import load_model

    vlm = load_model(env[QWEN2], device="cpu")
    paths = {}
    for w, h in ((1280, 720), (640, 480)):
        paths[w] = tmp_path / f"{w}.png"
        _photo(w, h, 0).save(paths[w])
    items = {
        f"d{i:03d}": SimpleNamespace(question="Is there a dog?", image_path=paths[w])
        for i, w in enumerate([1280] * 60 + [640] * 64)
    }
    plan = SimpleNamespace(
        info=SimpleNamespace(name="t"), items=items, probes={"image": list(items)}
    )
    cost = prompt_cost(vlm)
    assert cost is not None and cost("image", items["d000"])[0] == 1196
    config = EvalConfig()
    out = batches(plan, 128, cost=cost, max_tokens=config.max_batch_tokens)  # type: ignore[arg-type]
    assert [len(b.doc_ids) for b in batches(plan, 128, cost=cost)] == [124]  # no budget
    assert [len(b.doc_ids) for b in out] == [70, 27, 27]  # 391-token photos first (bucketed)
    for b in out:
        assert sum(sum(cost("image", items[d])) for d in b.doc_ids) <= 32768
