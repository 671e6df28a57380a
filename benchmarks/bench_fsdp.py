"""Peak memory and tokens/s of one training step on ONE device: replicated (`runtime.strategy=ddp`)
against FSDP-sharded (`fsdp`, world size 1, optionally CPU-offloaded), LoRA against full
fine-tuning. This is the memory table of issue 21. The `rollout-*` configurations time GRPO's
rollout generation instead (LoRA, sampled): `rollout-ddp` with whole weights, `rollout-fsdp`
with sharded ones, once per `runtime.fsdp_rollout` mode (layerwise: each decode step gathers
layer by layer; gathered: the whole weights gathered once per rollout), in one process.
`load-fsdp` times `sharding.load_sharded` (rank 0's CPU copy into a meta-built sharded model)
and checks that the loaded model scores as its source did; `rollout-fsdp` loads that way too
(its first row's note has the load's time and check).

    python benchmarks/bench_fsdp.py --shape llava-7b --device cuda --batch 8 \
        --out reports/perf/h200/fsdp_llava-7b.md
    python benchmarks/bench_fsdp.py --shape llava-7b --device cuda --batch 8 --repeats 1 \
        --configs fsdp-full-offload,rollout-fsdp --out reports/perf/h200/fsdp_rollout.md
    python benchmarks/bench_fsdp.py --shape qwen25vl-32b --device cuda --batch 8 --checkpointing \
        --configs fsdp-lora,ddp-lora --out reports/perf/h200/fsdp_lora_qwen25vl-32b.md
    python benchmarks/bench_fsdp.py --shape tiny --device cpu --out /tmp/fsdp_tiny.md  # wiring

`benchmarks/gpu_fsdp.sh OUT` runs the open H200 rows in one device call.

A step is what the SFT trainer does: answer log-probs of `--batch` image prompts with an
`--answer-tokens`-token answer, backward, gradient clipping (`sharding.clip_grad_norm`), AdamW.
The step runs through the same code as training (`shard_model`, `answer_logprobs`). The 7B
shapes are `bench_models`' random-weight bf16 models (made on the device, no host copy), as
is `qwen25vl-32b`, Qwen2.5-VL-32B's layout (33.5B parameters), the largest that fits one H200
with LoRA. Each process prints progress lines (built, sharded, each step's seconds); one that
runs past `--timeout` gives an error row naming the last. Each configuration runs in a process of
its own: a fresh peak-memory counter, and an out-of-memory error loses only its row.
Full fine-tuning under `ddp` is expected to run out of memory at 7B on smaller GPUs. That row
is kept, as the reference point. tokens/s counts prompt and answer tokens.
A rollout is what `grpo.sample` does: `--rollout-prompts` image prompts x `--num-generations`
samples of exactly `--rollout-tokens` tokens (min = max: random weights stop early otherwise),
through `Policy.sampling()`, every call seeded alike; tokens/s counts generated tokens. The
note says whether a mode's calls (the warm-up and the timed ones) drew the same tokens, whether
the modes did (where they first differ), and the largest difference of the first decode step's
logits between two probes of a mode, between modes, and against the whole-weight source.
Peak host memory is the process's maximum resident set (what offloading moves there).
The markdown written to --out starts with the exact command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_models, also under python -P

CONFIGS = {  # name: (strategy, lora, offload)
    "ddp-lora": ("ddp", True, False),
    "fsdp-lora": ("fsdp", True, False),
    "ddp-full": ("ddp", False, False),
    "fsdp-full": ("fsdp", False, False),
    "fsdp-full-offload": ("fsdp", False, True),
    "fsdp-lora-offload": ("fsdp", True, True),
}
ROLLOUTS = {"rollout-ddp": "ddp", "rollout-fsdp": "fsdp"}  # name: strategy (LoRA, on device)
LOADS = ("load-fsdp",)  # sharding.load_sharded: rank 0's CPU copy -> meta model's shards


_T0 = time.perf_counter()


def _progress(message: str) -> None:
    """One progress line of a configuration's process (its parent echoes it as it comes, and a
    configuration that runs past --timeout reports the last one: how far it got)."""
    print(f"PROGRESS {time.perf_counter() - _T0:.0f} s: {message}", flush=True)


def _built(args: argparse.Namespace) -> tuple[Any, float, str]:
    """`bench_models.build` of `--shape` on `--device` (random bf16 weights made on the device,
    no host copy), its seconds and its parameter count in words."""
    from bench_models import build, sync

    start = time.perf_counter()
    vlm = build(args.shape, args.family, args.device, Path(tempfile.mkdtemp()))
    sync(args.device)
    seconds = time.perf_counter() - start
    n = sum(p.numel() for p in vlm.model.parameters())
    size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
    _progress(f"built {vlm.name} ({size} parameters, {vlm.dtype}) in {seconds:.1f} s")
    return vlm, seconds, size


def _host_peak_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _step_row(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Build the model, apply the configuration, time `repeats` steps after one warm-up."""
    import torch
    from bench_models import QUESTION, peak_gib, sync, time_per_call
    from mbpo_bench.trainers import sharding
    from mbpo_bench.trainers.loop import adamw_foreach
    from PIL import Image

    from mbpo_bench.models.common import unwrap
    from mbpo_bench.models.lora import apply_lora
    from mbpo_bench.models.protocol import Prompt

    strategy, lora, offload = CONFIGS[name]
    device = args.device
    if strategy == "fsdp":
        sharding.require_process_group(device)
    vlm, build_s, n_params = _built(args)
    if lora:
        apply_lora(vlm)
    else:
        vlm.model.requires_grad_(True)
    if args.checkpointing:
        unwrap(vlm.model).gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    if strategy == "fsdp":
        sharding.shard_model(vlm.model, offload=offload)
        _progress("sharded" + (" (parameters offloaded to CPU memory)" if offload else ""))
    vlm.model.train(True)
    params = [p for p in vlm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, foreach=adamw_foreach(params))
    size = vlm.image_size
    prompts = [Prompt(QUESTION, Image.new("RGB", (size, size), (200, 30, 30)))] * args.batch
    answer = " ".join(["yes"] * args.answer_tokens)
    n_prompt = len(vlm.prompt_ids(vlm.render(prompts[:1], True))[0])
    n_answer = len(vlm.tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1

    steps: list[float] = []

    def step() -> None:
        start = time.perf_counter()
        lp = vlm.answer_logprobs(prompts, [answer] * args.batch, requires_grad=True)
        loss = -(lp.logps * lp.mask).sum() / lp.mask.sum()
        loss.backward()
        sharding.clip_grad_norm(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)  # a step's own time for the progress line (~ms against a step)
        steps.append(time.perf_counter() - start)
        kind = "warm-up step" if len(steps) == 1 else f"timed step {len(steps) - 1}"
        _progress(f"{kind} of {args.repeats + 1} in {steps[-1]:.1f} s")

    seconds = time_per_call(step, device, args.repeats)  # its warm-up allocates the AdamW state
    peak = peak_gib(device)
    return {
        "config": name,
        "trainable_params_M": sum(p.numel() for p in params) / 1e6,
        "step_s": seconds,
        "tokens_per_s": args.batch * (n_prompt + n_answer) / seconds,
        "peak_gib": peak,
        "host_peak_gib": _host_peak_gib(),
        "note": f"{n_params} parameters, built in {build_s:.0f} s; warm-up step "
        f"{steps[0]:.1f} s, then {args.repeats} timed"
        + ("; gradient checkpointing" if args.checkpointing else ""),
    }


def _rollout_prompts(args: argparse.Namespace, size: int) -> list[Any]:
    from bench_models import QUESTION
    from PIL import Image

    from mbpo_bench.models.protocol import Prompt

    return [
        Prompt(QUESTION, Image.new("RGB", (size, size), (200, 30 + 20 * i, 30)))
        for i in range(args.rollout_prompts)
    ]


def _first_step_logits(vlm: Any, prompts: list[Any], n_gen: int) -> Any:
    """The raw logits of a rollout's first decode step (its prefill's last position): the same
    batch (`n_gen` rows a prompt) through transformers' `generate` as `generate_completions`
    feeds it, one new token, `output_logits`; fp32 on the host."""
    import torch

    from mbpo_bench.models.common import in_lockstep

    pixels, sizes = vlm.pixels_for(prompts, list(range(len(prompts))), None)
    texts = vlm.render(prompts, True, sizes)
    cfg = vlm.generation_config(
        {"max_new_tokens": 1, "do_sample": True, "temperature": 1.0, "top_p": 1.0,
         "num_samples": n_gen}
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.no_grad():
        inputs = vlm.model_inputs(vlm.prompt_ids(texts), pixels, sizes)
        out = vlm.hf_model.generate(
            **inputs, generation_config=cfg, synced_gpus=in_lockstep(vlm.model),
            return_dict_in_generate=True, output_logits=True,
        )  # fmt: skip
    return out.logits[0].float().cpu()


def _first_difference(a: list[list[int]], b: list[list[int]]) -> str:
    """Says "yes" when the samples are equal, else "NO" with how many samples differ and the
    earliest token position at which any does."""
    if a == b:
        return "yes"
    where = [next((k for k, (x, y) in enumerate(zip(s, t, strict=False)) if x != y),
                  min(len(s), len(t))) for s, t in zip(a, b, strict=True) if s != t]  # fmt: skip
    return f"NO ({len(where)} of {len(a)} samples differ, the first at token {min(where)})"


def _rollout_rows(args: argparse.Namespace, name: str) -> list[dict[str, Any]]:
    """Build the LoRA policy (sharded for `rollout-fsdp`), then time `repeats` rollouts after
    one warm-up for each rollout mode, each mode's peak memory counted on its own.

    Every call is seeded alike, so the checks come free: whether a mode's calls drew the same
    tokens (run-to-run determinism of one mode), whether each mode drew the first mode's, and the
    largest difference of the first decode step's logits between two probes of one mode, between
    modes, and (`rollout-fsdp`) against the whole-weight source before sharding: a logits
    difference says the modes differ in numerics, equal logits with different tokens that
    something later does."""
    import torch
    from bench_models import peak_gib, time_per_call
    from mbpo_bench.trainers import sharding
    from mbpo_bench.trainers.grpo import GRPOSettings
    from mbpo_bench.trainers.policy import Policy

    from mbpo_bench.models.lora import apply_lora

    strategy = ROLLOUTS[name]
    device = args.device
    n_gen, n_tok = args.num_generations, args.rollout_tokens
    loaded = ""
    whole_logits = None
    if strategy == "fsdp":  # loaded as training loads under FSDP (sharding.load_sharded)
        try:
            vlm, info = _sharded_by_load(
                args, probe=lambda v: _first_step_logits(v, _rollout_prompts(args, v.image_size),
                                                         n_gen))  # fmt: skip
            whole_logits = info["probe"]
            loaded = (f"; loaded by load_sharded in {info['load_s']:.1f} s, max log-prob "
                      f"difference to the source {info['diff']:.1e}")  # fmt: skip
        except Exception as exc:  # the rollout figures still come, from a direct build
            first = (str(exc).splitlines() or [""])[0][:120]
            loaded = f"; load_sharded FAILED ({type(exc).__name__}: {first}), built directly"
            vlm, _, _ = _built(args)
            apply_lora(vlm)
            sharding.shard_model(vlm.model)
    else:
        vlm, _, _ = _built(args)
        apply_lora(vlm)
    prompts = _rollout_prompts(args, vlm.image_size)
    speed = GRPOSettings().generation_speed()
    modes = ["layerwise", "gathered"] if strategy == "fsdp" else ["whole"]
    auto = sharding.rollout_mode(vlm.model, "auto") if strategy == "fsdp" else None
    rows: list[dict[str, Any]] = []
    first: tuple[list[list[int]], Any] | None = None
    for mode in modes:
        policy = Policy(vlm=vlm, lora=True, base="bench", fsdp_rollout=mode)
        policy.train_mode(False)
        calls: list[list[list[int]]] = []  # every call's tokens: the warm-up's, then the timed

        def rollout(
            policy: Policy = policy, calls: list[list[list[int]]] = calls, mode: str = mode
        ) -> None:
            torch.manual_seed(0)
            with policy.sampling():
                done = vlm.generate_completions(
                    prompts, max_new_tokens=n_tok, min_new_tokens=n_tok, do_sample=True,
                    temperature=1.0, top_p=1.0, num_samples=n_gen, batch_size=len(prompts),
                    speed=speed,
                )  # fmt: skip
            calls.append([list(c.ids) for group in done for c in group])
            _progress(f"{mode}: rollout {len(calls)} of {args.repeats + 1} done")

        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        seconds = time_per_call(rollout, device, args.repeats)
        peak = peak_gib(device)
        with policy.sampling():  # two probes of the first decode step, after the timing
            probes = [_first_step_logits(vlm, prompts, n_gen) for _ in range(2)]
        tokens = calls[0]
        repeat = "yes"
        if any(c != tokens for c in calls):  # each later call against the first (the warm-up)
            repeat = "NO: " + "; ".join(
                f"call {k + 1} {_first_difference(tokens, c)}" for k, c in enumerate(calls[1:], 1)
            )
        note = (f"{len(prompts)} prompts x {n_gen} samples x {n_tok} tokens; same tokens in all "
                f"{len(calls)} calls (same seed): {repeat}; first-step logits max abs diff "
                f"probe-to-probe {_max_diff(probes[0], probes[1])}")  # fmt: skip
        if whole_logits is not None:
            note += f", to the whole weights {_max_diff(probes[0], whole_logits)}"
        if mode == auto:
            note += "; what runtime.fsdp_rollout=auto picks here"
        if first is None:
            first = (tokens, probes[0])
            note += loaded
        else:
            same = _first_difference(first[0], tokens)
            note += (f"; to layerwise: logits max abs diff {_max_diff(probes[0], first[1])}, "
                     f"same tokens as layerwise: {same}")  # fmt: skip
        _progress(f"{mode}: {note}")
        rows.append({
            "config": name if mode == "whole" else f"{name}-{mode}",
            "trainable_params_M": sum(p.numel() for p in vlm.model.parameters()
                                      if p.requires_grad) / 1e6,
            "step_s": seconds,
            "tokens_per_s": len(prompts) * n_gen * n_tok / seconds,
            "peak_gib": peak,
            "host_peak_gib": _host_peak_gib(),
            "note": note,
        })  # fmt: skip
    return rows


def _max_diff(a: Any, b: Any) -> str:
    return f"{float((a - b).abs().max()):.1e}"


def _sharded_by_load(args: argparse.Namespace, probe: Any = None) -> tuple[Any, dict[str, Any]]:
    """`sharding.load_sharded` (how training loads under FSDP) at the bench shape: the source is
    the random model built on the device, scored, then moved to CPU memory (rank 0's copy); the
    sharded LoRA model is built on the meta device and receives every tensor from it. Returns
    it with the load's seconds, peak GPU memory and the largest log-prob difference to the
    source (LoRA's B is zero, so the numbers must be the source's), and `probe(source)` (None
    without `probe`) computed on the whole source before the move."""
    import copy

    import torch
    from bench_models import QUESTION, peak_gib, sync
    from mbpo_bench.trainers import sharding
    from PIL import Image

    from mbpo_bench.models.common import unwrap
    from mbpo_bench.models.lora import apply_lora
    from mbpo_bench.models.protocol import Prompt

    device = args.device
    sharding.require_process_group(device)
    source, _, _ = _built(args)
    size = source.image_size
    prompts = [Prompt(QUESTION, Image.new("RGB", (size, size), (200, 30, 30)))] * 2
    with torch.no_grad():
        before = source.answer_logprobs(prompts, ["yes", "no"]).logps.float().cpu()
    probed = None if probe is None else probe(source)
    dtype = next(source.model.parameters()).dtype
    source.model.to("cpu")
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    held = {"source": source}  # dropped after the load: rank 0's CPU copy is freed
    del source

    def load(device: str, empty: bool) -> Any:
        if not empty:
            return held["source"]
        hf = unwrap(held["source"].model)
        with torch.device("meta"):
            meta = type(hf)._from_config(hf.config, attn_implementation="sdpa", dtype=dtype)
        meta.generation_config = hf.generation_config
        twin = copy.copy(held["source"])  # the same processor and tokenizer, the meta model
        twin.model = meta.eval().requires_grad_(False)
        return twin

    sync(device)
    start = time.perf_counter()
    vlm = sharding.load_sharded(load, apply_lora, device)
    sync(device)
    seconds = time.perf_counter() - start
    peak = peak_gib(device)
    held.clear()
    with torch.no_grad():
        after = vlm.answer_logprobs(prompts, ["yes", "no"]).logps.float().cpu()
    diff = float((after - before).abs().max())
    _progress(f"loaded by load_sharded in {seconds:.1f} s")
    return vlm, {"load_s": seconds, "peak_gib": peak, "diff": diff, "probe": probed}


def _load_row(args: argparse.Namespace, name: str) -> dict[str, Any]:
    vlm, info = _sharded_by_load(args)
    return {
        "config": name,
        "trainable_params_M": sum(p.numel() for p in vlm.model.parameters()
                                  if p.requires_grad) / 1e6,
        "step_s": info["load_s"],
        "tokens_per_s": None,
        "peak_gib": info["peak_gib"],
        "host_peak_gib": _host_peak_gib(),
        "note": f"load only; max log-prob difference to the source: {info['diff']:.2e}",
    }  # fmt: skip


def _child(args: argparse.Namespace) -> int:
    name = args.child
    try:
        if name in ROLLOUTS:
            rows = _rollout_rows(args, name)
        else:
            rows = [_load_row(args, name) if name in LOADS else _step_row(args, name)]
    except Exception as exc:  # out of memory and the like: the row says so, the others go on
        first = (str(exc).splitlines() or [""])[0][:160]
        rows = [{"config": name, "error": f"{type(exc).__name__}: {first}"}]
    for row in rows:
        print("ROW " + json.dumps(row), flush=True)
    return 0


def _run_config(args: argparse.Namespace, name: str, argv: list[str]) -> list[dict[str, Any]]:
    """Run configuration `name` in a process of its own under `--timeout`, echoing its progress
    lines as they come; its rows, or one error row (a time-out names the last progress line:
    how far it got)."""
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, *argv, "--child", name]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("PROGRESS "):
                print(f"  {name}: {line[9:].rstrip()}", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(timeout=10)
        last = [line[9:] for line in lines if line.startswith("PROGRESS ")][-1:] or ["none"]
        return [{"config": name, "error": f"timed out after {args.timeout} s (--timeout); "
                 f"last progress: {last[0]}"}]  # fmt: skip
    reader.join(timeout=10)
    rows = [line[4:] for line in lines if line.startswith("ROW ")]
    if rows:
        return [dict(json.loads(r)) for r in rows]
    other = [line for line in lines if line.strip() and not line.startswith("PROGRESS ")]
    tail = other[-1:] or ["no output"]
    return [{"config": name, "error": f"exit {proc.returncode}: {tail[0][:160]}"}]


def to_markdown(rows: list[dict[str, Any]], header: dict[str, str]) -> str:
    lines = [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "Training rows: one step, tokens/s counts prompt and answer tokens. `rollout-*` "
              "rows: one rollout, tokens/s counts generated tokens. `load-fsdp`: the sharded load.", "",
              "| config | trainable (M) | s/call | tokens/s | peak GPU memory (GiB) | "
              "peak host memory (GiB) | note |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | | | | | | {r['error']} |")
            continue
        peak = "n/a (CPU)" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        tps = "" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.0f}"
        lines.append(
            f"| {r['config']} | {r['trainable_params_M']:.1f} | {r['step_s']:.3f} | "
            f"{tps} | {peak} | {r['host_peak_gib']:.1f} | {r.get('note', '')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from bench_models import SHAPES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="llava", choices=["llava", "qwen2_vl", "qwen2_5_vl"])
    parser.add_argument("--shape", default="tiny", choices=["tiny", *SHAPES])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--rollout-prompts", type=int, default=8, help="prompts per rollout")
    parser.add_argument("--num-generations", type=int, default=8, help="samples per prompt")
    parser.add_argument("--rollout-tokens", type=int, default=32, help="tokens per sample")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: "
                        + ", ".join([*CONFIGS, *ROLLOUTS, *LOADS]))  # fmt: skip
    parser.add_argument("--timeout", type=int, default=280, help="seconds per configuration")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    if args.repeats < 1:
        print("error: --repeats must be at least 1 — the warm-up call is not timed",
              file=sys.stderr)  # fmt: skip
        return 2
    known = {*CONFIGS, *ROLLOUTS, *LOADS}
    unknown = [c for c in args.configs.split(",") if c not in known]
    if unknown:
        print(f"error: unknown configuration {unknown[0]!r} — use some of "
              f"{', '.join([*CONFIGS, *ROLLOUTS, *LOADS])}", file=sys.stderr)  # fmt: skip
        return 2
    import torch

    command = "python benchmarks/bench_fsdp.py " + shlex.join(argv)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    header = {"command": f"`{command}`", "device": device_name,
              "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip
    rows = []
    for name in args.configs.split(","):
        print(f"running {name} ...", flush=True)
        got = _run_config(args, name, argv)
        rows += got
        for row in got:
            print(json.dumps(row), flush=True)
        if args.out is not None:  # rewritten after every configuration
            args.out.parent.mkdir(parents=True, exist_ok=True)
            title = "# FSDP vs replicated: one training step, one rollout"
            args.out.write_text(f"{title}\n\n{to_markdown(rows, header)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
