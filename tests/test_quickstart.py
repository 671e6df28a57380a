"""The quickstart: its findings follow the CIs, its base is cached, and the pipeline runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from mbpo_bench.cli.main import main
from mbpo_bench.config import load_config
from mbpo_bench.quickstart import QuickstartConfig, base_fingerprint
from mbpo_bench.quickstart_report import Diff, _verdict

TINY_BENCH = "n_train: 200\nn_eval_per_cell: 4\nn_dev_per_cell: 2\n"
TINY_OVERRIDES = [
    "base.optim.steps=4",
    "base.optim.batch_size=4",
    "mbpo.optim.steps=2",
    "mbpo.optim.batch_size=2",
    "mbpo.mining.limit=8",
    "mbpo.mining.steps=2",
    "mbpo.grpo.num_generations=2",
    "mbpo.grpo.oversample=1",
    "mbpo.mining.iig_filter=false",
    "mbpo.mining.keep=wrong",
    "mbpo_twins.optim.steps=2",
    "mbpo_twins.optim.batch_size=4",
    "mbpo_twins.mining.steps=2",
    "mbpo_twins.mining.iig_filter=false",
    "mbpo_twins.mining.keep=wrong",
    "mbpo.mining.require_clean_correct=false",
    "mbpo_twins.mining.require_clean_correct=false",
    "mbpo_twins.grpo.num_generations=2",
    "mbpo_twins.grpo.oversample=1",
    "probes=[image, blind, mismatched]",
]


@pytest.mark.parametrize(
    ("diff", "want", "shown"),
    [
        (Diff(0.10, 0.02, 0.18, 900), "gain", True),
        (Diff(0.10, -0.01, 0.21, 900), "gain", False),
        (Diff(-0.01, -0.03, 0.01, 900), "no loss", True),
        (Diff(-0.05, -0.08, -0.02, 900), "no loss", False),
    ],
)
def test_a_claim_is_shown_only_when_its_ci_says_so(diff: Diff, want: str, shown: bool) -> None:
    assert _verdict(diff, want).startswith("**shown**") is shown


def test_base_fingerprint_follows_what_shapes_the_base() -> None:
    default = QuickstartConfig()
    assert base_fingerprint(default) == base_fingerprint(QuickstartConfig())
    assert base_fingerprint(default) != base_fingerprint(
        load_config(QuickstartConfig, None, ["base.optim.steps=7"])
    )
    # CPU matmuls sum in a thread-count-dependent order: another count is another base
    one, two = (dataclasses.replace(default, threads=n) for n in (1, 2))
    assert base_fingerprint(one) != base_fingerprint(two)
    # the MBPO stage and the evaluation do not invalidate the cached base
    assert base_fingerprint(default) == base_fingerprint(
        load_config(QuickstartConfig, None, ["mbpo.optim.steps=7"])
    )


def test_unknown_override_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quickstart", "mbpo.optim.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'QuickstartConfig.mbpo.optim.stepz' (did you mean: steps?)" in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seeds=0", "seeds must be at least 1"),
        ("arms=[mbpo, dpo2]", "unknown arms"),
        ("arms=[sft_mined]", "arm sft_mined is matched to mbpo"),
        ("jobs=0", "jobs must be at least 1"),
        ("control_lr=-1", "control_lr must be positive"),
    ],
)
def test_bad_seeds_and_arms_are_refused_before_any_stage(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    assert main(["quickstart", "--output", str(out), override]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_control_steps_is_refused_before_any_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    assert main(["quickstart", "--output", str(out), "control_steps=0"]) != 0
    assert "control_steps must be at least 1" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_quickstart_runs_end_to_end_and_reuses_the_cached_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bench.yaml").write_text(TINY_BENCH)
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(tmp_path / "bench.yaml"))
    argv = [
        "quickstart",
        "--output",
        str(tmp_path / "qs"),
        "--report",
        str(tmp_path / "r" / "qs.md"),
        "--threads",
        "1",
    ]
    assert main([*argv, *TINY_OVERRIDES]) == 0
    text = (tmp_path / "r" / "qs.md").read_text()
    assert "## Findings" in text and "**Split: `test`**" in text and "**Seeds: 1**" in text
    assert "one seed: no across-seed interval" in text  # one seed shows nothing
    for run in ("base", "mbpo", "sft_mined", "mbpo_twins", "sft_twins"):
        assert (tmp_path / "qs" / f"eval_{run}" / "results.json").is_file()
    cached = json.loads((tmp_path / "qs" / "timings.json").read_text())["base_cached"]
    assert cached is False
    # the matched control trains on the mined items with MBPO's optimizer settings, at the
    # learning rate chosen for the controls on dev (`control_lr`)
    sft = yaml.safe_load((tmp_path / "qs" / "sft_mined" / "config.yaml").read_text())
    mbpo = yaml.safe_load((tmp_path / "qs" / "mbpo" / "config.yaml").read_text())
    matched = {**mbpo["optim"], "lr": QuickstartConfig().control_lr}
    assert sft["optim"] == matched and sft["preference_data"].endswith("pairs.parquet")
    two = [*argv, "--seeds", "2", "--split", "dev", "control_steps=3",
           "arms=[mbpo, sft_mined, grpo_mined, dpo, dpo_mdpo, sft_balanced, sft_time]"]  # fmt: skip
    assert main([*two, *TINY_OVERRIDES]) == 0
    text = (tmp_path / "r" / "qs.md").read_text()
    assert "**Split: `dev`**" in text and "**Seeds: 2** (0, 1)" in text
    for seed in (0, 1):
        assert json.loads((tmp_path / "qs" / f"seed{seed}" / "timings.json").read_text())
    for arm in ("grpo_mined", "dpo", "dpo_mdpo", "sft_balanced"):  # matched to mbpo's optimizer
        cfg = yaml.safe_load((tmp_path / "qs" / "seed0" / arm / "config.yaml").read_text())
        assert cfg["optim"] == matched, arm
        assert f"{arm} - base" not in text and f"mbpo - {arm}, pair accuracy" in text
    dpo = yaml.safe_load((tmp_path / "qs" / "seed0" / "dpo_mdpo" / "config.yaml").read_text())
    assert dpo["mdpo_weight"] == 1.0 and dpo["data"].endswith("pairs.parquet")
    assert json.loads((tmp_path / "qs" / "seed0" / "timings.json").read_text())["base_cached"]
    rows = (tmp_path / "qs" / "seed1" / "sft_time" / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in rows if r.strip()]) == 3, "a fixed control_steps replaces the time match"
    # the report alone, from the folders: the same findings, nothing retrained
    before = (tmp_path / "qs" / "seed0" / "mbpo" / "metrics.jsonl").stat().st_mtime_ns
    (tmp_path / "r" / "qs.md").unlink()
    assert main([*two, *TINY_OVERRIDES, "report_only=true"]) == 0
    assert "**Seeds: 2** (0, 1)" in (tmp_path / "r" / "qs.md").read_text()
    assert (tmp_path / "qs" / "seed0" / "mbpo" / "metrics.jsonl").stat().st_mtime_ns == before
    assert main([*argv, "--seeds", "3", "report_only=true", *TINY_OVERRIDES]) == 2


@pytest.mark.parametrize("given", [False, True])
def test_output_comes_from_the_config_file_unless_given_on_the_command_line(
    given: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mbpo_bench.quickstart as quickstart

    seen: list[QuickstartConfig] = []

    def fake_run(cfg: QuickstartConfig) -> Path:
        seen.append(cfg)
        return tmp_path / "report.md"

    monkeypatch.setattr(quickstart, "run_quickstart", fake_run)
    config = tmp_path / "qs.yaml"
    config.write_text(f"output: {tmp_path / 'from_file'}\n")
    cli = ["--output", str(tmp_path / "from_cli")] if given else []
    assert main(["quickstart", "--quiet", "--config", str(config), *cli]) == 0
    assert seen[0].output == tmp_path / ("from_cli" if given else "from_file")


def test_report_only_with_a_damaged_timings_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was a JSONDecodeError traceback."""
    (tmp_path / "timings.json").write_text("{{")
    assert main(["quickstart", "--output", str(tmp_path), "--no-progress", "report_only=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "timings.json") in errors[0]
    assert "not valid JSON" in errors[0] and " — delete it to report without seed 0" in errors[0]
