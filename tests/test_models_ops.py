"""Adapter operations on tiny models of every family: generation, scoring, the pixel path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mbpo_bench.models import Prompt, build_tiny_model, load_model

torch.set_num_threads(1)
FAMILIES = ["llava", "llava_siglip_qwen2", "qwen2_vl", "qwen2_5_vl"]


def _image(seed: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=FAMILIES)
def vlm(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    build_tiny_model(request.param, folder, seed=1)
    return load_model(folder)


def _prompts() -> list[Prompt]:
    return [
        Prompt("Is there a red circle? Answer with yes or no.", _image(0)),
        Prompt("How many stars?", None),
        Prompt("What colour is the square? Answer with one word.", _image(1)),
        Prompt("Is there a ring?", _image(2)),
        Prompt("There is a star. Is there a heart? Answer with yes or no.", None),
    ]


def test_batched_greedy_equals_one_by_one(vlm):
    prompts = _prompts()
    batched = vlm.generate(prompts, max_new_tokens=5, batch_size=8)
    single = [vlm.generate([p], max_new_tokens=5)[0] for p in prompts]
    assert batched == single
    assert all(len(texts) == 1 for texts in batched)


def test_sampling_returns_num_samples_per_prompt(vlm):
    torch.manual_seed(0)
    out = vlm.generate(_prompts()[:3], do_sample=True, num_samples=4, max_new_tokens=3)
    assert [len(texts) for texts in out] == [4, 4, 4]


def test_answer_logprobs_sum_equals_model_loss(vlm):
    prompts = [p for p in _prompts() if p.image is not None]
    answers = ["yes", "red", "no"]
    lp = vlm.answer_logprobs(prompts, answers)
    pixels = vlm.images_to_tensor([p.image for p in prompts])
    inputs, lengths = vlm.scoring_batch(prompts, answers, pixels)
    labels = torch.full_like(inputs["input_ids"], -100)
    width = labels.shape[1]
    for row, n in enumerate(lengths.tolist()):
        labels[row, width - n :] = inputs["input_ids"][row, width - n :]
    with torch.no_grad():
        loss = vlm.hf_model(**inputs, labels=labels).loss
    assert lp.mask.sum(-1).tolist() == lengths.tolist()
    assert torch.allclose(-lp.sum().sum() / lp.mask.sum(), loss, atol=1e-5)
    assert not lp.logps.requires_grad


def test_mixed_batch_scores_equal_separate_scores(vlm):
    prompts = _prompts()
    answers = ["yes", "three", "blue", "no", "no"]
    together = vlm.answer_logprobs(prompts, answers)
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        alone = vlm.answer_logprobs([p], [a])
        n = int(alone.mask.sum())
        assert int(together.mask[i].sum()) == n
        assert torch.allclose(together.logps[i, :n], alone.logps[0, :n], atol=1e-5)


def test_pixels_to_inputs_equals_processor(vlm):
    images = [_image(3), _image(4)]
    ref = vlm.processor.image_processor(images=images, return_tensors="pt")
    ours = vlm.pixels_to_inputs(vlm.images_to_tensor(images))
    assert set(ours) == {k for k in ref if k in ("pixel_values", "image_grid_thw")}
    for key, value in ours.items():
        assert value.shape == ref[key].shape
        assert torch.allclose(value.float(), ref[key].float(), atol=1e-5), key


def test_prompt_tokens_equal_processor(vlm):
    prompts = [p for p in _prompts() if p.image is not None]
    conv = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.text}]}]
        for p in prompts
    ]
    texts = vlm.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    ref = vlm.processor(text=texts, images=[p.image for p in prompts], return_tensors="pt",
                        padding=True)  # fmt: skip
    rendered = vlm.render(prompts, with_image=True)
    ours = vlm.model_inputs(
        vlm.prompt_ids(rendered), vlm.images_to_tensor([p.image for p in prompts])
    )
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in ours:
            assert torch.equal(ours[key], ref[key].to(ours[key].dtype)), key


def test_text_only_prompt_has_no_image_tokens(vlm):
    text = vlm.render([Prompt("Is there a red circle?")], with_image=False)[0]
    ids = vlm.prompt_ids([text])[0]
    assert vlm.image_token_id not in ids
    assert vlm.image_token not in text
    with_image = vlm.prompt_ids(vlm.render([Prompt("Is there a red circle?")], with_image=True))
    assert with_image[0].count(vlm.image_token_id) == vlm.num_image_tokens() > 0


def test_gradients_reach_pixels(vlm):
    prompts = [p for p in _prompts() if p.image is not None][:2]
    pixels = vlm.images_to_tensor([p.image for p in prompts]).requires_grad_(True)
    lp = vlm.answer_logprobs(prompts, ["yes", "no"], pixel_images=pixels, requires_grad=True)
    lp.sum().sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    plain = vlm.answer_logprobs(prompts, ["yes", "no"])
    assert torch.allclose(lp.logps.detach(), plain.logps, atol=1e-5)


def test_pixel_images_override_in_generate(vlm):
    prompts = [Prompt("Is there a star?", _image(5)), Prompt("Is there a ring?", None)]
    pixels = vlm.images_to_tensor([_image(5), _image(6)])
    out = vlm.generate(prompts, pixel_images=pixels, max_new_tokens=3)
    assert out[0] == vlm.generate(prompts[:1], max_new_tokens=3)[0]


def test_generate_options_are_one_typed_set_and_a_misspelt_one_fails(vlm):
    """`generate` and `generate_completions` take the keys of `GenerateOptions` (declared once);
    a key outside it fails loudly instead of being ignored."""
    prompts = [Prompt("Is there a star?", None)]
    texts = vlm.generate(prompts, max_new_tokens=3)
    done = vlm.generate_completions(prompts, max_new_tokens=3)
    assert texts == [[c.text for c in done[0]]]
    with pytest.raises(TypeError, match=r"unknown options \['max_new_token'\]"):
        vlm.generate(prompts, max_new_token=3)


def test_images_are_resized_to_model_resolution(vlm):
    x = vlm.images_to_tensor([_image(7, size=60)])
    assert x.shape == (1, 3, vlm.image_size, vlm.image_size)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_answer_is_scored_with_eos(vlm):
    lp = vlm.answer_logprobs([Prompt("Is there a ring?", None)], ["yes"])
    assert int(lp.mask.sum()) == 2  # "yes" is one token, then EOS


def test_mismatched_lengths_are_a_user_error(vlm, tmp_path: Path):
    from mbpo_bench.errors import UserError

    with pytest.raises(UserError, match="answers"):
        vlm.answer_logprobs([Prompt("a")], ["b", "c"])
