"""`mbpo-bench report` on results files made here (no model): golden markdown, missing tasks,
version mismatches, paired CIs and their marks, the figures' files and links, one-line CLI
errors (the figures' content: tests/test_report_figures.py).

Regenerate the golden file after an intended change of the report with
`UPDATE_GOLDEN=1 pytest tests/test_report_render.py` and review its diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from mbpo_bench.cli.main import main
from mbpo_bench.errors import UserError
from mbpo_bench.evaluation.schema import (
    SCHEMA_VERSION,
    BootstrapSettings,
    GenerationSettings,
    Metric,
    ModelInfo,
    ProbeResult,
    Results,
    TaskResult,
)
from mbpo_bench.metrics import bootstrap_ci
from mbpo_bench.reporting import compare, meta_is, render_report, subset_metric

GOLDEN = Path(__file__).parent / "golden" / "report_basic.md"
N = 40
COLOUR, POPE = "mbpo_embedded_colour", "mbpo_pope_random"


def pattern(k: int, start: int = 0, n: int = N) -> list[int]:
    """n answers of which k, from item `start` on (cyclically), are correct."""
    return [int((i - start) % n < k) for i in range(n)]


def prior(i: int) -> str:
    return "consistent" if i % 4 < 2 else "counter"


def _metric(correct: list[int], hib: bool | None = True) -> Metric:
    est = bootstrap_ci([float(c) for c in correct], n_resamples=200, seed=0)
    return Metric(est.value, est.n, est.ci_low, est.ci_high, hib)


def _row(task: str, probe: str, i: int, c: int) -> dict[str, object]:
    """A flat row as mbpo_bench.evaluation.batches writes it (yes/no items, gold alternating)."""
    gold = "yes" if i % 2 == 0 else "no"
    parsed = gold if c else ("no" if gold == "yes" else "yes")
    return {
        "task": task, "probe": probe, "doc_id": f"d{i:03d}", "prompt": "Is there a cube?",
        "image": None, "target": gold, "target_canonical": gold, "options": [],
        "response": parsed.capitalize() + ".", "parsed": parsed, "correct": bool(c),
        "score": float(c), "components": {"format": 1.0}, "meta": {"prior": prior(i)},
    }  # fmt: skip


def _image_metrics(correct: list[int]) -> dict[str, Metric]:
    out = {"accuracy": _metric(correct)}
    for group in ("consistent", "counter"):
        out[f"accuracy[prior={group}]"] = _metric(
            [c for i, c in enumerate(correct) if prior(i) == group]
        )
    return out


def _task(
    task: str, probes: dict[str, list[int]], version: str, iig: float | None
) -> tuple[TaskResult, list[dict[str, object]]]:
    results, rows = {}, []
    for probe, correct in probes.items():
        metrics = _image_metrics(correct) if probe == "image" else {"accuracy": _metric(correct)}
        results[probe] = ProbeResult(probe, len(correct), metrics)
        rows += [_row(task, probe, i, c) for i, c in enumerate(correct)]
    image = results["image"].metrics
    gap = (image["accuracy[prior=consistent]"].value or 0) - (
        image["accuracy[prior=counter]"].value or 0
    )
    balance = {"counter_prior_gap": Metric(gap, N, None, None, False)}
    if "blind" in probes:
        reliance = (sum(probes["image"]) - sum(probes["blind"])) / N
        balance["visual_reliance_blind"] = Metric(reliance, N, None, None, True)
    if task == POPE:
        balance["predicted_yes_ratio"] = Metric(0.5, N, 0.4, 0.6, None)
    if iig is not None:
        values = [iig + 0.05 * (i % 5) for i in range(N)]
        rows += [
            {"task": task, "probe": "iig", "doc_id": f"d{i:03d}", "iig": v}
            for i, v in enumerate(values)
        ]
        results["iig"] = ProbeResult("iig", N, {"iig": _metric(values)})  # type: ignore[arg-type]
        balance["iig_mean"] = results["iig"].metrics["iig"]
    result = TaskResult(
        task, version, "{question} Answer with one word.", "yesno", GenerationSettings(4),
        N, [], results, balance,
    )  # fmt: skip
    return result, rows


def write_run(
    path: Path,
    spec: dict[str, dict[str, list[int]]],
    *,
    version: str = "1",
    iig: float | None = None,
    template: str = "{question} Answer with one word.",
) -> Path:
    """A run folder with results.json, samples.jsonl and provenance files, built by hand."""
    path.mkdir(parents=True)
    tasks, rows = {}, []
    for task, probes in spec.items():
        tasks[task], task_rows = _task(task, probes, version, iig if task == COLOUR else None)
        tasks[task] = dataclasses.replace(tasks[task], prompt_template=template)
        rows += task_rows
    results = Results(
        SCHEMA_VERSION, ModelInfo(f"tiny-{path.name}", "llava", "abcdef0123456789"),
        ["image", "blind", "iig"], BootstrapSettings(200, 0.95, 0), tasks, {"torch": "2.15.0"},
        "0123456789abcdef", "3.11.9", "cpu", 12.5, 10.0, 64.0, len(rows), 0, {},
    )  # fmt: skip
    (path / "results.json").write_text(results.to_json())
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _provenance(path, f"mbpo-bench eval --model {path.name} --output {path.name}")
    return path


def _provenance(path: Path, command: str) -> None:
    (path / "command.txt").write_text(command + "\n")
    (path / "config.yaml").write_text(f"model: {path.name}\nseed: 0\n")
    env = {
        "time": "2026-11-01T12:00:00+00:00", "python": "3.11.9", "platform": "Linux-x86_64",
        "git_sha": "0123456789abcdef0123", "packages": {"torch": "2.15.0", "transformers": "5.24.0"},
        "device": {"cuda": False, "name": "cpu", "count": 0},
    }  # fmt: skip
    (path / "env.json").write_text(json.dumps(env))


def write_training_run(path: Path) -> Path:
    path.mkdir(parents=True)
    rows = [{"step": s, "loss": 2.0 / (s + 1), "reward_mean": s / 10} for s in range(10)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _provenance(path, f"mbpo-bench train mbpo --output {path.name}")
    return path


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    base = write_run(
        tmp_path / "runs" / "base",
        {COLOUR: {"image": pattern(20), "blind": pattern(18)}, POPE: {"image": pattern(30)}},
        iig=0.10,
    )
    mbpo = write_run(
        tmp_path / "runs" / "mbpo",
        {
            COLOUR: {"image": pattern(36), "blind": pattern(10)},
            POPE: {"image": pattern(31, start=3)},
        },
        iig=0.40,
    )
    partial = write_run(tmp_path / "runs" / "partial", {COLOUR: {"image": pattern(21)}})
    train = write_training_run(tmp_path / "runs" / "train_mbpo")
    return {"base": base, "mbpo": mbpo, "partial": partial, "train": train}


def _render(tmp_path: Path, runs: dict[str, Path], **kwargs: object) -> str:
    out = render_report(
        [runs["base"], runs["mbpo"], runs["partial"]],
        baseline=runs["base"],
        out=tmp_path / "reports" / "basic.md",
        training_runs=[runs["train"]],
        **kwargs,  # type: ignore[arg-type]
    )
    return out.read_text()


def test_report_matches_golden(tmp_path: Path, runs: dict[str, Path]) -> None:
    text = _render(tmp_path, runs, title="Golden report")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert _render(tmp_path, runs, title="Golden report") == text  # deterministic


def test_missing_task_is_shown_as_missing_not_zero(tmp_path: Path, runs: dict[str, Path]) -> None:
    text = _render(tmp_path, runs)
    pope = text.split(f"### {POPE}")[1].split("###")[0]
    assert "| image / accuracy | 0.750 [" in pope
    assert pope.count("missing") >= 2  # n and accuracy rows of the run without the task
    average = text.split("## Average over tasks")[1].split("##")[0]
    assert "| partial | 52.5 [" in average and "| missing |" in average
    assert f"`{POPE}`" in average  # named as left out of the average


def test_different_task_versions_are_refused_or_flagged(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", {COLOUR: {"image": pattern(20)}}, version="1")
    b = write_run(tmp_path / "b", {COLOUR: {"image": pattern(25)}}, version="2")
    out = tmp_path / "r.md"
    with pytest.raises(UserError, match=f"task '{COLOUR}'.*version '1' in a vs '2' in b"):
        render_report([a, b], baseline=a, out=out)
    assert not out.exists()
    text = render_report([a, b], baseline=a, out=out, allow_version_mismatch=True).read_text()
    assert "**Warning:** task" in text and f"### {COLOUR} †" in text
    assert f"| {COLOUR} † | acc image |" in text


def test_different_prompt_templates_are_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", {COLOUR: {"image": pattern(20)}})
    b = write_run(tmp_path / "b", {COLOUR: {"image": pattern(25)}}, template="Q: {question}")
    with pytest.raises(UserError, match="prompt template differs between a and b"):
        render_report([a, b], baseline=None, out=tmp_path / "r.md")


def test_paired_ci_excluding_zero_is_marked(tmp_path: Path, runs: dict[str, Path]) -> None:
    text = _render(tmp_path, runs)
    mbpo = text.split("### mbpo vs base")[1].split("###")[0]
    assert f"| {COLOUR} | acc image | 0.500 | 0.900 | +0.400* |" in mbpo
    assert "| average | 0-100 over 1 task | 50.0 | 90.0 | +40.0* |" in mbpo
    assert f"| {COLOUR} | visual reliance vs blind | 0.050 | 0.650 | +0.600* |" in mbpo
    assert f"| {POPE} | counter-prior gap | 0.100 | 0.050 | -0.050 | [-" in mbpo
    assert f"| {POPE} | acc image | 0.750 | 0.775 | +0.025 | [-" in mbpo  # CI includes zero
    partial = text.split("### partial vs base")[1].split("##")[0]
    assert f"| {POPE} | all | missing |" in partial


def test_compare_and_subset_metric(runs: dict[str, Path]) -> None:
    diff, low, high, n = compare(runs["mbpo"], runs["base"], COLOUR, "image")
    assert n == N and diff == pytest.approx(0.4)
    assert low is not None and high is not None and 0 < low < 0.4 < high
    diff, low, high, n = compare(runs["mbpo"], runs["base"], POPE, "image")
    assert diff == pytest.approx(0.025) and low is not None and high is not None
    assert low < 0 < high
    counter = meta_is(prior="counter")
    _, _, _, n_counter = compare(runs["mbpo"], runs["base"], COLOUR, "image", subset=counter)
    assert n_counter == N // 2
    est = subset_metric(runs["base"], COLOUR, subset=counter)
    assert est.n == N // 2 and est.value == pytest.approx(10 / 20)
    with pytest.raises(UserError, match="no samples of task"):
        compare(runs["partial"], runs["base"], POPE, "image")


def test_training_curves_are_one_grid_written_and_linked(
    tmp_path: Path, runs: dict[str, Path]
) -> None:
    text = _render(tmp_path, runs)
    png = tmp_path / "reports" / "basic_curves.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "![Training curves (loss, reward (mean ± spread)); last loss: train_mbpo 0.2]" in text
    assert not list((tmp_path / "reports").glob("basic_curves_*.png"))  # no PNG per metric


def test_cli_writes_report(
    tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports" / "cli.md"
    argv = ["report", str(runs["base"]), str(runs["mbpo"]), "--baseline", str(runs["base"])]
    assert main([*argv, "--out", str(out), "--name", "b", "--name", "m"]) == 0
    assert "### m vs b" in out.read_text()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "has no results.json"),
        (lambda p: (p.mkdir(), (p / "results.json").write_text("{")), "not valid JSON"),
        (
            lambda p: (p.mkdir(), (p / "results.json").write_text('{"schema_version": 1}')),
            "missing",
        ),
        (
            lambda p: (p.mkdir(), (p / "results.json").write_text('{"schema_version": "x"}')),
            "with --overwrite",  # the fix of a file eval wrote, not the config loader's advice
        ),
    ],
)
def test_cli_bad_run_folder_is_one_line(
    tmp_path: Path, make: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    make(bad)  # type: ignore[operator]
    assert main(["report", str(bad), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err and message in err and " — " in err
    assert not (tmp_path / "r.md").exists()


def test_runs_under_different_input_protocols_are_flagged(tmp_path: Path) -> None:
    """The input protocol (models/families.py) is shown per run and a mix is warned about."""
    a = write_run(tmp_path / "a", {COLOUR: {"image": pattern(20)}})
    b = write_run(tmp_path / "b", {COLOUR: {"image": pattern(25)}})
    data = json.loads((b / "results.json").read_text())
    data["protocol"] = "lmms-eval"
    (b / "results.json").write_text(json.dumps(data))
    text = render_report([a, b], baseline=a, out=tmp_path / "r.md").read_text()
    assert "different input protocols (native: a; lmms-eval: b)" in text
    assert "input protocol" in text and "| lmms-eval |" in text  # the runs table's column
    same = render_report([a], baseline=a, out=tmp_path / "s.md").read_text()
    assert "input protocol" not in same


def test_samples_cut_short_are_refused_and_missing_samples_named(
    tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A samples.jsonl holding fewer rows than results.json scored would give CIs and paired
    differences over other items than the point estimate (the report used what was left);
    without samples.jsonl the average has no CI, and the report says so."""
    samples = runs["mbpo"] / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[: len(lines) // 2]))
    argv = ["report", str(runs["base"]), str(runs["mbpo"]), "--out", str(tmp_path / "r.md")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(samples) in err and "that its results.json scored" in err
    assert not (tmp_path / "r.md").exists()

    samples.unlink()
    assert main(argv) == 0
    average = (tmp_path / "r.md").read_text().split("## Average over tasks")[1].split("\n## ")[0]
    assert "No CI on the average of `mbpo`: no samples.jsonl" in average
