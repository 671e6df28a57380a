"""Shared-prefix packing (`models.packing`, `grpo.packed_scoring`): one copy of a prompt, its
answers behind it, scored exactly like one row per answer.

The references are the one-row-per-answer passes of the same model on the same inputs: a
real-shaped mix (a non-square photo, a square one, a text-only prompt; answers of different
lengths as texts and as sampled ids), both families, log-probs and LoRA gradients; and a whole
GRPO update (loss, KL, gradients) on a fixed rollout."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from support_prompts import noise_image, with_random_adapter

from mbpo_bench.errors import UserError
from mbpo_bench.models import build_tiny_model, packing
from mbpo_bench.models.protocol import Prompt

FAMILIES = ["llava", "qwen2_vl"]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("packing")
    return {f: with_random_adapter(build_tiny_model(f, root / f, seed=1)) for f in FAMILIES}


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8))  # 64x40, not square


def _batch(vlm: Any) -> tuple[list[Prompt], list[Any], list[int]]:
    """Three prompts' answers, rows of one prompt not adjacent everywhere."""
    photo = Prompt("Is there a red circle? Answer with yes or no.", _photo())
    square = Prompt("How many stars?", noise_image(5))
    text = Prompt("There is a star. Is there a heart?", None)

    def ids(t: str) -> list[int]:
        out: list[int] = vlm.tokenizer(t, add_special_tokens=False)["input_ids"]
        return out

    prompts = [photo, photo, square, photo, square, text, text]
    answers = ["yes", ids("maybe so"), "two", "no it is not", ids("red")[:1], "three", "four five"]
    return prompts, answers, [0, 0, 1, 0, 1, 2, 2]


def _scores_and_grads(vlm: Any, shared: list[int] | None) -> tuple[Any, torch.Tensor]:
    prompts, answers, keys = _batch(vlm)
    vlm.model.zero_grad()
    prepared = vlm.prepare_answers(prompts, answers, shared=keys if shared else None)
    lp = vlm.prepared_logprobs(prepared, requires_grad=True)
    (lp.logps * lp.mask).sum().backward()
    grads = [p.grad.flatten() for n, p in vlm.model.named_parameters() if "lora_" in n]
    return lp, torch.cat(grads)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_scores_and_lora_gradients_equal_one_row_per_answer(
    adapted: dict[str, Any], family: str
) -> None:
    vlm = adapted[family]
    one, g_one = _scores_and_grads(vlm, None)
    packed, g_packed = _scores_and_grads(vlm, [1])
    assert torch.equal(one.mask, packed.mask) and torch.equal(one.answer_mask, packed.answer_mask)
    assert (one.logps - packed.logps).abs().max() < 1e-5
    assert g_one.abs().max() > 0.1  # the adapter's gradient is not trivially zero
    assert (g_one - g_packed).abs().max() < 1e-5 * g_one.abs().max()


def test_packing_runs_each_prompt_once(adapted: dict[str, Any]) -> None:
    """Three prompts -> three rows, each holding its prompt once (the point of packing)."""
    vlm = adapted["llava"]
    prompts, answers, keys = _batch(vlm)
    parts = vlm.prepare_answers(prompts, answers, shared=keys).parts
    image_part, text_part = parts
    assert image_part.inputs["input_ids"].shape[0] == 2 and image_part.idx == [0, 1, 2, 3, 4]
    assert text_part.inputs["input_ids"].shape[0] == 1 and text_part.idx == [5, 6]
    assert image_part.inputs["pixel_values"].shape[0] == 2
    image_tokens = (image_part.inputs["input_ids"] == vlm.image_token_id).sum(-1)
    assert image_tokens.tolist() == [vlm.num_image_tokens(vlm.processed_size(_photo())),
                                     vlm.num_image_tokens(vlm.processed_size(noise_image(5)))]  # fmt: skip


def test_layout_hides_answers_from_each_other_and_restarts_their_positions() -> None:
    lay = packing.pack([[1, 2, 3], [4, 5]], [[10, 11], [12], [13, 14, 15]], [0, 0, 1], pad_id=0)
    assert lay.input_ids.tolist() == [[1, 2, 3, 10, 11, 12], [4, 5, 13, 14, 15, 0]]
    assert lay.positions.tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 2, 3, 4, 0]]
    allow = lay.allow.int().tolist()
    assert allow[0][5] == [1, 1, 1, 0, 0, 1]  # answer 2 sees the prompt and itself, not answer 1
    assert allow[0][4] == [1, 1, 1, 1, 1, 0]
    assert allow[1][5] == [0, 0, 0, 0, 0, 1]  # padding sees itself only (no fully masked row)
    assert allow[1][1] == [1, 1, 0, 0, 0, 0]  # the prompt stays causal
    # first tokens are predicted at their prompt's last position, the rest inside the answer
    assert list(zip(lay.hidden_rows.tolist(), lay.hidden_cols.tolist(), strict=True)) == [
        (0, 2), (0, 3), (0, 2), (1, 1), (1, 2), (1, 3)]  # fmt: skip


def test_owners_keep_the_order_of_first_appearance() -> None:
    assert packing.owners(["b", "a", "b", "c", "a"]) == ([0, 1, 3], [0, 1, 0, 2, 1])


def test_masks_follow_the_attention_implementation_and_flash_is_refused() -> None:
    allow = torch.tensor([[[True, False], [True, True]]])
    sdpa = packing.attention_mask(SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa")),
                                  allow, torch.float32)  # fmt: skip
    assert sdpa.dtype == torch.bool and sdpa.shape == (1, 1, 2, 2)
    cfg = SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager"))
    eager = packing.attention_mask(cfg, allow, torch.bfloat16)
    assert eager.dtype == torch.bfloat16 and eager[0, 0, 0, 1] == torch.finfo(torch.bfloat16).min
    assert eager[0, 0, 1].tolist() == [0.0, 0.0]
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    with pytest.raises(
        UserError, match=r"packed scoring needs SDPA or eager .*grpo\.packed_scoring off"
    ):
        packing.attention_mask(flash, allow, torch.float32)


def test_a_sharing_key_per_row_is_required(adapted: dict[str, Any]) -> None:
    vlm = adapted["llava"]
    prompts, answers, _ = _batch(vlm)
    with pytest.raises(UserError, match="6 sharing keys for 7 prompts"):
        vlm.prepare_answers(prompts, answers, shared=[0] * 6)


def _policy_with_images(tmp_path: Path, family: str) -> Any:
    """A tiny LoRA policy with its reference (seeded B != 0: policy and reference differ, the
    KL is not zero) and two images in `tmp_path`: a.png (a non-square photo) and b.png."""
    from mbpo_bench.trainers.loop import RuntimeConfig
    from mbpo_bench.trainers.policy import load_policy

    from mbpo_bench.models.lora import LoraSettings

    folder = build_tiny_model(family, tmp_path / "m", seed=1)
    policy = load_policy(str(folder), lora=LoraSettings(r=4, alpha=8), full_finetune=False,
                         runtime=RuntimeConfig(device="cpu"), need_reference=True)  # fmt: skip
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, p in policy.vlm.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    _photo().save(tmp_path / "a.png")
    noise_image(3).save(tmp_path / "b.png")
    return policy


def _grads(model: Any) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _fixed_rollout(policy: Any, tmp_path: Path) -> Any:
    """Two groups of three sampled answers of different lengths, rewards that vary."""
    from mbpo_bench.trainers import grpo
    from mbpo_bench.trainers.data import item_prompts
    from mbpo_bench.trainers.hybrid import Group, Sample

    from mbpo_bench.data.items import TaskItem

    items = [TaskItem("t", str(k), f"Is it red? ({k}) Answer yes or no.", "yes", "yesno",
                      tmp_path / n) for k, n in enumerate(["a.png", "b.png"])]  # fmt: skip
    tok = policy.vlm.tokenizer
    texts = [["yes", "no", "yes it is"], ["no", "maybe", "yes"]]
    groups = [
        Group(g, "online", tuple(
            Sample(t, reward=float(k == 0) + 0.5 * k, token_ids=tuple(
                tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
            for k, t in enumerate(ts)))
        for g, ts in enumerate(texts)
    ]  # fmt: skip
    return grpo.Rollout(groups=groups, prompts=item_prompts(items), items=items)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_packed_grpo_update_equals_the_unpacked_one(tmp_path: Path, family: str) -> None:
    """policy_update on one fixed rollout (two groups, micro-batches of 2 that split a group),
    KL to the reference on: the same loss, KL and LoRA gradients with and without packing."""
    from mbpo_bench.trainers import grpo

    policy = _policy_with_images(tmp_path, family)
    ro = _fixed_rollout(policy, tmp_path)
    results = []
    for packed in (False, True):
        policy.vlm.model.zero_grad()
        s = grpo.GRPOSettings(num_generations=3, beta=0.1, packed_scoring=packed)
        res = grpo.policy_update(policy, ro, s, grad_accum=3)  # rows 0-1 | 2-3 | 4-5
        results.append((res, _grads(policy.vlm.model)))
    (one, g_one), (packed_res, g_packed) = results
    assert one.metrics["kl"] > 1e-4
    assert abs(one.loss - packed_res.loss) < 1e-5
    assert abs(one.metrics["kl"] - packed_res.metrics["kl"]) < 1e-6
    assert (g_one - g_packed).abs().max() < 1e-5 * g_one.abs().max()


def test_grpo_diagnostics_do_not_depend_on_the_micro_batch_split(tmp_path: Path) -> None:
    """kl, clip_fraction and ratio_mean are token means of the whole step: micro-batches of 6,
    3 and 2 rows (of different token counts) log the same values, as the loss always did."""
    from mbpo_bench.trainers import grpo

    policy = _policy_with_images(tmp_path, "llava")
    ro = _fixed_rollout(policy, tmp_path)
    s = grpo.GRPOSettings(num_generations=3, beta=0.1)
    logged = [grpo.policy_update(policy, ro, s, grad_accum=k) for k in (1, 2, 3)]
    whole = logged[0]
    assert whole.metrics["kl"] > 1e-4 and whole.metrics["ratio_mean"] == pytest.approx(1.0)
    for other in logged[1:]:
        assert other.loss == pytest.approx(whole.loss, abs=1e-6)
        for key in ("kl", "clip_fraction", "ratio_mean"):
            assert other.metrics[key] == pytest.approx(whole.metrics[key], rel=1e-5, abs=1e-7)


def test_packed_scoring_through_compiled_layers_equals_eager(adapted: dict[str, Any]) -> None:
    """Under `compiled_layers` (what GRPO's reference and update passes run with
    runtime.compile_layers) the packed batch's 4D mask and position ids trace through dynamo
    and give the eager scores."""
    from mbpo_bench.models.compile import compiled_layers

    vlm = adapted["llava"]
    eager, _ = _scores_and_grads(vlm, [1])
    with compiled_layers(vlm, backend="eager"):
        compiled, _ = _scores_and_grads(vlm, [1])
    assert (eager.logps - compiled.logps).abs().max() < 1e-5


@pytest.mark.parametrize("mdpo_weight", [0.0, 1.0])
def test_a_packed_dpo_loss_equals_the_unpacked_one(tmp_path: Path, mdpo_weight: float) -> None:
    """`packed_scoring` in DPO (chosen and rejected behind one copy of the prompt; with mDPO
    the corrupted-image row keeps its own): the same loss, statistics and LoRA gradients."""
    from mbpo_bench.trainers import dpo
    from mbpo_bench.trainers.data import PreferencePair

    policy = _policy_with_images(tmp_path, "qwen2_vl")
    pairs = [
        PreferencePair("t", str(k), str(tmp_path / n), f"Is it red? ({k})", "yes", "yesno", (),
                       chosen, rejected)
        for k, (n, chosen, rejected) in enumerate(
            [("a.png", "yes", "no it is not"), ("b.png", "two red stars", "no")])
    ]  # fmt: skip
    results = []
    for packed in (False, True):
        policy.vlm.model.zero_grad()
        cfg = dpo.DPOConfig(mdpo_weight=mdpo_weight, packed_scoring=packed)
        loss, stats = dpo._micro_loss(policy, pairs, cfg, seed=0, n_global=len(pairs))
        loss.backward()
        grads = _grads(policy.vlm.model)
        results.append((float(loss), stats, grads))
    (l_one, s_one, g_one), (l_packed, s_packed, g_packed) = results
    assert abs(l_one - l_packed) < 1e-5
    assert s_one.keys() == s_packed.keys()
    assert all(abs(s_one[k] - s_packed[k]) < 1e-4 for k in s_one)
    assert g_one.abs().max() > 1e-3
    assert (g_one - g_packed).abs().max() < 1e-5 * g_one.abs().max()


def test_rows_of_one_key_must_share_their_prompt(adapted: dict[str, Any]) -> None:
    vlm = adapted["llava"]
    prompts, answers, _ = _batch(vlm)
    with pytest.raises(UserError, match=r"rows sharing the key 0 have different prompts or images"):
        vlm.prepare_answers(prompts, answers, shared=[0] * len(prompts))
