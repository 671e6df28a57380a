"""GRPO / MBPO train on what was sampled, with the log-probs of the distribution it came from.

- A sample keeps its token ids: through its EOS, or, cut at max_new_tokens, with no EOS added.
- Scoring a sample scores exactly those ids; a text answer is its tokens + EOS; the answer mean
  (IIG, PGD, scoring) leaves the EOS out, the sequence sum (GRPO, DPO, SFT) keeps it.
- The optimised log-probs are TRL's: log_softmax(logits / temperature) gathered at the sampled
  ids (`trl.trainer.utils.selective_log_softmax`, the function TRL's GRPOTrainer uses).
- Rollouts sample with TRL's processing: no repetition penalty (a checkpoint's own, Qwen's
  1.05, is kept for evaluation), no top-k, the image token suppressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mbpo_bench.models import Prompt, build_tiny_model, load_model

torch.set_num_threads(1)


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def vlm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp(request.param)
    build_tiny_model(request.param, folder, seed=3)
    return load_model(folder)


def _prompts() -> list[Prompt]:
    return [Prompt("Is there a red circle?", _image(0)), Prompt("How many stars?", None)]


def test_samples_keep_their_ids_and_a_cut_sample_gets_no_eos(vlm):
    torch.manual_seed(0)
    done = vlm.generate_completions(
        _prompts(), do_sample=True, temperature=1.5, num_samples=3, max_new_tokens=3
    )
    eos = set(vlm._eos_ids())
    flat = [c for group in done for c in group]
    for c in flat:  # a random tiny model rarely stops: these are cut at 3 tokens
        assert c.truncated == (c.ids[-1] not in eos) and c.truncated == (len(c.ids) == 3)
    # a generated row that stops: kept through its first EOS, the padding after it dropped
    stop = vlm.tokenizer.eos_token_id
    word = vlm.tokenizer("yes", add_special_tokens=False)["input_ids"]
    stopped = vlm._completion([*word, stop, stop, stop], eos)
    assert stopped.ids == (*word, stop) and not stopped.truncated and stopped.text == "yes"
    flat.append(stopped)
    prompts = [p for p, group in zip(_prompts(), done, strict=True) for _ in group]
    prompts.append(_prompts()[0])
    lp = vlm.answer_logprobs(prompts, [c.ids for c in flat])
    assert lp.mask.sum(-1).tolist() == [len(c.ids) for c in flat]  # no EOS added to any
    assert lp.tokens.sum(-1).tolist() == [len(c.ids) - (not c.truncated) for c in flat]
    # the text form of an answer is scored as a complete answer: its tokens + EOS
    scored, n_answer = vlm.answer_token_ids(["yes"])
    assert scored[0] == [*word, stop] and n_answer == [len(word)]


def test_answer_mean_leaves_eos_out_and_the_sum_keeps_it(vlm):
    prompts = [Prompt("Is there a red circle?", _image(1))]
    lp = vlm.answer_logprobs(prompts, ["yes"])
    n = int(lp.tokens.sum())
    assert int(lp.mask.sum()) == n + 1
    assert torch.allclose(lp.mean(), lp.logps[:, :n].sum(-1) / n)
    assert torch.allclose(lp.sum(), lp.logps[:, : n + 1].sum(-1))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_optimised_logprobs_equal_trls_on_the_same_tensors(vlm, temperature):
    from trl.trainer.utils import selective_log_softmax

    torch.manual_seed(1)
    prompts = _prompts()
    done = vlm.generate_completions(prompts, do_sample=True, num_samples=1, max_new_tokens=4)
    ids = [group[0].ids for group in done]
    ours = vlm.answer_logprobs(prompts, ids, temperature=temperature)
    for k, (prompt, answer) in enumerate(zip(prompts, ids, strict=True)):
        # TRL's way, one row at a time: full logits of prompt + completion, the completion's
        # positions, logits / temperature -> log_softmax -> gather
        pixels = None if prompt.image is None else vlm.images_to_tensor([prompt.image])
        inputs, lengths = vlm.scoring_batch([prompt], [answer], pixels)
        with torch.no_grad():
            logits = vlm.hf_model(**inputs, use_cache=False).logits.float()
        n = int(lengths[0])
        completion = inputs["input_ids"][:, -n:]
        theirs = selective_log_softmax(logits[:, -n - 1 : -1], completion, temperature=temperature)
        assert torch.allclose(ours.logps[k, :n], theirs[0], atol=1e-5), k


def test_rollouts_sample_like_trl_and_evaluation_keeps_the_checkpoints_settings(tmp_path: Path):
    from support_checkpoints import QWEN2, build_real_layout

    vlm = load_model(build_real_layout(QWEN2, tmp_path / "qwen"), device="cpu")
    assert vlm.hf_model.generation_config.repetition_penalty == 1.05  # Qwen's own
    rollout = vlm.generation_config(
        {"max_new_tokens": 4, "do_sample": True, "temperature": 0.9, "num_samples": 2,
         "repetition_penalty": 1.0}
    )  # fmt: skip
    assert rollout.repetition_penalty == 1.0 and rollout.temperature == 0.9
    assert rollout.top_k is None and rollout.suppress_tokens == [151655]
    evaluation = vlm.generation_config({"max_new_tokens": 4})  # the defaults: greedy, 1 sample
    assert evaluation.repetition_penalty == 1.05 and evaluation.do_sample is False


def test_grpo_trains_on_the_sampled_ids(monkeypatch: pytest.MonkeyPatch, vlm):
    """policy_update scores each online sample's ids (no EOS for a cut one), not its re-tokenised
    text, and a mined text as its tokens + EOS."""
    from mbpo_bench.trainers import grpo, hybrid
    from mbpo_bench.trainers.grpo import GRPOSettings, Rollout

    seen: list[list[object]] = []
    real = vlm.prepare_answers  # what the step scores (once for policy and reference)

    def spy(prompts, answers, **kw):
        seen.append(list(answers))
        return real(prompts, answers, **kw)

    monkeypatch.setattr(vlm, "prepare_answers", spy)

    class _Policy:
        compile_layers = False

        def __init__(self) -> None:
            self.vlm = vlm

        def train_mode(self, on: bool) -> None:
            pass

        def compiled(self):
            import contextlib

            return contextlib.nullcontext()

        def mixed_precision(self):  # runtime.autocast off, as the real Policy on CPU
            import contextlib

            return contextlib.nullcontext()

    cut = tuple(vlm.tokenizer("yes yes", add_special_tokens=False)["input_ids"])  # no EOS
    group = hybrid.Group(0, "online", (hybrid.Sample("yes yes", 2.0, True, "online", cut),
                                       hybrid.Sample("no", 0.0, False, "online", None)))  # fmt: skip
    ro = Rollout(groups=[group], prompts=[Prompt("q?", None)], items=[])
    for p in vlm.model.parameters():
        p.requires_grad_(True)
    try:
        result = grpo.policy_update(_Policy(), ro, GRPOSettings(beta=0.0), 1)  # type: ignore[arg-type]
    finally:
        vlm.model.requires_grad_(False)
        vlm.model.zero_grad(set_to_none=True)
    assert seen == [[cut, "no"]]
    n_no = len(vlm.tokenizer("no", add_special_tokens=False)["input_ids"]) + 1
    assert result.tokens == len(cut) + n_no
