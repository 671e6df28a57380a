"""`MbpoLmms`: our VisionLanguageModel as an lmms-eval model, with batched generation.

lmms-eval's stock llava_hf / qwen2_vl wrappers assert batch size 1 and import decord at the top;
this wrapper batches through the model layer's padding-aware `generate` (prompts grouped by
generation settings and sorted by length), loads checkpoints and LoRA adapters through
`mbpo_bench.models.load_model`, and works for every family the model layer knows.

This module imports lmms-eval at the top and is therefore imported only through
`lmms_plugin.MbpoLmms` (lazily), by lmms-eval's registry or by `--backend lmms-eval`.

Decisions:
- A "simple" lmms-eval model: requests carry (context, gen_kwargs, doc_to_visual, doc_id, task,
  split); the context is the task's prompt text, which the model layer wraps in the checkpoint's
  chat template with the image placeholder (no "<image>\\n" string surgery as in llava_hf).
- One image per prompt (the Protocol's contract); images are passed as decoded, and the model's
  input protocol (`models/geometry.py`) does the geometry, as on the native path, so both paths
  see identical pixels.
- Greedy unless the request asks for temperature > 0 (lmms-eval's convention); `until` stop
  strings cut the decoded text.
- Constructing the model skips lmms-eval's filelock patch where filelock >= 4 removed the module
  it patches (`lmms_compat`): otherwise `lmms-eval --model mbpo ...` dies before evaluating.
- `loglikelihood` sums the answer-token log-probs; `is_greedy` is checked by greedy decoding of
  as many tokens and comparing texts (exact, costs one short generate per batch).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from mbpo_bench.models.protocol import Prompt


def _gen_settings(gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> dict[str, Any]:
    temperature = float(gen_kwargs.get("temperature", 0) or 0)
    do_sample = bool(gen_kwargs.get("do_sample", temperature > 0)) and temperature > 0
    until = gen_kwargs.get("until") or []
    return {
        "max_new_tokens": int(gen_kwargs.get("max_new_tokens", default_max_new_tokens)),
        "do_sample": do_sample,
        "temperature": temperature if do_sample else 1.0,
        "top_p": float(gen_kwargs.get("top_p") or 1.0),
        "until": [until] if isinstance(until, str) else list(until),
    }


class MbpoLmms(lmms):  # type: ignore[misc]
    """lmms-eval model `mbpo`: `--model mbpo --model_args pretrained=DIR[,adapter=DIR,...]`."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        adapter: str | None = None,
        device: str | None = "auto",
        dtype: str = "auto",
        batch_size: int | str | None = 16,
        max_new_tokens: int = 32,
        trust_remote_code: bool = False,
        vlm: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        from mbpo_bench.evaluation.lmms_compat import skip_incompatible_filelock_patch

        # simple_evaluate builds the model before it patches filelock: with filelock >= 4 that
        # patch crashes every run, so skip it here (see lmms_compat)
        skip_incompatible_filelock_patch()
        kwargs.pop("max_batch_size", None)
        if kwargs:
            raise TypeError(f"mbpo: unknown model_args {sorted(kwargs)}")
        if vlm is None:
            from mbpo_bench.models import load_model

            vlm = load_model(
                pretrained,
                adapter=adapter,
                dtype=dtype,
                device=device or "auto",
                trust_remote_code=bool(trust_remote_code),
            )
        self.vlm = vlm
        self.pretrained = pretrained
        self.batch_size_per_gpu = 16 if batch_size in (None, "auto") else int(batch_size)
        self.default_max_new_tokens = int(max_new_tokens)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> Any:
        return self.vlm.device

    def _image(self, visuals: list[Any]) -> Any:
        if not visuals:
            return None
        return visuals[0].convert("RGB")  # the model's input protocol does the geometry

    def _prompt(
        self, context: str, doc_to_visual: Any, doc_id: Any, task: str, split: str
    ) -> Prompt:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        visuals = [v for v in (visuals or []) if v is not None]
        return Prompt(context, self._image(visuals))

    def generate_until(self, requests: list[Instance]) -> list[str]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            groups[json.dumps(req.args[1], sort_keys=True, default=str)].append(i)
        out: list[str] = [""] * len(requests)
        for indices in groups.values():
            settings = _gen_settings(
                dict(requests[indices[0]].args[1]), self.default_max_new_tokens
            )
            until = settings.pop("until")
            order = sorted(indices, key=lambda i: (len(requests[i].args[0]), i))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                prompts = [
                    self._prompt(r.args[0], *r.args[2:6]) for r in (requests[i] for i in chunk)
                ]
                texts = self.vlm.generate(prompts, batch_size=len(prompts), **settings)
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = _cut(text[0], until)
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        import torch

        res: list[tuple[float, bool]] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            prompts, answers = [], []
            for req in chunk:
                context, target, doc_to_visual, doc_id, task, split = req.args
                doc = self.task_dict[task][split][doc_id]
                answers.append(target if isinstance(target, str) else target(doc))
                prompts.append(self._prompt(context, doc_to_visual, doc_id, task, split))
            with torch.no_grad():
                lp = self.vlm.answer_logprobs(prompts, answers)
            n_tok = int(lp.mask.sum(-1).max())
            greedy = self.vlm.generate(prompts, max_new_tokens=n_tok, batch_size=len(prompts))
            for k, (total, ans) in enumerate(zip(lp.sum().tolist(), answers, strict=True)):
                res.append((float(total), greedy[k][0].strip() == ans.strip()))
        return res

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("mbpo: multi-round generation is not supported")


def _cut(text: str, until: list[str]) -> str:
    from mbpo_bench.evaluation.batches import truncate_at

    return truncate_at(text, until)
