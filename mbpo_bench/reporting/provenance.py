"""What made each number: the exact command, the resolved config and the environment of a run.

Read from the run folder's `command.txt`, `config.yaml` and `env.json` (see `mbpo_bench.runs`);
for evaluation runs `results.json` adds model and adapter ids with content hashes. A file that is
absent is said to be absent (never silently skipped). Paths are shown relative to the report so
the markdown is the same wherever the folders live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mbpo_bench.evaluation.schema import Results
from mbpo_bench.reporting.loading import read_env, read_text, relative

ENV_PACKAGES = ("mbpo-bench", "torch", "transformers", "peft", "lmms-eval", "trl")


def runs_table(
    runs: list[tuple[str, Path, Results]], report_dir: Path, baseline: str | None
) -> pd.DataFrame:
    """One row per evaluated run: folder, model, adapter, tasks, probes (+ answer mode).

    The answer-mode column appears only when some run is not in the default generate mode, and
    the input-protocol column only when some run is not `native`, so reports of default runs
    stay as they were.
    """
    modes = any(results.answer_mode != "generate" for _, _, results in runs)
    protocols = any(results.protocol != "native" for _, _, results in runs)
    rows = {}
    for name, path, results in runs:
        label = f"{name} (baseline)" if name == baseline else name
        model = results.model
        rows[label] = [
            relative(path, report_dir),
            _with_hash(model.id, model.content_hash),
            _with_hash(model.adapter_id, model.adapter_hash) if model.adapter_id else "—",
            ", ".join(sorted(results.tasks)),
            ", ".join(results.probes),
        ]
        if modes:
            rows[label].append(answer_mode_cell(results))
        if protocols:
            rows[label].append(results.protocol)
    columns = ["folder", "model", "adapter", "tasks", "probes"]
    columns += ["answer mode"] if modes else []
    columns += ["input protocol"] if protocols else []
    df = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    df.index.name = "run"
    return df


def answer_mode_cell(results: Results) -> str:
    """'choice (120 choice, 40 generate)': the run's mode and how its samples were answered."""
    counts = ", ".join(f"{n} {mode}" for mode, n in results.answered.items())
    return f"{results.answer_mode} ({counts})" if counts else results.answer_mode


def _with_hash(name: str | None, digest: str | None) -> str:
    if name is None:
        return "—"
    return f"{name} ({digest[:12]})" if digest else name


def run_section(name: str, path: Path, report_dir: Path, results: Results | None, kind: str) -> str:
    """Markdown: folder, results summary, command, environment, collapsed config."""
    lines = [f"### {name} ({kind})", "", f"- folder: `{relative(path, report_dir)}`"]
    if results is not None:
        lines += _results_lines(results)
    env = read_env(path)
    lines.append(f"- environment: {_env_summary(env) if env else 'env.json not recorded'}")
    command = read_text(path / "command.txt")
    lines += ["", "Command:", ""]
    lines += ["```", command.strip() if command else "(command.txt not recorded)", "```", ""]
    config = read_text(path / "config.yaml")
    if config is None:
        lines += ["Config: config.yaml not recorded.", ""]
    else:
        lines += [
            "<details><summary>Resolved config (config.yaml)</summary>",
            "",
            "```yaml",
            config.rstrip("\n"),
            "```",
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines)


def _results_lines(results: Results) -> list[str]:
    rate = "n/a" if results.samples_per_s is None else f"{results.samples_per_s:.1f}"
    return [
        f"- model: {_with_hash(results.model.id, results.model.content_hash)}"
        + (f", dtype {results.model.dtype}" if results.model.dtype else ""),
        f"- samples: {results.n_samples} scored, {results.items_skipped} skipped; "
        f"wall time {results.wall_time_s:.1f} s, {rate} samples/s",
        f"- bootstrap: {results.bootstrap.n_resamples} resamples, "
        f"{results.bootstrap.confidence:.0%} CI, seed {results.bootstrap.seed}",
    ]


def _env_summary(env: dict[str, Any]) -> str:
    parts = []
    for key in ("python", "platform"):
        if env.get(key):
            parts.append(f"{key} {env[key]}")
    if env.get("git_sha"):
        parts.append(f"git {str(env['git_sha'])[:12]}")
    device = env.get("device")
    if isinstance(device, dict) and device.get("name"):
        count = device.get("count") or 0
        parts.append(f"device {device['name']}" + (f" x{count}" if count and count > 1 else ""))
    packages = env.get("packages")
    if isinstance(packages, dict):
        parts += [f"{p} {packages[p]}" for p in ENV_PACKAGES if packages.get(p)]
    if env.get("time"):
        parts.append(f"at {env['time']}")
    return "; ".join(parts) if parts else "(empty env.json)"
