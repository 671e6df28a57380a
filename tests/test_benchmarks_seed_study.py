"""benchmarks/seed_study.py on quickstart run folders made here (results files only, no model):
its cells are the quickstart findings' own numbers, rows and the over-seeds summary are right,
an unfinished run is listed, not fatal."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mbpo_bench.config import dump_yaml
from mbpo_bench.evaluation.schema import SCHEMA_VERSION, BootstrapSettings, ModelInfo, Results
from mbpo_bench.quickstart import QuickstartConfig
from mbpo_bench.quickstart_report_v2 import TASKS, findings
from mbpo_bench.reporting.loading import load_run

pytestmark = pytest.mark.bench  # benchmark scripts: `tox -e bench`, not the default envs

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_study.py"
N = 200  # items per task: even doc ids prior-consistent, odd ones counter-prior


@pytest.fixture(scope="module")
def study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["seed_study"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_eval(path: Path, p_counter: float, p_blind_counter: float, seed: int) -> None:
    """An eval folder: image and blind probes on the three embedded tasks; prior-consistent
    items mostly right, counter-prior ones right with probability `p_counter` (image) and
    `p_blind_counter` (blind)."""
    rng = random.Random(seed)
    rows = []
    for task in TASKS:
        for i in range(N):
            prior = "consistent" if i % 2 == 0 else "counter"
            for probe, p in (("image", p_counter), ("blind", p_blind_counter)):
                correct = rng.random() < (0.95 if prior == "consistent" else p)
                rows.append(
                    {"task": task, "probe": probe, "doc_id": f"d{i:03d}", "correct": correct,
                     "score": float(correct), "parsed": "x", "meta": {"prior": prior}}
                )  # fmt: skip
    results = Results(
        SCHEMA_VERSION, ModelInfo(path.name, "llava"), ["image", "blind"],
        BootstrapSettings(200, 0.95, 0), {}, {}, None, "3.11", "cpu", 1.0, 1.0, None,
        len(rows), 0, {},
    )  # fmt: skip
    path.mkdir(parents=True)
    (path / "results.json").write_text(results.to_json())
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_quickstart(
    folder: Path, seed: int, steps: int, mbpo_counter: float, *, complete: bool = True
) -> Path:
    config = QuickstartConfig(seed=seed, control_steps=357, eval_limit=N)
    config.base.optim.steps = steps
    folder.mkdir(parents=True)
    (folder / "quickstart_config.yaml").write_text(dump_yaml(config))
    write_eval(folder / "eval_base", 0.2, 0.0, seed)
    write_eval(folder / "eval_control", 0.25, 0.0, seed + 100)
    if complete:
        write_eval(folder / "eval_mbpo", mbpo_counter, 0.0, seed + 200)
    return folder


def test_cells_are_the_quickstart_findings(study: ModuleType, tmp_path: Path) -> None:
    run = write_quickstart(tmp_path / "qs", seed=0, steps=1000, mbpo_counter=0.6)
    row = study.study_row(run)
    assert row.error is None and (row.base_steps, row.seed) == (1000, 0)
    base, mbpo, control = (load_run(run / f"eval_{n}", n) for n in ("base", "mbpo", "control"))
    lines = {
        int(ln.split(".", 1)[0]): ln for ln in findings(base, mbpo, control) if ln[:1].isdigit()
    }
    number = {
        ("base", "counter-prior acc"): 2,
        ("base", "visual reliance (image - blind)"): 3,
        ("base", "prior-consistent acc"): 5,
        ("control", "counter-prior acc"): 6,
        ("control", "visual reliance (image - blind)"): 7,
        ("control", "prior-consistent acc"): 9,
    }
    for key, finding in number.items():
        assert f": {row.diffs[key].text()} —" in lines[finding], key
    consistent, counter = row.base_acc["consistent"], row.base_acc["counter"]
    assert f"accuracy {consistent[0]:.3f} [{consistent[1]:.3f}, {consistent[2]:.3f}]" in lines[1]
    assert f"vs {counter[0]:.3f} [{counter[1]:.3f}, {counter[2]:.3f}]" in lines[1]


def test_table_summary_and_unfinished_run(study: ModuleType, tmp_path: Path) -> None:
    root = tmp_path / "seed"
    for seed in (0, 1):
        write_quickstart(root / f"b1000/s{seed}", seed, 1000, mbpo_counter=0.9)
        write_quickstart(root / f"b4000/s{seed}", seed, 4000, mbpo_counter=0.2)
    write_quickstart(root / "b4000/s2", 2, 4000, 0.5, complete=False)
    out = tmp_path / "study.md"
    assert study.main([str(root), "--output", str(out), "--runs-command", "gpu_science.sh"]) == 0
    text = out.read_text()
    assert f"`python benchmarks/seed_study.py {root} --output {out} --runs-command" in text
    assert "control steps 357" in text and "Runs: 5 (4 complete)" in text
    run_rows = [ln for ln in text.splitlines() if ln.startswith(("| 1000 | ", "| 4000 | "))]
    keys = [tuple(ln.split(" | ")[:2]) for ln in run_rows[:5]]
    assert keys == [
        ("| 1000", "0"),
        ("| 1000", "1"),
        ("| 4000", "0"),
        ("| 4000", "1"),
        ("| 4000", "2"),
    ]
    assert "missing: run folder" in run_rows[4] and "eval_mbpo" in run_rows[4]
    summary = {
        tuple(ln.split(" | ")[:2]): ln.split(" | ") for ln in run_rows[5:]
    }  # (steps, quantity) -> cells
    strong = summary[("| 1000", "MBPO - base: counter-prior acc")]
    assert strong[2] == "2" and strong[-2:] == ["2", "0 |"]  # both seeds' CIs above zero
    none = summary[("| 4000", "MBPO - base: counter-prior acc")]
    assert none[2] == "2" and none[-2:] == ["0", "0 |"]
    assert float(strong[3]) > 0.5 > float(none[3])


def test_no_runs_is_one_line_error(
    study: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert study.main([str(tmp_path), "--output", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no quickstart_config.yaml under") and "\n" not in err
