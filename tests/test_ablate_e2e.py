"""`mbpo-bench ablate` end to end on a tiny LLaVA and a tiny embedded benchmark: two arms, one
seed, two steps each; then a rerun that skips everything, an interrupted arm that resumes from
its checkpoint, and a rerun with other settings that is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mbpo_bench.ablation.aggregate import QUANTITIES
from mbpo_bench.cli.main import main
from mbpo_bench.runs import read_jsonl

TINY_BENCH = "n_train: 32\nn_eval_per_cell: 4\n"
ARMS = "sft,mbpo-pgd-iig-offline"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    import torch

    from mbpo_bench.models import build_tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ablate")
    (root / "bench.yaml").write_text(TINY_BENCH)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(root / "bench.yaml"))
        yield {"root": root, "model": build_tiny_model("llava", root / "model", seed=0)}


def argv(tiny: dict[str, Path], *extra: str) -> list[str]:
    return [
        "ablate", "--model", str(tiny["model"]), "--data", "mbpo_embedded_color",
        "--output", str(tiny["root"] / "abl"), "--seeds", "0", "--arms", ARMS,
        "--steps", "2", "--batch-size", "4", "--eval-limit", "3", "--no-progress",
        "runtime.threads=1", "runtime.progress=false", "runtime.tensorboard=false",
        "optim.warmup_ratio=0.0", "grpo.num_generations=2", "grpo.max_new_tokens=3",
        "mining.steps=2", "mining.limit=8", "mining.max_new_tokens=3", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_two_arms_train_evaluate_report_and_resume(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny["root"] / "abl"
    assert main(argv(tiny)) == 0
    log = capsys.readouterr().err
    assert "training [sft]" in log and "training [mbpo]" in log and "mining ->" in log
    arms = out / "arms"
    for arm in ("sft", "mbpo-pgd-iig-offline"):
        for step in ("train", "eval"):
            status = json.loads((arms / arm / "seed0" / step / "status.json").read_text())
            assert status["finished"] is True
        assert len(read_jsonl(arms / arm / "seed0" / "train" / "metrics.jsonl")) == 2
    (mining,) = (out / "mining").iterdir()
    assert mining.name.startswith("pgd-iig-seed0-") and (mining / "pairs.parquet").is_file()
    report = (out / "report.md").read_text()
    assert "## mbpo_embedded_color" in report and "| base (start) |" in report
    for arm in ("sft", "mbpo-pgd-iig-offline"):
        line = next(x for x in report.splitlines() if x.startswith(f"| {arm} |"))
        assert "missing" not in line and line.endswith("| 1/1 |"), line
    assert "mbpo-bench train mbpo --model" in report and "mbpo-bench mine --model" in report
    assert "mbpo-bench eval --model" in report and "--limit 3" in report
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert set(per_seed["arm"]) == {"base (start)", "sft", "mbpo-pgd-iig-offline"}
    assert len(per_seed) == 3 * len(QUANTITIES)  # 3 rows (base, 2 arms) x the quantities
    assert per_seed.loc[per_seed["metric"] == "accuracy", "value"].between(0, 1).all()

    # rerun: everything finished is skipped, the report is written again
    report_before = report
    assert main(argv(tiny)) == 0
    log = capsys.readouterr().err
    assert "training" not in log and "evaluating" not in log and "mining ->" not in log
    assert (out / "report.md").read_text() == report_before

    # an arm interrupted after its last checkpoint resumes from it; its evaluation reruns
    train = arms / "sft" / "seed0" / "train"
    (train / "status.json").unlink()
    (arms / "sft" / "seed0" / "eval" / "status.json").unlink()
    assert main(argv(tiny)) == 0
    log = capsys.readouterr().err
    assert "training [sft]" in log and "training [mbpo]" not in log
    assert "resumed from" in (train / "run.log").read_text()
    assert len(read_jsonl(train / "metrics.jsonl")) == 2  # no step was trained twice
    assert json.loads((train / "status.json").read_text())["finished"] is True

    # other settings in the same folder are refused before anything runs
    assert main([*argv(tiny), "optim.lr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "holds a run made with other settings" in err and err.count("\n") == 1
