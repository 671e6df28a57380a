"""Issue 20: bad input never reaches a traceback, run folders protect the user's files, every
trainer's divergence exits 3 with a fix that works as printed, `tasks new`, a light `models list`.

The table-driven tests reproduce each case the issue measured (each failed before: a silent
partial run, a finished run of 0 samples, a traceback, a refused fix, a replaced file).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mbpo_bench.cli.main import main
from mbpo_bench.runs import HISTORY, SAFE_ON_RESUME, RunDir

FIXTURES = Path(__file__).parent / "fixtures"
TINY_BENCH = "n_train: 48\nn_eval_per_cell: 4\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A tiny LLaVA, a private cache and a 48-scene embedded benchmark."""
    from mbpo_bench.models import build_tiny_model

    root = tmp_path_factory.mktemp("first_hour")
    (root / "bench.yaml").write_text(TINY_BENCH)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(root / "bench.yaml"))
        model = build_tiny_model("llava", root / "model", seed=0)
        yield {"root": root, "model": model}


def pope_rows() -> list[dict[str, Any]]:
    path = next((FIXTURES / "pope").rglob("*.parquet"))
    return pq.read_table(path).to_pylist()


def pope_root(root: Path, rows: list[dict[str, Any]], name: str = "pope") -> Path:
    """A data root whose pope folder holds `rows` (in the fixture's own schema)."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(FIXTURES / "pope", root / name)
    path = next((root / name).rglob("*.parquet"))
    schema = pq.read_table(path).schema
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return root


def random_rows() -> list[dict[str, Any]]:
    return [r for r in pope_rows() if r["category"] == "random"]


def mutate_last(**changes: Any) -> Callable[[], list[dict[str, Any]]]:
    def rows() -> list[dict[str, Any]]:
        out = pope_rows()
        last = max(i for i, r in enumerate(out) if r["category"] == "random")
        out[last] = {**out[last], **changes}
        return out

    return rows


def duplicate_id() -> list[dict[str, Any]]:
    out = pope_rows()
    idx = [i for i, r in enumerate(out) if r["category"] == "random"]
    out[idx[-1]] = {**out[idx[-1]], "question_id": out[idx[-2]]["question_id"]}
    return out


def no_error_traceback(err: str) -> bool:
    return "Traceback" not in err


# (case, extra eval options, rows of the data root (None: the fixture), text in the error)
EVAL_CASES = [
    ("limit -3", ["--limit", "-3"], None, "eval.limit (--limit) is -3, out of range"),
    ("limit 0", ["--limit", "0"], None, "eval.limit (--limit) is 0"),
    ("batch size 0", ["--batch-size", "0"], None, "eval.batch_size (--batch-size) is 0"),
    ("max new tokens 0", ["--max-new-tokens", "0"], None, "eval.max_new_tokens"),
    ("nan resamples", ["--set", "bootstrap.n_resamples=.nan"], None, "expected an integer"),
    ("confidence 1", ["--set", "bootstrap.confidence=1"], None, "eval.bootstrap.confidence"),
    ("empty parquet", [], list, "split has no rows"),
    ("null question", [], mutate_last(question=None), "field 'question' is missing or empty"),
    ("null answer", [], mutate_last(answer=None), "field 'answer' is missing or empty"),
    ("duplicate id", [], duplicate_id, "the doc_id is also the id of row"),
]


@pytest.mark.parametrize(
    ("case", "options", "rows", "message"), EVAL_CASES, ids=[c[0] for c in EVAL_CASES]
)
def test_measured_eval_cases_are_one_line_errors(
    env: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    options: list[str],
    rows: Callable[[], list[dict[str, Any]]] | None,
    message: str,
) -> None:
    data = pope_root(tmp_path / "data", rows() if rows is not None else pope_rows())
    out = tmp_path / "out"
    code = main(
        ["eval", "--model", str(env["model"]), "--tasks", "mbpo_pope_random", "--probes",
         "image", "--data-root", str(data), "--output", str(out), "--no-progress", *options]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, case
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and " — " in lines[0], err
    assert no_error_traceback(err)
    assert not RunDir(out).finished


def test_every_range_rule_names_a_real_field() -> None:
    from mbpo_bench.trainers.dpo import DPOConfig
    from mbpo_bench.trainers.grpo import GRPOConfig, GRPOSettings
    from mbpo_bench.trainers.hybrid import HybridSettings
    from mbpo_bench.trainers.loop import OptimConfig, RuntimeConfig
    from mbpo_bench.trainers.mbpo import MBPOConfig
    from mbpo_bench.trainers.mining import MineConfig, MiningConfig
    from mbpo_bench.trainers.sft import SFTConfig

    from mbpo_bench import ranges
    from mbpo_bench.ablation.config import AblationConfig
    from mbpo_bench.config import RuntimeSection
    from mbpo_bench.evaluation.config import BootstrapConfig, EvalConfig, ProbeConfig
    from mbpo_bench.models.lora import LoraSettings
    from mbpo_bench.quickstart import QuickstartConfig
    from mbpo_bench.reporting.config import ReportConfig

    classes = {c.__name__: c for c in (
        AblationConfig, BootstrapConfig, EvalConfig, ProbeConfig, LoraSettings, QuickstartConfig,
        ReportConfig, DPOConfig, GRPOConfig, GRPOSettings, HybridSettings, OptimConfig,
        RuntimeConfig, MBPOConfig, MineConfig, MiningConfig, SFTConfig, RuntimeSection,
    )}  # fmt: skip
    assert set(ranges.RANGES) == set(classes)
    for name, rules in ranges.RANGES.items():
        fields = {f.name for f in dataclasses.fields(classes[name])}
        assert set(rules) <= fields, (name, set(rules) - fields)
        default = classes[name]()
        assert ranges.range_error(default, name) is None, f"{name}'s defaults break its rules"


@pytest.mark.parametrize(
    ("method", "override", "message"),
    [
        ("sft", "optim.lr=-1", "SFTConfig.optim.lr is -1.0, out of range — use a value > 0"),
        ("sft", "optim.lr=.inf", "SFTConfig.optim.lr is inf, not a finite number"),
        ("dpo", "beta=0", "DPOConfig.beta is 0.0, out of range"),
        ("grpo", "grpo.num_generations=1", "GRPOConfig.grpo.num_generations is 1"),
        (
            "grpo",
            "grpo.top_p=1.5",
            "GRPOConfig.grpo.top_p is 1.5, out of range — use a value in (0, 1]",
        ),
        ("mbpo", "hybrid.offline_ratio=2", "MBPOConfig.hybrid.offline_ratio is 2.0"),
        ("mbpo", "mining.iig_top_fraction=0", "MBPOConfig.mining.iig_top_fraction is 0.0"),
        ("sft", "optim.grad_accum=0", "SFTConfig.optim.grad_accum is 0"),
        ("sft", "runtime.save_every=0", "SFTConfig.runtime.save_every is 0"),
        ("sft", "limit=-1", "SFTConfig.limit is -1"),
    ],
)
def test_training_settings_are_range_checked_before_any_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str, override: str, message: str
) -> None:
    out = tmp_path / "run"
    code = main(["train", method, "--model", "x", "--output", str(out), "--quiet", override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and no_error_traceback(err), err
    assert not out.exists()


# ---- run folders ----------------------------------------------------------------------------


def test_a_folder_that_is_not_a_run_folder_is_never_touched(
    env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text('{"my": "own results"}')
    data = pope_root(tmp_path / "data", pope_rows())
    for extra in ([], ["--overwrite"]):
        code = main(
            ["eval", "--model", str(env["model"]), "--tasks", "mbpo_pope_random", "--probes",
             "image", "--data-root", str(data), "--output", str(mine), "--no-progress", *extra]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and "is not empty and is not a run folder" in err, err
        assert sorted(p.name for p in mine.iterdir()) == ["results.json"]
        assert (mine / "results.json").read_text() == '{"my": "own results"}'


def test_a_run_that_failed_before_any_result_is_replaced_by_the_corrected_command(
    env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sft"
    base = ["train", "sft", "--model", str(env["model"]), "--output", str(out), "--quiet",
            "optim.steps=1", "optim.batch_size=2", "runtime.progress=false", "runtime.threads=1"]  # fmt: skip
    # the measured case: a task without a train split fails after the folder was made
    assert main([*base, "--data", "mbpo_pope_random"]) == 2
    assert "has no training split" in capsys.readouterr().err
    assert RunDir(out).is_run_folder and not RunDir(out).has_results
    assert main([*base, "--data", "mbpo_embedded_color"]) == 0
    err = capsys.readouterr().err
    assert "note: replacing" in err and "before producing any result" in err
    assert RunDir(out).finished


def test_resume_changes_only_the_safe_settings_and_records_them(
    env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sft"
    base = ["train", "sft", "--model", str(env["model"]), "--output", str(out), "--quiet",
            "--data", "mbpo_embedded_color", "optim.batch_size=2", "runtime.progress=false",
            "runtime.threads=1", "runtime.save_every=1"]  # fmt: skip
    # a finished run of 2 steps, then marked unfinished: a run with results and a checkpoint
    assert main([*base, "optim.steps=2"]) == 0
    (out / "status.json").unlink()
    capsys.readouterr()
    assert main([*base, "optim.steps=3"]) == 2  # not a safe change
    err = capsys.readouterr().err
    assert "optim.steps 2 -> 3" in err and "--resume can change only" not in err
    assert main([*base, "optim.steps=3", "--resume"]) == 2
    assert "--resume can change only optim.lr" in capsys.readouterr().err
    assert main([*base, "optim.steps=2", "optim.lr=1e-4"]) == 2  # safe, but --resume missing
    assert "add --resume to continue it" in capsys.readouterr().err
    assert main([*base, "optim.steps=2", "optim.lr=1e-4", "--resume"]) == 0
    history = [json.loads(line) for line in (out / HISTORY).read_text().splitlines()]
    assert history[-1]["changes"] == {"optim.lr": [0.0003, 0.0001]}
    assert "optim.lr" in SAFE_ON_RESUME and "optim.steps" not in SAFE_ON_RESUME


def test_a_resumed_run_continues_with_the_new_lr_at_its_schedule_position() -> None:
    import torch
    from mbpo_bench.trainers.loop import (
        OptimConfig,
        _apply_current_settings,
        build_optimizer,
        build_scheduler,
        lr_factor,
    )

    def make(cfg: OptimConfig) -> tuple[Any, Any]:
        w = torch.nn.Parameter(torch.ones(3))
        opt = build_optimizer([w], cfg)
        return opt, build_scheduler(opt, cfg)

    old = OptimConfig(lr=1e-2, steps=10, warmup_ratio=0.2)
    opt, sched = make(old)
    for _ in range(4):
        opt.step()
        sched.step()
    state = (opt.state_dict(), sched.state_dict())
    lr_before = opt.param_groups[0]["lr"]
    # unchanged config: exactly the values LambdaLR computed (a plain resume stays exact)
    opt2, sched2 = make(old)
    opt2.load_state_dict(state[0])
    sched2.load_state_dict(state[1])
    _apply_current_settings(opt2, sched2, old)
    assert opt2.param_groups[0]["lr"] == lr_before
    # a new lr: the new base lr at the same position of the schedule, from the next step on
    new = dataclasses.replace(old, lr=1e-4)
    opt3, sched3 = make(new)
    opt3.load_state_dict(state[0])
    sched3.load_state_dict(state[1])
    _apply_current_settings(opt3, sched3, new)
    assert opt3.param_groups[0]["lr"] == pytest.approx(1e-4 * lr_factor(4, new))
    opt3.step()
    sched3.step()
    assert sched3.get_last_lr()[0] == pytest.approx(1e-4 * lr_factor(5, new))


# ---- divergence -----------------------------------------------------------------------------

# a random tiny model: mining keeps any wrong answer (as tests/test_quickstart.py's settings)
MINING = [
    "mining.limit=8",
    "mining.steps=1",
    "mining.iig_filter=false",
    "mining.keep=wrong",
    "mining.require_clean_correct=false",
]
DIVERGE = {
    "sft": [],
    "dpo": MINING,
    "grpo": ["grpo.num_generations=4", "grpo.max_new_tokens=3"],
    "mbpo": ["grpo.num_generations=2", "grpo.max_new_tokens=3", *MINING],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", list(DIVERGE))
def test_divergence_exits_3_and_the_printed_fix_works_as_printed(
    env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    out = tmp_path / method
    argv = ["train", method, "--quiet", "--model", str(env["model"]), "--data", "embedded",
            "--output", str(out), "optim.lr=1e30", "optim.steps=12", "optim.batch_size=2",
            "runtime.save_every=1", "runtime.progress=false", "runtime.threads=1",
            *DIVERGE[method]]  # fmt: skip
    assert main(argv) == 3
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert no_error_traceback(err) and "training stopped before the optimizer step" in line
    if method == "mbpo":  # the measured case: torch.multinomial on a nan distribution
        assert "the sampling distribution is not finite" in line
    assert list((out / "checkpoints").glob("diverged-step-*")), "the bad checkpoint is set aside"
    fix = line.split("resume with a lower learning rate: ", 1)[1]
    assert fix.startswith("mbpo-bench train ") and "--resume" in fix and "--overwrite" not in fix
    assert main(shlex.split(fix)[1:]) == 0, capsys.readouterr().err
    assert RunDir(out).finished
    history = [json.loads(line) for line in (out / HISTORY).read_text().splitlines()]
    assert history[-1]["changes"]["optim.lr"][0] == 1e30


def test_train_has_skip_bad_items(
    env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mbpo_bench.data.registry import load_items

    folder = tmp_path / "tasks"
    assert main(["tasks", "new", "my_train", "--from", "mbpo_embedded_color", "--out",
                 str(folder)]) == 0  # fmt: skip
    items = load_items("mbpo_embedded_color", split="train")
    bad = items[0].image_path
    backup = bad.read_bytes()
    bad.write_bytes(b"not a png")
    try:
        out = tmp_path / "sft"
        argv = ["train", "sft", "--quiet", "--model", str(env["model"]), "--data",
                str(folder / "my_train.yaml"), "--output", str(out), "optim.steps=1",
                "optim.batch_size=2", "runtime.progress=false", "runtime.threads=1"]  # fmt: skip
        capsys.readouterr()
        assert main([*argv, "--skip-bad-items"]) == 0
        err = capsys.readouterr().err
        assert "skipped 1 of" in err and "training items with a bad image" in err
    finally:
        bad.write_bytes(backup)


# ---- tasks new, models list ------------------------------------------------------------------


def test_tasks_new_writes_a_self_contained_task_that_validates_and_runs(
    env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    assert main(["tasks", "new", "my_pope", "--from", "mbpo_pope_random", "--out", str(out)]) == 0
    text = (out / "my_pope.yaml").read_text()
    assert "include" not in text and "docs_for_my_pope" in text and "docs_for_mbpo" not in text
    assert "hub_id" not in text and "suites: []" in text
    readme = (out / "README.md").read_text()
    assert "$MBPO_BENCH_DATA/my_pope/" in readme and "question_id" in readme
    assert main(["tasks", "validate", "--include-path", str(out)]) == 0
    capsys.readouterr()
    data = pope_root(tmp_path / "data", pope_rows(), name="my_pope")
    code = main(["eval", "--model", str(env["model"]), "--tasks", "my_pope", "--include-path",
                 str(out), "--probes", "image", "--data-root", str(data), "--output",
                 str(tmp_path / "ev"), "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["n_samples"] == len(random_rows())
    # a second one with the same name is refused, the file is not replaced
    assert main(["tasks", "new", "my_pope", "--from", "mbpo_pope_random", "--out", str(out)]) == 2
    assert (out / "my_pope.yaml").read_text() == text


def test_models_list_counts_are_the_computed_ones_and_need_no_torch() -> None:
    import subprocess
    import sys

    from mbpo_bench.cli.models_cmd import PARAMETER_COUNTS
    from mbpo_bench.models.families import FAMILIES, SIZES
    from mbpo_bench.models.tiny import count_parameters

    assert set(PARAMETER_COUNTS) == {(f, s) for f in FAMILIES for s in SIZES}
    for (family, size), n in PARAMETER_COUNTS.items():
        assert count_parameters(family, size) == n, (family, size)
    code = (
        "import sys; from mbpo_bench.cli.main import main; main(['models', 'list']); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]"), out.stdout[-300:]
