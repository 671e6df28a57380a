"""`mbpo-bench eval`: evaluate a checkpoint on tasks with modality-balance probes.

The command only parses options into an `EvalConfig` and calls `run_eval`; everything heavy is
imported inside (start-up stays light). As for `train` and `mine`: defaults, then `--config FILE`,
then the options typed on the command line, then `key=value` overrides (positional or `--set`);
`--quiet` skips the config print.
Settings without an option of their own (PGD budget, bootstrap resamples, IIG null condition,
...) are reachable with `--set section.key=value`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from mbpo_bench.cli.options import ConfigFile, Overrides, Quiet, Sets


def build_config(
    *,
    model: str | None = None,
    tasks: str | None = None,
    output: Path | None = None,
    adapter: Path | None = None,
    probes: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    include_path: list[Path] | None = None,
    data_root: Path | None = None,
    max_new_tokens: int | None = None,
    skip_bad_items: bool | None = None,
    online: bool | None = None,
    trust_remote_code: bool | None = None,
    backend: str | None = None,
    answer_mode: str | None = None,
    compile: bool | None = None,
    protocol: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    config_file: Path | None = None,
    judge: str | None = None,
    judge_base_url: str | None = None,
    judge_api_key_env: str | None = None,
    judge_timeout: float | None = None,
    judge_retries: int | None = None,
    judge_concurrency: int | None = None,
    judge_prompt: list[str] | None = None,
    backbone: str | None = None,
    overrides: list[str] | None = None,
) -> Any:
    """Options -> EvalConfig: defaults, then `--config FILE`, then the options given (None: not
    given, the file's or the default value stays), then `--set` overrides; as `train` and `mine`.

    `model`, `tasks` and `output` must come from an option or the file.
    """
    from mbpo_bench.config import (
        from_dict,
        merge_dicts,
        parse_overrides,
        read_config_file,
        to_dict,
        upgrade,
    )
    from mbpo_bench.errors import UserError, check_choice
    from mbpo_bench.evaluation.choices import check_answer_mode
    from mbpo_bench.evaluation.config import EvalConfig
    from mbpo_bench.evaluation.probes import parse_probes
    from mbpo_bench.models.families import PROTOCOL_NAMES

    from_file = (
        upgrade(EvalConfig, read_config_file(config_file), str(config_file))
        if config_file is not None else {}
    )  # fmt: skip
    options = {
        "model": model,
        "adapter": str(adapter) if adapter is not None else None,
        "tasks": tasks,
        "output": str(output) if output is not None else None,
        "limit": limit,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "include_paths": [str(p) for p in include_path] if include_path is not None else None,
        "data_root": str(data_root) if data_root is not None else None,
        "skip_bad_items": skip_bad_items,
        "online": online,
        "trust_remote_code": trust_remote_code,
        "backend": backend,
        "answer_mode": answer_mode,
    }
    runtime = {  # the options of the shared runtime section
        "device": device, "dtype": dtype, "compile_layers": compile, "protocol": protocol,
        "min_pixels": min_pixels, "max_pixels": max_pixels,
    }  # fmt: skip
    for key, flag in (("model", "--model PATH_OR_HUB_ID"), ("tasks", "--tasks NAMES_OR_SUITES"),
                      ("output", "--output DIR")):  # fmt: skip
        if options[key] is None and key not in from_file:
            raise UserError(f"no {key} given — pass {flag} (or set {key} in --config)")
    data = merge_dicts(to_dict(EvalConfig()), from_file)
    data.update({k: v for k, v in options.items() if v is not None})
    data["runtime"] = {**data["runtime"], **{k: v for k, v in runtime.items() if v is not None}}
    data["answer_mode"] = check_answer_mode(str(data["answer_mode"]))
    protocol = str(data["runtime"]["protocol"])
    data["runtime"]["protocol"] = check_choice("input protocol", protocol, PROTOCOL_NAMES)
    if isinstance(data.get("probes"), dict):
        names = probes if probes is not None else data["probes"].get("names")
        data["probes"]["names"] = list(parse_probes(names))
    if backbone is not None:
        data["backbone"] = backbone
    given = {
        "spec": judge, "base_url": judge_base_url, "api_key_env": judge_api_key_env,
        "timeout_s": judge_timeout, "max_retries": judge_retries, "concurrency": judge_concurrency,
    }  # fmt: skip
    data["judge"] = {**data["judge"], **{k: v for k, v in given.items() if v is not None}}
    if judge_prompt:
        data["judge"]["prompts"] = judge_prompts(judge_prompt)
    data = merge_dicts(data, upgrade(EvalConfig, parse_overrides(overrides or []), "--set"))
    return from_dict(EvalConfig, data, where="eval")


def judge_prompts(values: list[str]) -> dict[str, str]:
    """['mbpo_mmvet=official.txt', 'mmhal=x.txt'] -> {task or rubric: path}; a bare FILE is '*'
    (every judged task of the run: refused when the run has two)."""
    from mbpo_bench.errors import UserError

    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.rpartition("=")
        name = name if sep else "*"
        if not Path(path).is_file():
            raise UserError(
                f"judge prompt file {path} not found — pass --judge-prompt TASK=FILE with an "
                "existing file"
            )
        out[name] = str(Path(path).resolve())
    return out


def eval_command(
    ctx: typer.Context,
    positional: Overrides = None,
    model: str | None = typer.Option(
        None,
        "--model",
        help="Checkpoint folder, hub id, or a training run folder (reads final/info.json). "
        "Required, here or in --config.",
    ),
    tasks: str | None = typer.Option(
        None,
        "--tasks",
        help="Task names or a suite, comma-separated. Required, here or in --config.",
    ),
    output: Path | None = typer.Option(
        None, "--output", help="Run folder (resumed if unfinished). Required, here or in --config."
    ),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter folder."),
    probes: str | None = typer.Option(
        None,
        "--probes",
        help="image,blind,mismatched,noise,adversarial,iig or all (default: all but adversarial).",
    ),
    limit: int | None = typer.Option(None, "--limit", help="First N items of each task."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    include_path: list[Path] = typer.Option([], "--include-path", help="Extra task YAML folder."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Where task data lives."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", help="Override the tasks'."
    ),
    skip_bad_items: bool = typer.Option(
        False, "--skip-bad-items", help="Skip (and report) items whose image fails to decode."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run."),
    online: bool = typer.Option(False, "--online", help="Allow downloads from the hub."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Run model code from the checkpoint."
    ),
    backend: str = typer.Option(
        "native", "--backend", help="native, or lmms-eval (image probe only)."
    ),
    answer_mode: str = typer.Option(
        "generate",
        "--answer-mode",
        help="generate (greedy decoding), or choice: close-ended items by one prefill over "
        "their answer set (others are generated).",
    ),
    compile: bool = typer.Option(
        False,
        "--compile",
        help="torch.compile the decoder layers for choice prefills and scoring passes (in "
        "generation only the vision tower); pays off on long GPU runs.",
    ),
    judge: str | None = typer.Option(
        None, "--judge", help="Judge of MM-Vet / MMHal-Bench: openai:MODEL or hf:PATH_OR_ID."
    ),
    judge_base_url: str | None = typer.Option(
        None, "--judge-base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."
    ),
    judge_api_key_env: str | None = typer.Option(
        None, "--judge-api-key-env", help="Variable holding the judge's key (OPENAI_API_KEY)."
    ),
    judge_timeout: float | None = typer.Option(
        None, "--judge-timeout", help="Seconds per judge request (60)."
    ),
    judge_retries: int | None = typer.Option(
        None, "--judge-retries", help="Retries with backoff on 429 / 5xx / timeouts (4)."
    ),
    judge_concurrency: int | None = typer.Option(
        None, "--judge-concurrency", help="Judge requests in flight (8)."
    ),
    judge_prompt: list[str] = typer.Option(
        [], "--judge-prompt", help="TASK=FILE: the judge prompt to use, e.g. the official one."
    ),
    backbone: str | None = typer.Option(
        None, "--backbone", help="The VLM's language model, run text-only (multimodal leakage)."
    ),
    protocol: str = typer.Option(
        "native",
        "--protocol",
        help="What the model is fed: native (its own processor + template), lmms-eval (lmms-eval "
        "0.7.3's stock wrapper), original (LLaVA-1.5 paper: pad to square, vicuna_v1).",
    ),
    min_pixels: int | None = typer.Option(
        None, "--min-pixels", help="Qwen: smallest image area in pixels (default: protocol's)."
    ),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", help="Qwen: largest image area in pixels (default: protocol's)."
    ),
    overrides: Sets = None,
    config_file: ConfigFile = None,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    quiet: Quiet = False,
) -> None:
    """Evaluate a model on tasks with modality-balance probes; writes results.json + samples.jsonl."""
    from mbpo_bench import parallel
    from mbpo_bench.evaluation.api import run_eval

    given = {  # options typed on the command line; the others leave the file's value. By the
        # source's name: typer >= 0.20 vendors click, so click's own enum would not match.
        name: value
        for name, value in ctx.params.items()
        if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
    }
    settings = set(inspect.signature(build_config).parameters) - {"config_file", "overrides"}
    config = build_config(
        **{k: v for k, v in given.items() if k in settings},
        config_file=config_file,
        overrides=[*(positional or []), *(overrides or [])],
    )
    results = run_eval(
        config, overwrite=overwrite, progress=not no_progress, show_config=False if quiet else None
    )
    if parallel.is_main():  # under torchrun: one summary, rank 0's (run_eval prints the config)
        typer.echo(summary(results, Path(config.output)))


def summary(results: Any, output: Path) -> str:
    """A few lines: accuracy per task and probe, visual reliance, where the files are."""
    lines = []
    for name, task in results.tasks.items():
        parts = []
        for probe, res in task.probes.items():
            key = "iig" if probe == "iig" else task.headline
            m = res.metrics.get(key) or res.metrics.get("accuracy")
            if m is not None and m.value is not None:
                parts.append(f"{probe} {m.value:.3f}")
        rel = task.balance.get("visual_reliance_blind")
        if rel is not None and rel.value is not None:
            parts.append(f"reliance(blind) {rel.value:+.3f}")
        gain = task.balance.get("multimodal_gain")
        if gain is not None and gain.value is not None:
            parts.append(f"gain {gain.value:+.3f}")
        if task.judge.get("judge_errors"):
            parts.append(f"{task.judge['judge_errors']} judge errors")
        lines.append(f"{name}: " + ", ".join(parts))
    if results.answer_mode != "generate":
        counts = ", ".join(f"{n} by {mode}" for mode, n in results.answered.items())
        why = ", ".join(f"{n} {reason}" for reason, n in results.fallbacks.items())
        lines.append(f"answer mode {results.answer_mode}: {counts}" + (f" ({why})" if why else ""))
    if results.protocol != "native":
        lines.append(f"protocol {results.protocol}")
    rate = f"{results.samples_per_s:.1f} samples/s" if results.samples_per_s else "no new samples"
    lines.append(f"{results.n_samples} samples, {rate}; results: {output / 'results.json'}")
    return "\n".join(lines)
