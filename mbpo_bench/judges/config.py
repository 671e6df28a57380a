"""The judge settings of an eval run (the `judge` section of its config.yaml).

`spec` names the backend and model: `openai:MODEL` (any OpenAI-compatible chat-completions
server: OpenAI, vLLM, SGLang, llama.cpp; `base_url` points at it) or `hf:PATH_OR_ID` (a local
transformers causal LM). The API key is read from the environment variable named by
`api_key_env` at run time and never stored: config.yaml holds only the variable's name.
`prompts` maps a task (or a rubric, `mmvet` / `mmhal`) to a file with the prompt text to use
instead of our own wording, e.g. the benchmark's official prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class JudgeConfig:
    spec: str | None = None  # openai:MODEL | hf:PATH_OR_ID; None: no judge-scored task may run
    base_url: str | None = None  # openai backend; None: the client's default (api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key (never the key itself)
    timeout_s: float = 60.0  # per request, each attempt
    max_retries: int = 4  # 429 / 5xx / timeouts / connection errors, exponential backoff
    concurrency: int = 8  # requests in flight at once
    max_tokens: int = 256  # the judge's reply length
    # newer OpenAI reasoning models refuse `max_tokens` and a temperature: set
    # judge.max_tokens_param=max_completion_tokens and judge.temperature=null for them
    max_tokens_param: str = "max_tokens"
    temperature: float | None = 0.0
    batch_size: int = 8  # hf backend: prompts per generate call
    prompts: dict[str, str] = field(default_factory=dict)  # task or rubric -> prompt file
