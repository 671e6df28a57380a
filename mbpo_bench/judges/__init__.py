"""Judges for open-ended benchmarks (MM-Vet, MMHal-Bench): one interface, two backends.

- `openai:MODEL`: any OpenAI-compatible chat-completions endpoint (`http_judge.py`);
- `hf:PATH_OR_ID`: a local transformers causal LM (`local_judge.py`).

`rubrics.py` holds our own wording of each rubric and the grade parsers; `stage.py` judges a
run's answers once, caching every reply in the run folder. `check_judge` runs before the model
loads, so a wrong backend, a missing key variable or an unreachable endpoint costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mbpo_bench.errors import UserError
from mbpo_bench.judges.config import JudgeConfig

if TYPE_CHECKING:
    from mbpo_bench.judges.base import Judge

BACKENDS = ("openai", "hf")

__all__ = ["BACKENDS", "JudgeConfig", "check_judge", "make_judge", "parse_spec"]


def parse_spec(spec: str | None, tasks: list[str]) -> tuple[str, str]:
    """'openai:gpt-4o' -> ('openai', 'gpt-4o'); errors name the fix."""
    if not spec:
        raise UserError(
            f"task {tasks[0]} is scored by a judge and no judge was given — pass --judge "
            "openai:MODEL (with --judge-base-url for a local server) or --judge hf:PATH"
        )
    backend, _, model = spec.partition(":")
    if backend not in BACKENDS or not model:
        from mbpo_bench.errors import did_you_mean

        raise UserError(
            f"unknown judge backend '{backend}'{did_you_mean(backend, BACKENDS)} — use "
            "--judge openai:MODEL or --judge hf:PATH_OR_ID"
        )
    return backend, model


def check_judge(config: JudgeConfig, tasks: list[str], *, online: bool) -> None:
    """Everything about the judge that can fail before the evaluated model loads."""
    backend, model = parse_spec(config.spec, tasks)
    if "*" in config.prompts and len(tasks) > 1:
        raise UserError(
            f"one --judge-prompt FILE for {len(tasks)} judged tasks ({', '.join(tasks)}) — "
            "name the task: --judge-prompt mbpo_mmvet=FILE"
        )
    if backend == "openai":
        from mbpo_bench.judges.http_judge import DEFAULT_BASE_URL, api_key, check_reachable

        api_key(config)
        check_reachable(config.base_url or DEFAULT_BASE_URL, config.timeout_s)
    else:
        from mbpo_bench.models.loading import resolve_folder

        resolve_folder(model, local_files_only=not online)


def make_judge(config: JudgeConfig, *, device: str, dtype: str, online: bool) -> Judge:
    backend, model = parse_spec(config.spec, ["?"])
    if backend == "openai":
        from mbpo_bench.judges.http_judge import OpenAIJudge

        return OpenAIJudge(model, config)
    from mbpo_bench.judges.local_judge import LocalJudge

    return LocalJudge(model, config, device=device, dtype=dtype, online=online)
