"""Fuzz the CLI as a careless user would (issue 20): random option values and malformed rows.

Whatever the input, `mbpo-bench eval` and `mbpo-bench train` end with exit code 0 (a run with
samples), 2 (one `error:` line) or 3 (divergence), never a traceback and never a run marked
finished with zero samples. `main()` re-raises anything that is not a UserError, so an escaped
exception fails the example with its traceback, which hypothesis then shrinks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mbpo_bench.cli.main import main
from mbpo_bench.runs import RunDir

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = int(os.environ.get("MBPO_BENCH_FUZZ_EXAMPLES", "25"))


@cache
def workspace() -> dict[str, Path]:
    """A tiny model, a private cache and a 48-scene embedded benchmark (built once)."""
    from mbpo_bench.models import build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="mbpo-fuzz-"))
    (root / "bench.yaml").write_text("n_train: 48\nn_eval_per_cell: 4\n")
    with _env(root):
        model = build_tiny_model("llava", root / "model", seed=0)
        # a user task over the pope schema with a train split (the fixture's test file)
        assert main(["tasks", "new", "fz_pope", "--from", "mbpo_pope_random", "--out",
                     str(root / "tasks")]) == 0  # fmt: skip
    task = root / "tasks" / "fz_pope.yaml"
    task.write_text(
        task.read_text().replace("    split: test\n", "    split: test\n    train_split: test\n")
    )
    return {"root": root, "model": model, "task": task}


@contextlib.contextmanager
def _env(root: Path, data: Path | None = None) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        mp.setenv("MBPO_BENCH_EMBEDDED_CONFIG", str(root / "bench.yaml"))
        if data is not None:
            mp.setenv("MBPO_BENCH_DATA", str(data))
        yield


def _rows() -> list[dict[str, Any]]:
    return pq.read_table(next((FIXTURES / "pope").rglob("*.parquet"))).to_pylist()


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["null", "empty", "duplicate_id", "bad_image", "drop_row", "drop_all",
                         "odd_answer", "no_image"]),
        st.sampled_from(["question", "answer", "question_id", "image", "category"]),
        st.integers(0, 11),
    ),
    max_size=3,
)  # fmt: skip


def write_data(root: Path, name: str, mutations: list[tuple[str, str, int]]) -> Path:
    rows = _rows()
    for kind, field, index in mutations:
        if not rows:
            break
        i = index % len(rows)
        if kind == "null":
            rows[i] = {**rows[i], field: None}
        elif kind == "empty":
            rows[i] = {
                **rows[i],
                field: "" if field != "image" else {"bytes": b"", "path": "x.png"},
            }
        elif kind == "duplicate_id":
            rows[i] = {**rows[i], "question_id": rows[(i + 1) % len(rows)]["question_id"]}
        elif kind == "bad_image":
            rows[i] = {**rows[i], "image": {"bytes": b"\x89PNG broken", "path": "b.png"}}
        elif kind == "drop_row":
            rows.pop(i)
        elif kind == "drop_all":
            rows = []
        elif kind == "odd_answer":
            rows[i] = {**rows[i], "answer": "perhaps"}
        elif kind == "no_image":
            rows[i] = {**rows[i], "image": None}
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(FIXTURES / "pope", root / name)
    path = next((root / name).rglob("*.parquet"))
    schema = pq.read_table(path).schema
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return root


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def check_outcome(code: int, err: str, out: Path, count_key: str) -> None:
    event(f"exit {code}")  # --hypothesis-show-statistics shows how many ran to the end
    assert "Traceback" not in err
    assert code in (0, 2, 3), (code, err[-2000:])
    if code == 0:
        assert RunDir(out).finished
        status = json.loads((out / "status.json").read_text())
        if count_key == "n_samples":
            assert json.loads((out / "results.json").read_text())["n_samples"] > 0
        else:
            assert status.get("steps", 0) > 0
    else:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and " — " in errors[0], err[-2000:]
        assert not RunDir(out).finished


def values(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly good values (so that many examples run to the end), some bad ones."""
    return st.sampled_from(good * 3 + bad)


LIMIT = values([None, 1, 2, 4], [-3, 0, 10**9, "x", ".nan", "1.5"])
BATCH = values([None, 1, 3], [-2, 0, 10**9, "x"])
TOKENS = values([None, 1, 4], [-1, 0, 10**9, "many"])


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    limit=LIMIT,
    batch_size=BATCH,
    max_new_tokens=TOKENS,
    probes=st.one_of(
        st.none(),
        st.lists(st.sampled_from(["image", "blind", "mismatched", "noise", "bogus"]),
                 min_size=1, max_size=3, unique=True).map(",".join),
    ),
    sets=st.lists(
        st.sampled_from(["bootstrap.n_resamples=0", "bootstrap.n_resamples=20",
                         "bootstrap.confidence=1", "bootstrap.confidence=0.9",
                         "probes.seed=-4", "probes.adversarial_steps=0", "answer_mode=choice",
                         "answer_mode=guess", "limit=null"]),
        max_size=2,
    ),
    skip_bad=st.booleans(),
    mutations=MUTATIONS,
)  # fmt: skip
@example(limit=2, batch_size=None, max_new_tokens=None, probes="image,blind", sets=[],
         skip_bad=False, mutations=[])  # fmt: skip
@example(limit=None, batch_size=None, max_new_tokens=None, probes="image", sets=[],
         skip_bad=True, mutations=[("bad_image", "image", 11)])  # fmt: skip
@example(limit=None, batch_size=None, max_new_tokens=None, probes=None, sets=[],
         skip_bad=False, mutations=[("no_image", "question", 8)])  # fmt: skip
@example(limit=1, batch_size=None, max_new_tokens=None, probes="mismatched", sets=[],
         skip_bad=False, mutations=[])  # fmt: skip
def test_eval_never_tracebacks_and_never_finishes_empty(
    limit: Any, batch_size: Any, max_new_tokens: Any, probes: str | None, sets: list[str],
    skip_bad: bool, mutations: list[tuple[str, str, int]],
) -> None:  # fmt: skip
    ws = workspace()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp) / "data", "pope", mutations)
        out = Path(tmp) / "out"
        argv = ["eval", "--model", str(ws["model"]), "--tasks", "mbpo_pope_random",
                "--data-root", str(data), "--output", str(out), "--no-progress"]  # fmt: skip
        for option, value in (("--limit", limit), ("--batch-size", batch_size),
                              ("--max-new-tokens", max_new_tokens), ("--probes", probes)):  # fmt: skip
            if value is not None:
                argv += [option, str(value)]
        for item in sets:
            argv += ["--set", item]
        if skip_bad:
            argv.append("--skip-bad-items")
        with _env(ws["root"]):
            code, err = run_cli(argv)
        check_outcome(code, err, out, "n_samples")


@pytest.mark.slow
@settings(
    max_examples=max(EXAMPLES // 2, 5), deadline=None, suppress_health_check=list(HealthCheck)
)
@given(
    lr=values(["1e-4", "1e30"], ["0", "-1", ".nan", ".inf", "abc"]),
    steps=values(["1", "2"], ["-1", "0"]),
    batch=values(["2", "4"], ["0", "3"]),
    accum=values(["1", "2"], ["0"]),
    save_every=values(["1", "5"], ["0"]),
    skip_bad=st.booleans(),
    mutations=MUTATIONS,
)  # fmt: skip
@example(lr="1e-4", steps="2", batch="2", accum="1", save_every="1", skip_bad=False, mutations=[])
@example(lr="1e30", steps="2", batch="2", accum="1", save_every="1", skip_bad=False, mutations=[])
def test_train_never_tracebacks_and_never_finishes_empty(
    lr: str, steps: str, batch: str, accum: str, save_every: str, skip_bad: bool,
    mutations: list[tuple[str, str, int]],
) -> None:  # fmt: skip
    ws = workspace()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp) / "data", "fz_pope", mutations)
        out = Path(tmp) / "out"
        argv = ["train", "sft", "--quiet", "--model", str(ws["model"]), "--data",
                str(ws["task"]), "--output", str(out), f"optim.lr={lr}", f"optim.steps={steps}",
                f"optim.batch_size={batch}", f"optim.grad_accum={accum}",
                f"runtime.save_every={save_every}", "runtime.progress=false",
                "runtime.threads=1", "runtime.tensorboard=false"]  # fmt: skip
        if skip_bad:
            argv.append("--skip-bad-items")
        with _env(ws["root"], data):
            code, err = run_cli(argv)
        check_outcome(code, err, out, "steps")
        if code == 3:
            assert "resume with a lower learning rate: mbpo-bench train sft" in err
