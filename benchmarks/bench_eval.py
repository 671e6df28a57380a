"""Evaluation throughput: our batched path vs lmms-eval's stock llava_hf wrapper, same items.

One run, one tiny LLaVA checkpoint (built here, offline), one task, the same first N items:
1. `mbpo-bench eval`'s native runner (image probe only), batched;
2. lmms-eval `simple_evaluate` with our `mbpo` model (the entry-point wrapper), batched;
3. lmms-eval `simple_evaluate` with the stock `llava_hf` wrapper (asserts batch size 1).
Samples/s count only the generation phase of each path (model loading, task indexing and dataset
building excluded): our runner's per-batch compute time (image decode + generate + scoring), and
the wall time of each wrapper's `generate_until` call, after one discarded warm-up batch. Greedy predictions are compared per doc id
after cutting at the task's stop string and stripping whitespace: the stock wrapper ignores
`until` (it pops it and never applies it), so its raw text runs on past the newline.

Usage: python benchmarks/bench_eval.py [--task mbpo_embedded_existence] [--limit 64]
       [--batch-size 8] [--threads 1] [--repeats 3] [--out reports/perf/eval_cpu.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any


def _versions() -> str:
    from mbpo_bench.runs import package_versions

    found = package_versions(("torch", "transformers", "lmms-eval", "decord"))
    return ", ".join(f"{n} {v or '(not installed)'}" for n, v in found.items())


def _norm(text: str, until: list[str]) -> str:
    from mbpo_bench.evaluation.batches import truncate_at

    return truncate_at(str(text), until).strip()


def run_native(model: Path, task: str, limit: int, batch_size: int, out: Path) -> dict[str, Any]:
    from mbpo_bench.evaluation.api import run_eval
    from mbpo_bench.evaluation.config import EvalConfig
    from mbpo_bench.runs import read_jsonl

    config = EvalConfig(
        model=str(model), tasks=task, output=str(out), limit=limit, batch_size=batch_size
    )
    config.probes.names = ["image"]
    res = run_eval(config, overwrite=True, progress=False)
    rows = read_jsonl(out / "samples.jsonl")
    return {
        "seconds": res.compute_time_s,
        "n": len(rows),
        "preds": {r["doc_id"]: r["response"] for r in rows},
        "until": res.tasks[task].generation.until,
    }


def _timed(lm: Any) -> dict[str, float]:
    """Wrap `lm.generate_until` to accumulate its wall time."""
    clock = {"seconds": 0.0}
    inner = lm.generate_until

    def generate_until(requests: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(requests)
        finally:
            clock["seconds"] += time.perf_counter() - start

    lm.generate_until = generate_until
    return clock


def run_lmms(lm: Any, task: str, limit: int, batch_size: int) -> dict[str, Any]:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from mbpo_bench.data.registry import builtin_tasks_dir
    from mbpo_bench.evaluation.lmms_compat import skip_incompatible_filelock_patch

    skip_incompatible_filelock_patch()
    clock = _timed(lm)
    manager = TaskManager(include_path=str(builtin_tasks_dir()), include_defaults=False)
    out = simple_evaluate(
        model=lm, tasks=[task], task_manager=manager, limit=limit, batch_size=batch_size,
        log_samples=True, bootstrap_iters=0,
    )  # fmt: skip
    samples = out["samples"][task]
    preds = {}
    for s in samples:
        resp = s["resps"][0][0] if s.get("resps") else s["filtered_resps"][0]
        preds[str(s["doc"]["doc_id"])] = resp
    return {"seconds": clock["seconds"], "n": len(samples), "preds": preds}


def stock_llava_hf(model: Path) -> Any:
    from lmms_eval.models import get_model

    return get_model("llava_hf", force_simple=True).create_from_arg_string(
        f"pretrained={model},device=cpu,device_map=cpu,dtype=float32", {"batch_size": 1}
    )


def ours_in_lmms(model: Path, batch_size: int) -> Any:
    from lmms_eval.models import get_model

    return get_model("mbpo").create_from_arg_string(
        f"pretrained={model},device=cpu,dtype=float32", {"batch_size": batch_size}
    )


def _command() -> str:
    env = [
        f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MBPO_BENCH_CACHE") if k in os.environ
    ]
    return " ".join([*env, shlex.join(["python", "benchmarks/bench_eval.py", *sys.argv[1:]])])


def _rate(r: dict[str, Any]) -> float:
    med = statistics.median(r["all_seconds"])
    return r["n"] / med if med else float("nan")


def _agreement(
    ref: dict[str, str], other: dict[str, str], until: list[str]
) -> tuple[int, int, list[str]]:
    common = sorted(set(ref) & set(other))
    diff = [d for d in common if _norm(ref[d], until) != _norm(other[d], until)]
    return len(common) - len(diff), len(common), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="mbpo_embedded_existence")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(args.threads)
    from mbpo_bench.models import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    model = build_tiny_model("llava", work / "llava")
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    # warm-up (first-call costs of torch/transformers, embedded data generation), discarded
    run_native(model, args.task, min(args.limit, args.batch_size), args.batch_size, work / "warmup")
    paths = {
        f"mbpo-bench eval (native runner, batch {args.batch_size})": lambda: run_native(
            model, args.task, args.limit, args.batch_size, work / "native"
        ),
        f"lmms-eval + our `mbpo` wrapper (batch {args.batch_size})": lambda: run_lmms(
            ours_in_lmms(model, args.batch_size), args.task, args.limit, args.batch_size
        ),
        "lmms-eval + stock `llava_hf` wrapper (batch 1)": lambda: run_lmms(
            stock_llava_hf(model), args.task, args.limit, 1
        ),
    }
    for _ in range(args.repeats):  # interleaved, so load from other processes hits all paths
        for label, run in paths.items():
            if label in failures:
                continue
            try:
                r = run()
            except Exception as exc:
                failures[label] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                traceback.print_exc()
                continue
            prev = results.setdefault(label, {**r, "all_seconds": []})
            prev["all_seconds"].append(r["seconds"])
            prev["stable"] = prev.get("stable", True) and prev["preds"] == r["preds"]
    native = results[next(iter(paths))]
    text = render(args, results, failures, native["until"])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


def render(
    args: argparse.Namespace,
    results: dict[str, dict[str, Any]],
    failures: dict[str, str],
    until: list[str],
) -> str:
    labels = list(results)
    stock = next((results[k] for k in labels if "stock" in k), None)
    native = results[labels[0]]
    lines = [
        "# Evaluation throughput on CPU: our batched path vs lmms-eval's stock llava_hf",
        "",
        f"Command: `{_command()}`",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, torch threads {args.threads}; "
        f"{_versions()}.",
        f"Model: tiny random LLaVA (`build_tiny_model('llava')`, fp32). Task `{args.task}`, first "
        f"{args.limit} items, image probe only, greedy, max_new_tokens from the task YAML.",
        "",
        f"Median of {args.repeats} interleaved repeats (the machine's 2 cores are shared, so single "
        "runs vary by up to 2x); range in brackets.",
        "",
        "| path | samples | generation s | samples/s | vs stock llava_hf |",
        "|---|---|---|---|---|",
    ]
    stock_rate = _rate(stock) if stock is not None else None
    for label, r in results.items():
        rate = _rate(r)
        ratio = f"{rate / stock_rate:.2f}x" if stock_rate else ""
        lo, hi = min(r["all_seconds"]), max(r["all_seconds"])
        med = statistics.median(r["all_seconds"])
        lines.append(
            f"| {label} | {r['n']} | {med:.2f} [{lo:.2f}-{hi:.2f}] | {rate:.1f} | {ratio} |"
        )
    for label, why in failures.items():
        lines.append(f"| {label} | could not run: {why} | | | |")
    lines += ["", "## Identical greedy predictions", ""]
    for label in labels[1:]:
        same, n, diff = _agreement(native["preds"], results[label]["preds"], until)
        shown = f" (differ: {', '.join(diff[:5])})" if diff else ""
        lines.append(f"- native runner vs {label}: {same}/{n} identical{shown}")
    unstable = [k for k, r in results.items() if not r.get("stable", True)]
    lines.append(
        f"- predictions identical across repeats: {'yes' if not unstable else 'NO: ' + ', '.join(unstable)}"
    )
    distinct = len({_norm(t, until) for t in native["preds"].values()})
    lines.append(
        f"- distinct responses among the native runner's {len(native['preds'])}: {distinct}"
    )
    lines += [
        "",
        f"Predictions are compared after cutting at the task's stop strings {until!r} and "
        "stripping whitespace: the stock llava_hf wrapper pops `until` and never applies it.",
        "Generation seconds exclude model loading, task indexing and dataset building; the native "
        "runner's time includes image decoding and verifier scoring, the wrappers' time is their "
        "`generate_until` call (image decoding included).",
        "",
        "Work-arounds needed to run lmms-eval 0.7.3 here at all (none changes what is measured):",
        "",
        "- its llava_hf imports `decord` at module level, which lmms-eval does not depend on: "
        "installed with `uv pip install decord` (0.6.0 wheel);",
        "- llava_hf's default `device_map=\"\"` is refused by transformers 5.x's `from_pretrained` "
        '("needs to be a device name ... but found ."): passed `device_map=cpu` in model_args;',
        "- `simple_evaluate` imports `filelock._api`, which filelock 4 removed: its lock patch is "
        "skipped (`mbpo_bench.evaluation.lmms_compat`); our tasks build datasets in memory.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
