"""The resolved configuration of one `mbpo-bench eval` run (saved as the run's config.yaml).

Every default the evaluation uses is a field here (method.md: no hidden literals). A resumed
run must have the SAME config as the interrupted one (RunDir refuses otherwise), which is why
`--overwrite` is not part of it: it is an action, not a setting.

`answer_mode` "choice" answers close-ended items by one prompt prefill over their known answer
set instead of greedy decoding (`choices.py`); a run in choice mode and one in generate mode are
different measurements, which results.json records and `mbpo-bench report` flags.

`runtime.protocol` (native | lmms-eval | original) is what the model is fed: image geometry and prompt
(`models/families.py` PROTOCOLS, `models/geometry.py`); runs under different protocols are
different measurements, recorded in results.json and every samples.jsonl row.

`runtime.compile_layers` runs the choice prefills and the IIG scoring passes through torch.compile'd decoder
layers (`models/compile.py`); in generation, including the generate fallback, only the vision
tower compiles (the LM layers run eager on the KV cache). It changes speed, not the measurement
(log-probs agree to float rounding, greedy texts are the same: tests), and is recorded in
results.json's `config` like the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from mbpo_bench.config import RuntimeSection
from mbpo_bench.evaluation.probes import CHEAP_PROBES
from mbpo_bench.judges.config import JudgeConfig

AnswerMode = Literal["generate", "choice"]


@dataclass
class ProbeConfig:
    names: list[str] = field(default_factory=lambda: list(CHEAP_PROBES))
    seed: int = 0  # seeds the mismatched derangement and the noise images
    iig_null: Literal["text", "black", "noise", "mismatched"] = "text"  # I0 of method.md
    iig_reduce: Literal["mean", "sum"] = "mean"
    adversarial_eps: float = 8 / 255
    adversarial_alpha: float = 2 / 255
    adversarial_steps: int = 10
    adversarial_random_start: bool = True


@dataclass
class BootstrapConfig:
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    # the task's own metrics (MME score, CHAIR, ...) are not ratios: each resample calls the
    # task's aggregation function in Python, so they get fewer resamples
    task_metric_resamples: int = 200


@dataclass
class EvalConfig:
    model: str = ""
    adapter: str | None = None
    tasks: str = "embedded"
    output: str = "runs/eval"
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    limit: int | None = None  # first N items of each task (after the registry's order)
    # "test" (= "eval") for reports; "dev" (embedded benchmark) for choosing settings
    split: Literal["test", "eval", "dev"] = "test"
    batch_size: int = 16
    max_new_tokens: int | None = None  # None: the task's generation settings
    # device, dtype, threads, compile_layers, protocol, Qwen pixel limits: the section every
    # command shares (mbpo_bench.config.RuntimeSection); compile_layers: compiled decoder layers
    # for the prefill / scoring passes (native backend)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    include_paths: list[str] = field(default_factory=list)
    data_root: str | None = None
    skip_bad_items: bool = False
    online: bool = False
    trust_remote_code: bool = False
    backend: Literal["native", "lmms-eval"] = "native"
    answer_mode: AnswerMode = "generate"
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # grades judge-scored tasks
    backbone: str | None = None  # the VLM's language model, run text-only (probe `backbone`)
    # a batch's prompt tokens (image + text) at most (one prompt at least); None: `batch_size`
    # prompts whatever their lengths. Batches are bucketed by image tokens either way
    # (plan.batches). The default keeps a batch of 1280x720 Qwen photos (1196 image tokens) to
    # 26-27 prompts and never binds at batch_size 16 below ~2000 tokens a prompt; memory follows
    # tokens, not prompts (H200, 7B shapes: reports/perf/h200/eval_*_640x480*.md)
    max_batch_tokens: int | None = 32768
    # worker processes preparing the next batch's images (evaluation/loader.py); None: 0, in the
    # main process (on the H200 8 workers were 6-8% slower at batch 64 with in-memory 640x480
    # images: reports/perf/h200/eval_*_640x480.md). Speed only: the rows are the same
    input_workers: int | None = None

    # the flat spellings before the shared runtime section: read for one release, with a warning
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "device": "runtime.device", "dtype": "runtime.dtype",
        "compile": "runtime.compile_layers", "protocol": "runtime.protocol",
        "min_pixels": "runtime.min_pixels", "max_pixels": "runtime.max_pixels",
    }  # fmt: skip
