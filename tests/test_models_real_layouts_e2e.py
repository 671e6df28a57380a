"""`eval`, `mine` and a 2-step `train grpo` run on folders laid out like the hub checkpoints.

On this install (CPU torch, no torchvision) `AutoProcessor` cannot build a Qwen processor: these
runs are what a user with a plain `pip install -e .` meets. Each run records its input protocol;
samples.jsonl says, per item, the processed image size and its image-token count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_checkpoints import LLAVA, QWEN2, QWEN25, QWEN25_OLD, build_real_layout

from mbpo_bench.cli.main import main
from mbpo_bench.evaluation.schema import Results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("real_e2e")
    cfg = root / "embedded.yaml"
    cfg.write_text("n_train: 16\nn_eval_per_cell: 2\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(cfg))
        folders = {
            layout: build_real_layout(layout, root / layout.replace("/", "__").replace("@", "_"))
            for layout in (LLAVA, QWEN2, QWEN25, QWEN25_OLD)
        }
        yield {"root": root, **folders}


@pytest.mark.parametrize(
    ("layout", "protocol"),
    [(LLAVA, "native"), (LLAVA, "original"), (QWEN2, "native"), (QWEN25, "lmms-eval"),
     (QWEN25_OLD, "native")],
)  # fmt: skip
def test_eval_runs_and_records_the_protocol(env, layout, protocol):
    out = env["root"] / f"eval-{layout.replace('/', '_')}-{protocol}"
    argv = ["eval", "--model", str(env[layout]), "--tasks", "mbpo_embedded_color", "--output",
            str(out), "--limit", "2", "--probes", "image,blind,iig", "--max-new-tokens", "2",
            "--no-progress", "--protocol", protocol]  # fmt: skip
    assert main(argv) == 0
    res = Results.read(out / "results.json")
    assert res.protocol == protocol and res.config["runtime"]["protocol"] == protocol
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    shown = [r for r in rows if r["probe"] in ("image", "iig")]
    assert shown and all(r["protocol"] == protocol for r in rows)
    # embedded images are 48 px: LLaVA resizes + crops to 336 (576 features: CLS dropped)
    for r in shown:
        h, w = r["image_hw"]
        if layout == LLAVA:
            assert (h, w, r["image_tokens"]) == (336, 336, 576)
        else:
            assert r["image_tokens"] == h * w // (28 * 28)
    assert all(r["image_tokens"] == 0 for r in rows if r["probe"] == "blind")


def test_eval_refuses_a_protocol_the_family_lacks(env, capsys):
    out = env["root"] / "refused"
    argv = ["eval", "--model", str(env[QWEN2]), "--tasks", "mbpo_embedded_color", "--output", str(out),
            "--no-progress", "--protocol", "original"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "protocol 'original' is not defined for model family 'qwen2_vl'" in err[0]
    )
    assert not out.exists()


@pytest.mark.parametrize("layout", [LLAVA, QWEN2, QWEN25])
def test_mine_and_two_grpo_steps_run(env, layout):
    tag = layout.replace("/", "_")
    mined = env["root"] / f"mine-{tag}"
    assert main(["mine", "--model", str(env[layout]), "--data", "embedded", "--output",
                 str(mined), "--quiet", "limit=4", "mining.steps=1",
                 "mining.max_new_tokens=2"]) == 0  # fmt: skip
    assert (mined / "pairs.parquet").exists() or (mined / "pairs.stats.json").exists()
    run = env["root"] / f"grpo-{tag}"
    code = main(["train", "grpo", "--model", str(env[layout]), "--data", "embedded",
                 "--output", str(run), "--quiet", "optim.steps=2", "optim.batch_size=2",
                 "grpo.num_generations=2", "grpo.max_new_tokens=2", "runtime.save_every=2",
                 "runtime.tensorboard=false", "runtime.progress=false"])  # fmt: skip
    assert code == 0
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "step" in m][-1] == 2
