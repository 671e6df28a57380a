"""The OpenAI-compatible chat-completions judge, through the official `openai` client.

Works with OpenAI itself and with the servers that speak its API (vLLM, SGLang, llama.cpp's
server): `base_url` and the model come from the options, the key from an environment variable.
Retries with exponential backoff (and the server's Retry-After) are the client's own, on
timeouts, connection errors, 429 and 5xx; a thread pool keeps at most `concurrency` requests in
flight. What happens when a request still fails:
- the endpoint is unreachable, keeps timing out or answering 429/5xx, or refuses the key or the
  model (401/403/404): `JudgeUnavailable`, the run stops resumable;
- any other 4xx (e.g. a prompt over the judge's context) or a body that is not a chat completion:
  a `Reply` with `error` and the raw body, recorded as a judge error for that item.
`openai` is imported inside the functions (the CLI starts without it).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

from mbpo_bench.errors import UserError, exception_line
from mbpo_bench.judges.base import JudgeUnavailable, Reply
from mbpo_bench.judges.config import JudgeConfig

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def api_key(config: JudgeConfig) -> str:
    key = os.environ.get(config.api_key_env)
    if not key:
        raise UserError(
            f"judge API key variable {config.api_key_env} is not set — export it (the key is read "
            "from the environment, never written to a file; a local server without keys accepts "
            "any value), or name another with --judge-api-key-env"
        )
    return key


def check_reachable(base_url: str, timeout_s: float) -> None:
    """A TCP connect to the endpoint's host and port: fails fast, before the model loads."""
    url = urlparse(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UserError(
            f"judge base URL '{base_url}' is not an http(s) URL — pass e.g. "
            "--judge-base-url http://127.0.0.1:8000/v1"
        )
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=min(timeout_s, 10.0)).close()
    except OSError as exc:
        raise UserError(
            f"judge endpoint {base_url} is unreachable ({type(exc).__name__}: {exc}) — start the "
            "server or fix --judge-base-url"
        ) from exc


def _refused_setting(exc: Any) -> str | None:
    """The request parameter a 400 names as unsupported (OpenAI's `unsupported_parameter` /
    `unsupported_value`), else None: a setting problem stops the run instead of turning every
    item into a judge error."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    if getattr(exc, "status_code", None) != 400 or not isinstance(error, dict):
        return None
    if error.get("code") in ("unsupported_parameter", "unsupported_value") and error.get("param"):
        return str(error["param"])
    return None


class OpenAIJudge:
    def __init__(self, model: str, config: JudgeConfig) -> None:
        from openai import OpenAI

        self.id = f"openai:{model}"
        self.model = model
        self.config = config
        self.base_url = config.base_url or DEFAULT_BASE_URL
        self.client = OpenAI(
            base_url=self.base_url,
            api_key=api_key(config),
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )

    def _unavailable(self, exc: Exception) -> JudgeUnavailable:
        return JudgeUnavailable(
            f"judge {self.id} at {self.base_url} failed after {self.config.max_retries} retries "
            f"({exception_line(exc)}) — the run is kept unfinished: rerun the same "
            "command when the endpoint answers (judged items are cached)"
        )

    def one(self, prompt: str) -> Reply:
        import openai

        start = time.perf_counter()
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                **self._settings(),
            )
        except (
            openai.APIConnectionError,
            openai.RateLimitError,
            openai.InternalServerError,
        ) as exc:
            raise self._unavailable(exc) from exc
        except openai.APIStatusError as exc:
            refused = _refused_setting(exc)
            if refused is not None:
                raise JudgeUnavailable(
                    f"judge {self.id} refuses the request setting '{refused}' — "
                    + (
                        "pass --set judge.max_tokens_param=max_completion_tokens"
                        if refused == "max_tokens"
                        else f"change it with --set judge.{refused}=... (null leaves it out)"
                    )
                ) from exc
            if exc.status_code in (401, 403, 404):
                raise JudgeUnavailable(
                    f"judge {self.id} at {self.base_url} refused the request (HTTP "
                    f"{exc.status_code}) — check the model name and the key in "
                    f"${self.config.api_key_env}"
                ) from exc
            seconds = time.perf_counter() - start
            return Reply(None, f"HTTP {exc.status_code}", exc.response.text, seconds=seconds)
        seconds = time.perf_counter() - start
        body = raw.http_response.text
        try:
            completion: Any = raw.parse()
            text = completion.choices[0].message.content
        except Exception as exc:  # a body that is not a chat completion
            return Reply(None, f"malformed response body ({type(exc).__name__})", body,
                         seconds=seconds)  # fmt: skip
        if not isinstance(text, str):
            return Reply(None, "malformed response body (no message content)", body,
                         seconds=seconds)  # fmt: skip
        usage = getattr(completion, "usage", None)
        return Reply(
            text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            seconds=seconds,
        )

    def _settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.config.max_tokens_param: self.config.max_tokens}
        if self.config.temperature is not None:
            out["temperature"] = self.config.temperature
        return out

    def judge(self, prompts: Sequence[str]) -> Iterator[tuple[int, Reply]]:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        pool = ThreadPoolExecutor(max_workers=max(1, self.config.concurrency))
        try:
            futures = {pool.submit(self.one, p): i for i, p in enumerate(prompts)}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:  # on an outage: drop what has not started, do not wait for its retries
            pool.shutdown(wait=True, cancel_futures=True)
