"""Throughput of the model layer: generate, answer scoring and a PGD-style pixel-gradient step.

    python benchmarks/bench_models.py --family llava --shape tiny --device cpu \
        --out reports/perf/models_cpu.md
    python benchmarks/bench_models.py --shape llava-7b --device cuda --out reports/perf/llava7b.md
    python benchmarks/bench_models.py --shape qwen2vl-7b --device cuda --out reports/perf/qwen7b.md

`tiny` builds the offline tiny model of `--family`. The 7B shapes build random-weight models of
the real configs directly on the device in bf16 (LLaVA-1.5-7B: CLIP-L/336 + Llama-7B, 576 image
tokens; Qwen2-VL-7B at 448 px, 256 image tokens) with the tiny tokenizer: the token ids differ
from the real vocabulary, the compute per token does not. Random models emit EOS early, so
generation forces `min_new_tokens = max_new_tokens` for fixed-length timing.

Rows: `generate` (greedy, samples/s = prompts/s), `score` (answer_logprobs, no grad), `pgd_step`
(answer_logprobs with gradients w.r.t. pixels, then backward: one PGD step of mining).
The markdown written to --out starts with the exact command line.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mbpo_bench.models import Prompt, build_tiny_model, load_model

QUESTION = "Is there a red circle in the image? Answer with yes or no."


def _llava_7b(tok: Any, device: str) -> Any:
    import transformers as tf

    from mbpo_bench.models.llava import LlavaAdapter

    config = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
        ),
        text_config=tf.LlamaConfig(
            vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        ),
        image_token_index=tok.image_token_id, vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )  # fmt: skip
    model = _on_device(tf.LlavaForConditionalGeneration, config, device)
    improc = _backend(tf.CLIPImageProcessor, tf.CLIPImageProcessorPil)(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    )
    proc = tf.LlavaProcessor(
        image_processor=improc, tokenizer=tok, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    return LlavaAdapter(model, proc, tok, name="llava-1.5-7b-shape")


def _qwen2vl_7b(tok: Any, device: str) -> Any:
    import transformers as tf

    from mbpo_bench.models.loading import image_only_qwen_processor
    from mbpo_bench.models.qwen2_vl import QwenVLAdapter

    config = tf.Qwen2VLConfig(
        text_config=tf.Qwen2VLTextConfig(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                             "mrope_section": [16, 24, 24]},
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        ),
        vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "num_heads": 16,
                       "mlp_ratio": 4, "patch_size": 14, "spatial_merge_size": 2},
        image_token_id=tok.image_token_id,
        video_token_id=tok.convert_tokens_to_ids(tok.video_token),
        vision_start_token_id=tok.convert_tokens_to_ids(tok.vision_start_token),
        vision_end_token_id=tok.convert_tokens_to_ids(tok.vision_end_token),
    )  # fmt: skip
    model = _on_device(tf.Qwen2VLForConditionalGeneration, config, device)
    # Qwen2-VL-7B-Instruct's own pixel limits (preprocessor_config.json): a 448x448 image stays
    # 448x448 (256 image tokens), a 640x480 photo becomes 644x476 (391)
    improc = _backend(tf.Qwen2VLImageProcessor, tf.Qwen2VLImageProcessorPil)(
        patch_size=14, merge_size=2, size={"shortest_edge": 3136, "longest_edge": 12845056}
    )
    proc = image_only_qwen_processor("qwen2_vl", improc, tok)
    return QwenVLAdapter(model, proc, tok, name="qwen2-vl-7b-shape", family="qwen2_vl")


def qwen25vl_32b_config(tok: Any) -> Any:
    """Qwen2.5-VL-32B-Instruct's layout (its config.json: 64 decoder layers of width 5120, MLP
    27648, 40 query / 8 key-value heads, vocabulary 152064, untied lm_head; a 32-block vision
    tower of width 1280 with window attention and full attention in blocks 7, 15, 23, 31):
    33.5B parameters, ~67 GB in bf16, the largest Qwen-VL that fits one H200 with LoRA (72B's
    ~144 GB fits neither the GPU nor the host)."""
    import transformers as tf

    return tf.Qwen2_5_VLConfig(
        text_config=tf.Qwen2_5_VLTextConfig(
            vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
            num_attention_heads=40, num_key_value_heads=8, max_position_embeddings=128000,
            rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                             "mrope_section": [16, 24, 24]},
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        ),
        vision_config={"depth": 32, "hidden_size": 1280, "intermediate_size": 3456,
                       "num_heads": 16, "out_hidden_size": 5120, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                       "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"},
        image_token_id=tok.image_token_id,
        video_token_id=tok.convert_tokens_to_ids(tok.video_token),
        vision_start_token_id=tok.convert_tokens_to_ids(tok.vision_start_token),
        vision_end_token_id=tok.convert_tokens_to_ids(tok.vision_end_token),
        tie_word_embeddings=False,
    )  # fmt: skip


def _qwen25vl_32b(tok: Any, device: str) -> Any:
    import transformers as tf

    from mbpo_bench.models.loading import image_only_qwen_processor
    from mbpo_bench.models.qwen2_vl import QwenVLAdapter

    config = qwen25vl_32b_config(tok)
    model = _on_device(tf.Qwen2_5_VLForConditionalGeneration, config, device)
    # Qwen2.5-VL's pixel limits are Qwen2-VL's: a 448x448 image gives 256 image tokens
    improc = _backend(tf.Qwen2VLImageProcessor, tf.Qwen2VLImageProcessorPil)(
        patch_size=14, merge_size=2, size={"shortest_edge": 3136, "longest_edge": 12845056}
    )
    proc = image_only_qwen_processor("qwen2_5_vl", improc, tok)
    return QwenVLAdapter(model, proc, tok, name="qwen2.5-vl-32b-shape", family="qwen2_5_vl")


def _backend(fast: Any, pil: Any) -> Any:
    """The image processor class a checkpoint's AutoProcessor picks on this machine: the
    torchvision backend where torchvision imports (the GPU image), PIL otherwise;
    BENCH_PIL_PROCESSOR=1 forces PIL (the figures of reports/perf/h200/*_640x480.md)."""
    import os

    from transformers.utils import is_torchvision_available

    use_pil = os.environ.get("BENCH_PIL_PROCESSOR") == "1" or not is_torchvision_available()
    return pil if use_pil else fast


def _on_device(cls: Any, config: Any, device: str) -> Any:
    from transformers import GenerationConfig

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls._from_config(config, attn_implementation="sdpa", dtype=dtype)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(
        pad_token_id=config.text_config.pad_token_id, eos_token_id=config.text_config.eos_token_id
    )
    return model.eval().requires_grad_(False)


def build(shape: str, family: str, device: str, workdir: Path) -> Any:
    from mbpo_bench.models.tokenizer import build_tokenizer

    if shape == "tiny":
        vlm = load_model(build_tiny_model(family, workdir / family), device=device)
        vlm.name = f"tiny {family}"
        return vlm
    tok = build_tokenizer("llava" if shape == "llava-7b" else "qwen")
    return SHAPES[shape](tok, device)


SHAPES = {"llava-7b": _llava_7b, "qwen2vl-7b": _qwen2vl_7b, "qwen25vl-32b": _qwen25vl_32b}


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU. Shared by every bench."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib(device: str) -> float | None:
    """Peak allocated CUDA memory since the last reset, in GiB; None on CPU. Shared by every
    bench."""
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def time_per_call(fn: Any, device: str, repeats: int) -> float:
    """Seconds a call of `fn`: one warm-up call, then the mean of `repeats` synchronised calls.
    Shared by every bench."""
    fn()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def measure(vlm: Any, batch: int, new_tokens: int, repeats: int, device: str) -> list[dict]:
    rng = np.random.default_rng(0)
    side = vlm.image_size
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
              for _ in range(batch)]  # fmt: skip
    prompts = [Prompt(QUESTION, img) for img in images]
    answers = ["yes"] * batch

    def gen() -> None:
        vlm.generate(prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                     batch_size=batch)  # fmt: skip

    def score() -> None:
        vlm.answer_logprobs(prompts, answers)

    def pgd_step() -> None:
        pixels = vlm.images_to_tensor(images).requires_grad_(True)
        lp = vlm.answer_logprobs(prompts, answers, pixel_images=pixels, requires_grad=True)
        lp.sum().sum().backward()

    rows = []
    for op, fn in (("generate", gen), ("score", score), ("pgd_step", pgd_step)):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        seconds = time_per_call(fn, device, repeats)
        peak = peak_gib(device)
        rows.append({"op": op, "batch": batch, "s_per_call": seconds,
                     "samples_per_s": batch / seconds, "peak_gib": peak})  # fmt: skip
    return rows


def to_markdown(rows: list[dict], header: dict[str, str]) -> str:
    lines = [f"`{header['command']}`", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "command"]
    lines += ["", "| op | batch | samples/s | s/call | peak GiB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        lines.append(f"| {r['op']} | {r['batch']} | {r['samples_per_s']:.1f} | "
                     f"{r['s_per_call']:.4f} | {peak} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="llava", choices=["llava", "qwen2_vl", "qwen2_5_vl"])
    parser.add_argument("--shape", default="tiny", choices=["tiny", *SHAPES])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default="1,4,16", help="comma-separated")
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mbpo_bench.models.loading import resolve_device

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        vlm = build(args.shape, args.family, device, Path(tmp))
        n_params = sum(p.numel() for p in vlm.model.parameters())
        rows = []
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for row in measure(vlm, batch, args.new_tokens, args.repeats, device):
                rows.append(row)
                print(f"{row['op']:>8} batch {batch:>4}: {row['samples_per_s']:.1f} samples/s",
                      flush=True)  # fmt: skip
    import transformers

    dev_name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.machine()
    header = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "model": f"{vlm.name} ({vlm.family}, {n_params / 1e6:.1f}M params, {vlm.dtype}, "
        f"{vlm.image_size} px, {vlm.num_image_tokens()} image tokens)",
        "device": f"{device} {dev_name} ({torch.get_num_threads()} CPU threads)",
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
        "generate": f"greedy, exactly {args.new_tokens} new tokens; score = answer 'yes' + EOS",
        "timing": f"mean of {args.repeats} calls after one warm-up call"
        + ("; CPU shared with other jobs, expect run-to-run noise" if device == "cpu" else ""),
    }
    text = to_markdown(rows, header)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Model-layer throughput: {args.shape}\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
