"""The compiled-layers candidate fix in the GPU benchmarks, wired on tiny CPU models.

mbpo_bench.models.compile (another module's job) is replaced by a stand-in context manager that
records how it was entered, so these tests check the benchmarks' wiring only: which passes run
inside it (eager rows and variants never, the compiled row / the `compile` variant's reference and
update passes always), that a missing module costs only the compiled row / variant, and that the
markdown keeps what bench_grpo_trl.py parses.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_compile
import bench_eval_gpu
import bench_grpo_step
import bench_grpo_trl
from eval_rows import Counts, State

pytestmark = pytest.mark.bench  # benchmark scripts: `tox -e bench`, not the default envs

MODULE = "mbpo_bench.models.compile"


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A recording compiled_layers, and RuntimeConfig.compile_layers where the field is missing."""
    calls: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def compiled_layers(
        vlm: Any, *, enabled: bool = True, backend: str = "inductor", vision: bool = True
    ) -> Iterator[None]:
        calls.append({"vlm": vlm, "enabled": enabled, "backend": backend, "grad": None})
        yield

    module = types.ModuleType(MODULE)
    module.compiled_layers = compiled_layers  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, MODULE, module)
    from mbpo_bench.trainers import loop

    if "compile_layers" not in {f.name for f in dataclasses.fields(loop.RuntimeConfig)}:
        stand = dataclasses.make_dataclass(
            "RuntimeConfig", [("compile_layers", bool, False)], bases=(loop.RuntimeConfig,)
        )
        monkeypatch.setattr(loop, "RuntimeConfig", stand)
    return calls


def test_a_missing_module_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, MODULE, None)  # import fails as if the file were absent
    with pytest.raises(RuntimeError, match=re.escape(f"compiled variant not run: {MODULE} is")):
        bench_compile.load_compiled_layers()


def test_compile_token_is_stripped_before_the_rollout_label_is_parsed() -> None:
    assert bench_grpo_step.strip_compile("merged+static+shared+compile") == (
        "merged+static+shared",
        True,
    )
    assert bench_grpo_step.strip_compile("compile") == ("default", True)
    assert bench_grpo_step.strip_compile("merged") == ("merged", False)
    args = bench_grpo_step.parse_args(
        ["--variants", "merged+static+shared,merged+static+compile+shared"]
    )
    assert args.compiles == [False, True]
    assert args.speeds[0] == args.speeds[1]  # the token is not a rollout option
    assert bench_grpo_step.parse_args(["--compile-layers"]).compiles == [True]


def test_packed_token_sets_packed_scoring_and_its_mfu_counts_each_prompt_once() -> None:
    args = bench_grpo_step.parse_args(["--variants", "merged+compile+packed,merged+compile"])
    assert args.packs == [True, False] and args.compiles == [True, True]
    assert args.speeds[0] == args.speeds[1]  # neither token is a rollout option
    group = types.SimpleNamespace
    ro = group(groups=[group(samples=[0] * 3), group(samples=[0] * 3)])
    # 6 samples in 2 micro-batches of 3: one group each, each prompt once
    assert bench_grpo_step.packed_prompt_tokens(ro, [100, 50], grad_accum=2) == 150
    # 3 micro-batches of 2: the first group's prompt in two of them, the second's in two
    assert bench_grpo_step.packed_prompt_tokens(ro, [100, 50], grad_accum=3) == 300


def test_timed_steps_that_compiled_are_left_out_of_the_mean() -> None:
    from grpo_report import StepRow, mean_label, mean_row

    def step(i: int, update: float, graphs: int = 0, error: str = "") -> StepRow:
        return StepRow(step=i, rollout=1.0, generate=1.0, reference=1.0, update=update,
                       tokens=10, update_tokens=10, graphs=graphs, error=error)  # fmt: skip

    rows = [step(1, 9.0, graphs=2), step(2, 2.0), step(3, 4.0), step(4, 1.0, error="oom")]
    mean = mean_row(rows)
    assert mean is not None and mean.update == 3.0  # steps 2 and 3 only
    assert mean_label(rows) == "**mean of 2** (1 that compiled left out)"
    compiled = [step(1, 9.0, graphs=2), step(2, 5.0, graphs=1)]
    every = mean_row(compiled)
    assert every is not None and every.update == 7.0  # all compiled: all count
    assert mean_label(compiled) == "**mean of 2**"


def test_first_steps_and_phase_peaks_reach_the_comparison(tmp_path: Path) -> None:
    """The mean of the first N steps (warm-up included) sits beside the steady state, with
    each phase's peak memory and the graphs compiled, and TRL's comparison reads both back."""
    from grpo_report import StepRow, first_label, mean_label, mean_row, step_line

    rows = [
        StepRow(step=i, rollout=1.0, generate=0.9, reference=ref, update=2.0, tokens=100,
                update_tokens=80, peak_rollout=10.0, peak_reference=5.0 + i, peak_update=20.0,
                graphs=graphs)
        for i, (ref, graphs) in enumerate([(9.0, 12), (1.0, 0), (1.0, 0)])
    ]  # fmt: skip
    steady, first = mean_row(rows[1:]), mean_row(rows, every=True)
    assert steady is not None and steady.reference == 1.0 and steady.graphs == 0
    assert first is not None and first.reference == pytest.approx(11 / 3) and first.graphs == 12
    assert first.peak_reference == 7.0
    names = ("| variant | step | rollout s (generate s) | reference s | update s | step s "
             "| tokens/s | update tokens/s | update MFU % | peak GiB rollout / reference / update "
             "| graphs compiled | loss |")  # fmt: skip
    table = [step_line(r, "v", str(r.step), 10**6) for r in rows]
    table += [step_line(steady, "v", mean_label(rows[1:]), 10**6),
              step_line(first, "v", first_label(rows), 10**6)]  # fmt: skip
    assert "| 10.0 / 7.0 / 20.0 | 12 |" in table[-1]
    md = tmp_path / "ours.md"
    md.write_text("`python3 bench_grpo_step.py --shape tiny`\n\n- workload: x (mean 5.0)\n\n"
                  + "\n".join([names, "|---|", *table]) + "\n")  # fmt: skip
    parsed = bench_grpo_trl.parse_ours(md)
    assert parsed["means"]["v"]["reference_s"] == 1.0
    assert parsed["means"]["v"]["peak_reference_gib"] == 7.0
    assert parsed["firsts"]["v"]["steps"] == 3 and parsed["firsts"]["v"]["step_s"] == 6.67
    assert [r["reference_s"] for r in parsed["steps"]["v"]] == [9.0, 1.0, 1.0]
    two = bench_grpo_trl.first_mean(parsed["steps"]["v"][:2])  # TRL completed 2 steps, say
    assert two["reference_s"] == 5.0 and two["peak_reference_gib"] == 6.0
    assert two["tokens_per_s"] == pytest.approx(200 / (12.0 + 4.0), rel=0.05)  # md rounds


def test_eval_compiled_rows_are_errors_when_the_module_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, MODULE, None)
    args = argparse.Namespace(sizes=[1, 8, 16], samples=16, compile_backend="inductor",
                              out=tmp_path / "e.md", profile=True)  # fmt: skip
    state = State(header={"command": "x", "shape": "tiny"})
    counts = Counts(body=10, head=2, vision=3, vision_tokens=4)
    bench_eval_gpu.run_compiled(None, [], [5] * 16, counts, state, args)
    assert [(r.batch, r.path) for r in state.rows] == [(8, "prefill-choice compiled"),
                                                      (16, "prefill-choice compiled")]  # fmt: skip
    assert all("mbpo_bench.models.compile is not importable" in r.error for r in state.rows)
    assert "## Compiled layers (--compile)" in (tmp_path / "e.md").read_text()


@pytest.mark.slow
def test_eval_compiled_row_runs_inside_the_context_and_matches_eager(
    stand_in: list[dict[str, Any]], tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "eval.md"
    bench_eval_gpu.main(["--shape", "tiny", "--device", "cpu", "--samples", "8",
                         "--baseline-samples", "2", "--batch-sizes", "8", "--paths",
                         "generate,prefill-choice", "--no-stock", "--compile", "--compile-backend",
                         "eager", "--profile", "--generate-anatomy", "--static-cache",
                         "--out", str(out)])  # fmt: skip
    text = out.read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| prefill-choice compiled | 8 |"))
    assert "= greedy parsed answer" in row and "= eager prefill-choice answers 8/8" in row
    row = next(ln for ln in text.splitlines() if ln.startswith("| generate, static cache | 8 |"))
    assert "= dynamic-cache generate: texts 8/8, parsed answers 8/8" in row
    row = next(ln for ln in text.splitlines() if ln.startswith("| generate compiled | 8 |"))
    assert "= eager generate: texts 8/8, parsed answers 8/8" in row
    assert "## Anatomy of one generate batch: 8 prompts, 4 new tokens (eager" in text
    assert len(stand_in) == 1 and stand_in[0]["backend"] == "eager"
    assert "score-choice" not in text.split("| path |")[1].split("##")[0]  # --paths
    assert "lmms-eval's stock wrapper: not run in this call" in text
    assert "reports/perf/h200" in text
    assert "batch 8: warm-up pass" in text and "compile ~" in text
    for label in ("eager", "compiled layers"):
        assert f"## Profile: one prefill-choice batch of 8 ({label})" in text
        assert f"## Anatomy of one prefill-choice batch: 8 prompts ({label})" in text
    assert "input preparation is" in text


@pytest.mark.slow
def test_grpo_compile_variant_wraps_reference_and_update_only(
    stand_in: list[dict[str, Any]], tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "grpo.md"
    bench_grpo_step.main(["--shape", "tiny", "--device", "cpu", "--prompts", "1",
                          "--generations", "2", "--new-tokens", "4", "--grad-accum", "1",
                          "--steps", "1", "--variants", "default,compile", "--compile-backend",
                          "eager", "--update-only", "1", "--profile", "--out", str(out)])  # fmt: skip
    text = out.read_text()
    # the bench's own (--compile-backend): compile variant only, 2 steps (warm-up + 1) +
    # 1 update-only + the profiled reference + update
    ours = [c for c in stand_in if c["backend"] == "eager"]
    assert len(ours) == 5 and all(c["enabled"] for c in ours)
    # the trainer's (policy.compiled() in policy_update, default backend): every update of both
    # variants (2 steps + 1 update-only + 1 profiled), enabled by the compile variant only
    trainer = [c["enabled"] for c in stand_in if c["backend"] == "inductor"]
    assert trainer == [False] * 4 + [True] * 4
    assert "default+compile: layer compilation ~" in text
    assert "default+compile, warm-up step: dynamo: frames +" in text
    assert "| default+compile | 1 |" in text  # update-only row
    assert "## Profile: rollout (default+compile)" in text
    assert "## Profile: rollout (default)" not in text  # rollout: the last variant only
    for label in ("default", "default+compile"):
        assert f"## Profile: update ({label})" in text
        assert f"## Profile: reference forwards ({label})" in text
    assert "| policy forward + backward |" in text and "| optimizer step |" in text
    parsed = bench_grpo_trl.parse_ours(out)  # TRL's comparison still reads our means
    assert set(parsed["means"]) == {"default", "default+compile"}


def test_a_steps_compile_seconds_are_split_by_phase_and_stated_against_the_steady_state() -> None:
    """The warm-up step's extra seconds per phase, and how much of them torch.compile spent
    (dynamo tracing vs the backend): the rest is first-call work outside the compiler."""
    from grpo_report import StepRow

    from mbpo_bench.models.rollout_speed import GenerationSpeed

    before = bench_grpo_step.compile_seconds()
    assert set(bench_grpo_step.COMPILE_TIMERS) <= set(before)
    fn = torch.compile(lambda x: x.sin() + 1, backend="eager")  # a new code object: compiles
    fn(torch.ones(3))
    after = bench_grpo_step.compile_seconds()
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    assert spent["entire_frame_compile"] > 0 and spent["backend_compile"] >= 0
    first = StepRow(step=0, rollout=3.0, generate=3.0, reference=2.0, update=5.0,
                    compile_rollout=dict.fromkeys(after, 0.0), compile_update=spent)  # fmt: skip
    split = bench_grpo_step.compile_split(first)
    assert split.startswith("rollout 0.0 s in torch.compile (dynamo tracing 0.0, backend 0.0")
    assert "; reference + update " in split and "dynamo tracing" in split.split(";")[1]
    steady = StepRow(step=1, rollout=1.0, generate=1.0, reference=1.0, update=2.0)
    var = bench_grpo_step.Variant(speed=GenerationSpeed(), settings=None, rows=[first, steady])
    note = bench_grpo_step.first_step_note(var)
    frame = spent["entire_frame_compile"]
    assert "first step 10.00 s = 2.50x the steady state 4.00 s" in note
    assert (
        "rollout +2.0 s (torch.compile 0.0), reference + update +4.0 s (torch.compile "
        + (f"{frame:.1f})")
        in note
    )
