"""`mbpo-bench eval` end to end on a tiny LLaVA and a small embedded benchmark, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mbpo_bench.cli.main import main
from mbpo_bench.evaluation.schema import Results
from mbpo_bench.evaluation.scoring import recompute_results


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A tiny model and a small embedded benchmark config (restored env afterwards)."""
    import torch

    from mbpo_bench.models import build_tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval_e2e")
    cfg = root / "embedded.yaml"
    cfg.write_text("n_train: 40\nn_eval_per_cell: 6\n")
    with pytest.MonkeyPatch.context() as mp:  # restored even when the setup fails
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(cfg))
        model = build_tiny_model("llava", root / "llava")
        yield {"root": root, "model": model}


def _eval(env: dict[str, Path], out: Path, *extra: str) -> int:
    argv = ["eval", "--model", str(env["model"]), "--tasks", "embedded", "--output", str(out),
            "--batch-size", "4", "--no-progress", *extra]  # fmt: skip
    return main(argv)


def _comparable(res: Results) -> dict[str, Any]:
    d = res.to_dict()
    for key in ("wall_time_s", "compute_time_s", "samples_per_s", "packages", "git_sha", "python"):
        d.pop(key)
    d["config"].pop("output")
    return d


def test_embedded_suite_with_all_cheap_probes(env: dict[str, Path]) -> None:
    out = env["root"] / "run"
    assert _eval(env, out, "--limit", "5") == 0
    res = Results.read(out / "results.json")
    assert res == recompute_results(out)  # results.json is what the JSONL says
    assert set(res.tasks) == {
        "mbpo_embedded_existence",
        "mbpo_embedded_color",
        "mbpo_embedded_count",
    }
    for task in res.tasks.values():
        assert set(task.probes) == {"image", "blind", "mismatched", "noise", "iig"}
        assert all(p.n == 5 for p in task.probes.values())
        assert {"visual_reliance_blind", "visual_reliance_mismatched", "iig_mean"} <= set(
            task.balance
        )
        assert "counter_prior_gap" in task.probes["image"].metrics  # the task's own metric
    assert "predicted_yes_ratio" in res.tasks["mbpo_embedded_existence"].balance
    assert res.model.content_hash is not None and res.model.content_hash.startswith("sha256:")
    assert json.loads((out / "status.json").read_text())["finished"] is True
    # a finished run is not overwritten by accident
    assert _eval(env, out, "--limit", "5") != 0


def test_unknown_task_suggests_names(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = env["root"] / "unknown"
    code = main(
        [
            "eval",
            "--model",
            str(env["model"]),
            "--tasks",
            "mbpo_embeded_color",
            "--output",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "unknown task 'mbpo_embeded_color'" in err and "mbpo_embedded_color" in err
    assert not out.exists()


def test_probes_that_apply_to_no_item_are_refused_or_named(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`mismatched` needs two distinct images: with --limit 1 it covers nothing. Alone, the run
    would finish with no samples (it did: the first-hour fuzz found it); now it is refused
    before the model loads. Beside a probe that runs, its absence is named on stderr."""
    out = env["root"] / "nothing"
    code = _eval(env, out, "--limit", "1", "--probes", "mismatched")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "nothing to evaluate: probe mismatched applies to no item of mbpo_embedded_" in err
    assert "needs at least 2 distinct images, the task has 1" in err and " — " in err
    assert not out.exists()  # refused before the run folder is made

    out = env["root"] / "partial"
    assert _eval(env, out, "--limit", "1", "--probes", "image,mismatched") == 0
    warnings = [w for w in capsys.readouterr().err.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 3 and all("probe mismatched applies to no item" in w for w in warnings)
    res = Results.read(out / "results.json")
    assert all(set(t.probes) == {"image"} for t in res.tasks.values())


def test_model_that_fails_to_load(env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    broken = env["root"] / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    out = env["root"] / "broken_run"
    code = main(["eval", "--model", str(broken), "--tasks", "mbpo_embedded_color", "--output", str(out),
                 "--limit", "2", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and str(broken) in err
    assert not out.exists()  # nothing half-made blocks the corrected command


def test_missing_data_names_path_and_variable(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = env["root"] / "user_tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text(
        "task: user_pope\noutput_type: generate_until\nmetadata:\n  verifier: yesno\n"
        "  data: {source: local, dir: user_pope, adapter: mbpo_bench.tasks.adapters.pope}\n"
    )
    monkeypatch.setenv("MBPO_BENCH_DATA", str(env["root"] / "nodata"))
    code = main(["eval", "--model", str(env["model"]), "--tasks", "user_pope", "--include-path", str(tasks),
                 "--output", str(env["root"] / "nodata_run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert str(env["root"] / "nodata" / "user_pope") in err and "MBPO_BENCH_DATA" in err


def _first_image(out_rows: Path) -> tuple[str, Path]:
    row = json.loads((out_rows / "samples.jsonl").read_text().splitlines()[0])
    return row["doc_id"], Path(row["image"])


def test_bad_image_fails_by_default_and_is_skipped_on_request(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    probe_run = env["root"] / "probe_run"
    assert main(["eval", "--model", str(env["model"]), "--tasks", "mbpo_embedded_color", "--output",
                 str(probe_run), "--limit", "2", "--probes", "image", "--no-progress"]) == 0  # fmt: skip
    doc_id, image = _first_image(probe_run)
    original = image.read_bytes()
    image.write_bytes(b"not an image")
    try:
        out = env["root"] / "bad"
        args = ["eval", "--model", str(env["model"]), "--tasks", "mbpo_embedded_color", "--output", str(out),
                "--limit", "3", "--probes", "image,blind", "--no-progress"]  # fmt: skip
        capsys.readouterr()
        assert main(args) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and doc_id in err and str(image) in err
        assert not (out / "results.json").exists()
        assert main([*args, "--skip-bad-items", "--output", str(env["root"] / "skipped")]) == 0
        res = Results.read(env["root"] / "skipped" / "results.json")
        task = res.tasks["mbpo_embedded_color"]
        assert (
            res.items_skipped == 1 and task.n_items == 2 and task.items_skipped[0].doc_id == doc_id
        )
    finally:
        image.write_bytes(original)


@pytest.mark.slow
def test_kill_9_and_resume_equals_uninterrupted_run(env: dict[str, Path]) -> None:
    full, cut = env["root"] / "full", env["root"] / "cut"
    args = ["--limit", "12", "--batch-size", "1"]
    assert _eval(env, full, *args) == 0
    cmd = [sys.executable, "-m", "mbpo_bench", "eval", "--model", str(env["model"]), "--tasks", "embedded",
           "--output", str(cut), "--no-progress", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    samples = cut / "samples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if samples.exists() and len(samples.read_bytes().splitlines()) >= 20:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    n_before = len(samples.read_bytes().splitlines())
    total = 3 * 12 * 5
    assert 20 <= n_before < total and not (cut / "results.json").exists()
    assert _eval(env, cut, *args) == 0
    resumed, uninterrupted = Results.read(cut / "results.json"), Results.read(full / "results.json")
    assert _comparable(resumed) == _comparable(uninterrupted)
    assert len(recompute_results(cut).tasks) == 3
    shutil.rmtree(cut)


@pytest.mark.slow
@pytest.mark.lmms
def test_lmms_eval_backend_equals_native_image_probe(env: dict[str, Path]) -> None:
    pytest.importorskip("lmms_eval")
    native, lmms = env["root"] / "native_img", env["root"] / "lmms_img"
    assert _eval(env, native, "--limit", "4", "--probes", "image") == 0
    assert _eval(env, lmms, "--limit", "4", "--probes", "image", "--backend", "lmms-eval") == 0
    a, b = Results.read(native / "results.json"), Results.read(lmms / "results.json")
    assert a.tasks == b.tasks
    assert b.config["backend"] == "lmms-eval"


def test_lmms_eval_backend_refuses_probes_it_cannot_run(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _eval(env, env["root"] / "lmms_refused", "--limit", "2", "--backend", "lmms-eval")
    err = capsys.readouterr().err.strip()
    assert code != 0 and "image probe only" in err and len(err.splitlines()) == 1


def test_adversarial_probe_is_opt_in_and_configurable(env: dict[str, Path]) -> None:
    out = env["root"] / "adv"
    args = ["eval", "--model", str(env["model"]), "--tasks", "mbpo_embedded_existence", "--output",
            str(out), "--limit", "2", "--probes", "image,adversarial", "--no-progress",
            "--set", "probes.adversarial_steps=1", "--set", "bootstrap.n_resamples=50"]  # fmt: skip
    assert main(args) == 0
    res = Results.read(out / "results.json")
    assert set(res.tasks["mbpo_embedded_existence"].probes) == {"image", "adversarial"}
    assert res.config["probes"]["adversarial_steps"] == 1 and res.bootstrap.n_resamples == 50
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    adv = [r for r in rows if r["probe"] == "adversarial"]
    assert len(adv) == 2 and all(r["attack_logp_after"] <= r["attack_logp_before"] for r in adv)


@pytest.mark.slow
@pytest.mark.lmms
def test_plain_lmms_eval_command_runs_our_model(env: dict[str, Path]) -> None:
    pytest.importorskip("lmms_eval")
    from mbpo_bench.data.registry import builtin_tasks_dir

    cmd = [sys.executable, "-m", "lmms_eval", "--model", "mbpo", "--model_args",
           f"pretrained={env['model']},device=cpu", "--tasks", "mbpo_embedded_color",
           "--include_path", str(builtin_tasks_dir()), "--limit", "3", "--batch_size", "3"]  # fmt: skip
    extra = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **extra}, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mbpo_embedded_color" in out.stdout and "counter_prior_gap" in out.stdout
