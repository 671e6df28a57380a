"""Peak memory and tokens/s of one training step on ONE device: replicated (`runtime.strategy=ddp`)
against FSDP-sharded (`fsdp`, world size 1, optionally CPU-offloaded), LoRA against full
fine-tuning. This is the memory table of issue 21.

    python benchmarks/bench_fsdp.py --shape llava-7b --device cuda --batch 8 \
        --out reports/perf/h200/fsdp_llava-7b.md
    python benchmarks/bench_fsdp.py --shape tiny --device cpu --out /tmp/fsdp_tiny.md  # wiring

A step is what the SFT trainer does: answer log-probs of `--batch` image prompts with an
`--answer-tokens`-token answer, backward, gradient clipping (`sharding.clip_grad_norm`), AdamW.
The step runs through the same code as training (`shard_model`, `answer_logprobs`). The 7B
shapes are `bench_models`' random-weight bf16 models. Each configuration runs in a process of
its own: a fresh peak-memory counter, and an out-of-memory error loses only its row.
Full fine-tuning under `ddp` is expected to run out of memory at 7B on smaller GPUs. That row
is kept, as the reference point. tokens/s counts prompt and answer tokens.
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

CONFIGS = {  # name: (strategy, lora, offload)
    "ddp-lora": ("ddp", True, False),
    "fsdp-lora": ("fsdp", True, False),
    "ddp-full": ("ddp", False, False),
    "fsdp-full": ("fsdp", False, False),
    "fsdp-full-offload": ("fsdp", False, True),
}


def _step_row(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Build the model, apply the configuration, time `repeats` steps after one warm-up."""
    import torch
    from bench_models import QUESTION, build, sync
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
    vlm = build(args.shape, args.family, device, Path(tempfile.mkdtemp()))
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
    vlm.model.train(True)
    params = [p for p in vlm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, foreach=adamw_foreach(params))
    size = vlm.image_size
    prompts = [Prompt(QUESTION, Image.new("RGB", (size, size), (200, 30, 30)))] * args.batch
    answer = " ".join(["yes"] * args.answer_tokens)
    n_prompt = len(vlm.prompt_ids(vlm.render(prompts[:1], True))[0])
    n_answer = len(vlm.tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1

    def step() -> None:
        lp = vlm.answer_logprobs(prompts, [answer] * args.batch, requires_grad=True)
        loss = -(lp.logps * lp.mask).sum() / lp.mask.sum()
        loss.backward()
        sharding.clip_grad_norm(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocates the AdamW state
    sync(device)
    start = time.perf_counter()
    for _ in range(args.repeats):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.repeats
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {
        "config": name,
        "trainable_params_M": sum(p.numel() for p in params) / 1e6,
        "step_s": seconds,
        "tokens_per_s": args.batch * (n_prompt + n_answer) / seconds,
        "peak_gib": peak,
    }


def _child(args: argparse.Namespace) -> int:
    name = args.child
    try:
        row = _step_row(args, name)
    except Exception as exc:  # out of memory and the like: the row says so, the others go on
        row = {"config": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
    print("ROW " + json.dumps(row), flush=True)
    return 0


def _run_config(args: argparse.Namespace, name: str, argv: list[str]) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, *argv, "--child", name]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                          timeout=args.timeout)  # fmt: skip
    rows = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    if rows:
        return dict(json.loads(rows[-1]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"config": name, "error": f"exit {proc.returncode}: {tail[0][:160]}"}


def to_markdown(rows: list[dict[str, Any]], header: dict[str, str]) -> str:
    lines = [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| config | trainable (M) | step (s) | tokens/s | peak memory (GiB) | note |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | | | | | {r['error']} |")
            continue
        peak = "n/a (CPU)" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        lines.append(
            f"| {r['config']} | {r['trainable_params_M']:.1f} | {r['step_s']:.3f} | "
            f"{r['tokens_per_s']:.0f} | {peak} | |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="llava", choices=["llava", "qwen2_vl", "qwen2_5_vl"])
    parser.add_argument("--shape", default="tiny", choices=["tiny", "llava-7b", "qwen2vl-7b"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--timeout", type=int, default=280, help="seconds per configuration")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    import torch

    command = "python benchmarks/bench_fsdp.py " + shlex.join(argv)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    header = {"command": f"`{command}`", "device": device_name,
              "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip
    rows = []
    for name in args.configs.split(","):
        rows.append(_run_config(args, name, argv))
        print(json.dumps(rows[-1]), flush=True)
        if args.out is not None:  # rewritten after every configuration
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(f"# FSDP vs replicated, one step\n\n{to_markdown(rows, header)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
