"""Issue 20, quickstart: its own run folder (report included), normal file modes, a plan line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

# the quickstart's own tiny settings (tests/test_quickstart.py), so both follow its stages
from test_quickstart import TINY_BENCH, TINY_OVERRIDES

from mbpo_bench.cli.main import main
from mbpo_bench.config import load_config
from mbpo_bench.plan import (
    REF_CALIBRATION_S,
    REF_EVAL_SAMPLE_S,
    REF_MBPO_STEP_S,
    REF_SFT_STEP_S,
    quickstart_plan,
)
from mbpo_bench.quickstart import QuickstartConfig, report_path
from mbpo_bench.runs import write_atomic


def test_report_goes_into_the_run_folder_unless_a_path_is_given(tmp_path: Path) -> None:
    cfg = load_config(QuickstartConfig, None, [f"output={tmp_path / 'qs'}"])
    assert report_path(cfg) == tmp_path / "qs" / "report.md"
    cfg = load_config(QuickstartConfig, None, [f"report={tmp_path / 'r.md'}"])
    assert report_path(cfg) == tmp_path / "r.md"


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.txt", "x")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
        existing = tmp_path / "mine.txt"
        existing.write_text("old")
        existing.chmod(0o664)
        write_atomic(existing, "new")
        assert stat.S_IMODE(existing.stat().st_mode) == 0o664, "an existing file keeps its mode"
    finally:
        os.umask(old)


def test_plan_scales_the_reference_costs_by_the_measured_speed() -> None:
    cfg = QuickstartConfig()
    ref = quickstart_plan(cfg, base_cached=False, calibration_s=REF_CALIBRATION_S)
    assert ref.speed == pytest.approx(1.0)
    assert ref.stages["base"] == pytest.approx(cfg.base.optim.steps * REF_SFT_STEP_S)
    assert ref.stages["mbpo"] == pytest.approx(cfg.mbpo.optim.steps * REF_MBPO_STEP_S)
    assert set(ref.stages) == {"base", *cfg.arms, "eval", "report"}
    n_eval = 3 * (1 + len(cfg.arms)) * (cfg.eval_limit or 0) * len(cfg.probes)
    assert ref.stages["eval"] == pytest.approx(n_eval * REF_EVAL_SAMPLE_S)
    twice = quickstart_plan(cfg, base_cached=True, calibration_s=REF_CALIBRATION_S / 2)
    assert "base" not in twice.stages, "a cached base costs nothing"
    assert twice.stages["mbpo"] == pytest.approx(ref.stages["mbpo"] / 2)
    assert "expected ~" in twice.line() and "2.0x" in twice.line()


@pytest.mark.slow
def test_quickstart_keeps_everything_in_its_folder_with_normal_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bench.yaml").write_text(TINY_BENCH)
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(tmp_path / "bench.yaml"))
    monkeypatch.chdir(tmp_path)  # a stray relative write would land here
    old = os.umask(0o022)
    try:
        out = tmp_path / "qs"
        argv = ["quickstart", "--output", str(out), "--threads", "1"]
        assert main([*argv, *TINY_OVERRIDES]) == 0
    finally:
        os.umask(old)
    err = capsys.readouterr().err
    assert "plan:" in err and "expected ~" in err
    assert (out / "report.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml", "cache", "qs"]
    # the report's figures sit beside it: one of each kind, one curves grid (no PNG per metric)
    assert sorted(p.name for p in out.rglob("*.png")) == [
        "report_balance_mbpo_embedded.png", "report_curves.png", "report_findings.png",
        "report_forest.png",
    ]  # fmt: skip
    files = [p for p in out.rglob("*") if p.is_file()]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert {m for m in modes.values()} == {0o644}, {
        p: oct(m) for p, m in modes.items() if m != 0o644
    }
