"""The local judge: a transformers causal LM (`--judge hf:PATH_OR_ID`), batched, greedy, on
the eval's device rules (`mbpo_bench.models.text_lm`). The model loads on first use, after
the evaluated model has answered, so a run without judge-scored items never loads it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from mbpo_bench.judges.base import Reply
from mbpo_bench.judges.config import JudgeConfig


class LocalJudge:
    def __init__(
        self, path_or_id: str, config: JudgeConfig, *, device: str, dtype: str, online: bool
    ) -> None:
        self.id = f"hf:{path_or_id}"
        self.path = path_or_id
        self.config = config
        self.device, self.dtype, self.online = device, dtype, online
        self._lm: Any = None

    def judge(self, prompts: Sequence[str]) -> Iterator[tuple[int, Reply]]:
        from mbpo_bench.models.text_lm import load_text_lm

        if self._lm is None:
            self._lm = load_text_lm(self.path, device=self.device, dtype=self.dtype,
                                    local_files_only=not self.online, role="judge")  # fmt: skip
        size = max(1, self.config.batch_size)
        for start in range(0, len(prompts), size):
            chunk = list(prompts[start : start + size])
            t0 = time.perf_counter()
            done = self._lm.complete(chunk, max_new_tokens=self.config.max_tokens, batch_size=size)
            each = (time.perf_counter() - t0) / len(chunk)
            for k, g in enumerate(done):
                yield start + k, Reply(g.text, prompt_tokens=g.prompt_tokens,
                                       completion_tokens=g.completion_tokens, seconds=each)  # fmt: skip
