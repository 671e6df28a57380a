"""Real-layout checkpoints see exactly what their reference pipeline gives them.

Folders are laid out like the hub snapshots (`support_checkpoints.py`); images are real photos
(scikit-image's bundled samples) and generated ones of the shapes users bring (640x480,
427x640, 1280x720, 384x191, 48x48). References:
- `native`: the checkpoint's own processor (`AutoProcessor`; on an install without torchvision,
  where `AutoProcessor` cannot build a Qwen processor, the stock `Qwen2VLProcessor` /
  `Qwen2_5_VLProcessor` class over the folder's own image processor and tokenizer, i.e.
  transformers' own `__call__`), applied to the checkpoint's own chat template.
- `original`: LLaVA-1.5's prompt string written out literally, and the image padded to square
  with the mean colour then passed through the CLIP processor; transformers'
  `LlavaImageProcessor(do_pad=True)` is checked to agree.
- `lmms-eval`: literal strings of lmms-eval 0.7.3's prompts and qwen_vl_utils' token counts here;
  the stock wrappers themselves in `test_lmms_stock_wrappers_feed_the_same_tensors` (marker lmms).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support_checkpoints import LLAVA, QWEN2, QWEN25, QWEN25_OLD, build_real_layout

from mbpo_bench.errors import UserError
from mbpo_bench.models import Prompt, load_model
from mbpo_bench.models.geometry import expand2square

torch.set_num_threads(1)
QUESTION = "What is shown in the image? Answer with one word."


def photos() -> dict[str, Image.Image]:
    import skimage.data as sd

    rng = np.random.default_rng(0)

    def generated(w: int, h: int) -> Image.Image:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1)
        noise = rng.integers(0, 40, (h, w, 3))
        return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))

    out = {
        "astronaut": Image.fromarray(sd.astronaut()),
        "chelsea": Image.fromarray(sd.chelsea()),
        "coffee": Image.fromarray(sd.coffee()),
        "rocket": Image.fromarray(sd.rocket()),
    }
    for w, h in ((640, 480), (427, 640), (1280, 720), (384, 191), (48, 48)):
        out[f"{w}x{h}"] = generated(w, h)
    return out


PHOTOS = photos()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    return {
        layout: build_real_layout(layout, root / layout.replace("/", "__").replace("@", "_"))
        for layout in (LLAVA, QWEN2, QWEN25, QWEN25_OLD)
    }


def reference_processor(folder: Path) -> object:
    """The checkpoint's own processor, as a user's `AutoProcessor.from_pretrained` builds it.

    Where `AutoProcessor` cannot build a Qwen processor (no torchvision: the stock class demands
    its video processor; an older Qwen2.5-VL snapshot: an image processor name transformers no
    longer knows), the stock processor class over the folder's own image processor (the
    backend AutoProcessor would pick) and tokenizer, i.e. transformers' own `__call__`."""
    import transformers as tf
    from transformers.utils import is_torchvision_available

    try:
        return tf.AutoProcessor.from_pretrained(folder)
    except (ImportError, ValueError):
        pass
    from mbpo_bench.models.loading import image_only_qwen_processor

    tok = tf.AutoTokenizer.from_pretrained(folder)
    improc_cls = (
        tf.Qwen2VLImageProcessor if is_torchvision_available() else tf.Qwen2VLImageProcessorPil
    )
    improc = improc_cls.from_pretrained(folder)
    family = json.loads((folder / "config.json").read_text())["model_type"]
    return image_only_qwen_processor(family, improc, tok)


def ours(vlm, prompts: list[Prompt]) -> dict[str, torch.Tensor]:
    pixels = vlm.images_to_tensor([p.image for p in prompts])
    sizes = vlm.image_sizes(prompts, pixels)
    return vlm.model_inputs(vlm.prompt_ids(vlm.render(prompts, True, sizes)), pixels, sizes)


def pixel_atol() -> float:
    """0 on the PIL backend (bit-identical). The torchvision backend fuses rescale and
    normalisation into one `(x - 255 mean) / (255 std)`, ours is `(x / 255 - mean) / std` (it
    must stay differentiable in [0,1] pixels for PGD): the same geometry, the last float bit
    differs (measured max 2.4e-7 on these photos), so there 1e-6."""
    from transformers.utils import is_torchvision_available

    return 1e-6 if is_torchvision_available() else 0.0


def assert_same(mine: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        if key not in ref:
            continue
        assert mine[key].shape == ref[key].shape, key
        a, b = mine[key].cpu(), ref[key].to(mine[key].dtype)
        if key == "pixel_values" and pixel_atol() > 0:
            torch.testing.assert_close(a, b, rtol=0.0, atol=pixel_atol(), msg=key)
        else:
            assert torch.equal(a, b), key


@pytest.mark.parametrize("layout", [LLAVA, QWEN2, QWEN25, QWEN25_OLD])
def test_native_equals_the_checkpoints_processor(folders, layout):
    """One batch of every photo: pixel_values, input_ids, image_grid_thw bit-identical."""
    vlm = load_model(folders[layout], device="cpu")
    ref_proc = reference_processor(folders[layout])
    images = list(PHOTOS.values())
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = ref_proc.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    ref = ref_proc(
        text=[text] * len(images),
        images=images,
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    assert_same(ours(vlm, [Prompt(QUESTION, img) for img in images]), ref)


def test_native_qwen_token_counts_follow_smart_resize(folders):
    """The token counts the README quotes (Qwen2-VL-7B-Instruct's own limits)."""
    vlm = load_model(folders[QWEN2], device="cpu")
    counts = {
        name: vlm.num_image_tokens(vlm.geometry.size(PHOTOS[name]))
        for name in ("640x480", "1280x720", "384x191", "48x48", "427x640")
    }
    assert counts == {"640x480": 391, "1280x720": 1196, "384x191": 98, "48x48": 4, "427x640": 345}


def test_min_max_pixels_override_the_checkpoint(folders):
    vlm = load_model(folders[QWEN2], device="cpu", max_pixels=448 * 448)
    # smart_resize: beta = sqrt(1280 * 720 / 448^2); floor to multiples of 28
    assert vlm.geometry.size(PHOTOS["1280x720"]) == (336, 588)
    assert vlm.num_image_tokens((336, 588)) == 252
    assert vlm.images_to_tensor([PHOTOS["1280x720"]]).shape == (1, 3, 336, 588)
    with pytest.raises(UserError, match="min-pixels"):
        load_model(folders[QWEN2], device="cpu", min_pixels=10**6, max_pixels=10**5)
    with pytest.raises(UserError, match="Qwen"):
        load_model(folders[LLAVA], device="cpu", max_pixels=10**5)


def test_original_llava_pads_to_square_with_the_mean(folders):
    import transformers as tf

    vlm = load_model(folders[LLAVA], device="cpu", protocol="original")
    proc = tf.AutoProcessor.from_pretrained(folders[LLAVA])
    improc = proc.image_processor
    # literal LLaVA-1.5 prompt (conv_vicuna_v1, image token first) with llava-hf's expansion
    text = (
        "A chat between a curious human and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the human's questions. USER: <image>\n"
        f"{QUESTION} ASSISTANT:"
    )
    images = list(PHOTOS.values())
    mean = tuple(int(x * 255) for x in improc.image_mean)
    squared = [expand2square(img.convert("RGB"), mean) for img in images]
    ref = proc(
        text=[text] * len(images),
        images=squared,
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    assert_same(ours(vlm, [Prompt(QUESTION, img) for img in images]), ref)
    # transformers' own implementation of the same padding agrees
    from transformers.utils import is_torchvision_available

    # on the backend AutoProcessor picked, so the only difference left is the padding
    llava_improc = (
        tf.LlavaImageProcessor if is_torchvision_available() else tf.LlavaImageProcessorPil
    )
    padded = llava_improc.from_pretrained(folders[LLAVA], do_pad=True)
    pv = padded(images=images, return_tensors="pt")["pixel_values"]
    assert torch.equal(pv, ref["pixel_values"])
    # a square photo is the same under every protocol
    square = PHOTOS["astronaut"]
    native = load_model(folders[LLAVA], device="cpu")
    assert torch.equal(native.images_to_tensor([square]), vlm.images_to_tensor([square]))


def test_lmms_eval_prompts_and_geometry(folders):
    """lmms-eval 0.7.3's prompts written out, and its Qwen geometry (JPEG q85, its limits)."""
    llava = load_model(folders[LLAVA], device="cpu", protocol="lmms-eval")
    text = llava.render([Prompt(QUESTION, PHOTOS["chelsea"])], True, [(336, 336)])[0]
    vicuna = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: <image>\n"
        f"{QUESTION} ASSISTANT:"
    )
    assert text == vicuna.replace("<image>", "<image>" * 576)
    native = load_model(folders[LLAVA], device="cpu")
    img = PHOTOS["640x480"]
    assert torch.equal(native.images_to_tensor([img]), llava.images_to_tensor([img]))

    qwen2 = load_model(folders[QWEN2], device="cpu", protocol="lmms-eval")
    qwen25 = load_model(folders[QWEN25], device="cpu", protocol="lmms-eval")
    # qwen2_vl: max_pixels 602112 -> 1280x720 is 1008x560 (720 tokens) instead of 1196
    assert qwen2.geometry.size(PHOTOS["1280x720"]) == (560, 1008)
    assert qwen2.images_to_tensor([PHOTOS["1280x720"]]).shape == (1, 3, 560, 1008)
    # qwen2_5_vl: min_pixels 200704 lifts a 384x191 image from 98 to 276 tokens (644x336)
    assert qwen25.num_image_tokens(qwen25.geometry.size(PHOTOS["384x191"])) == 276
    prompt = qwen2.render([Prompt(QUESTION, PHOTOS["48x48"])], True)[0]
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    # the JPEG round trip changes pixels: not the native tensor
    a = qwen2.images_to_tensor([PHOTOS["chelsea"]])
    b = load_model(folders[QWEN2], device="cpu").images_to_tensor([PHOTOS["chelsea"]])
    assert a.shape == b.shape and not torch.equal(a, b)


def test_protocols_a_family_lacks_are_refused(folders):
    with pytest.raises(UserError, match="protocol 'original' is not defined for model family"):
        load_model(folders[QWEN2], device="cpu", protocol="original")
    with pytest.raises(UserError, match="unknown input protocol 'lmms'"):
        load_model(folders[QWEN2], device="cpu", protocol="lmms")


def test_qwen_tokenizer_is_real(folders):
    """The layout's tokenizer is what a user has: no image_token attribute, real special ids."""
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(folders[QWEN2])
    assert not hasattr(tok, "image_token")
    assert type(tok).__name__ == "Qwen2Tokenizer"
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>", "<|image_pad|>"])
    assert ids == [151643, 151645, 151655]
    llava = tf.AutoTokenizer.from_pretrained(folders[LLAVA])
    assert llava.chat_template is None
    assert llava.convert_tokens_to_ids(["<s>", "</s>", "<image>", "<pad>"]) == [1, 2, 32000, 32001]


@pytest.mark.parametrize("layout", [LLAVA, QWEN2])
@pytest.mark.parametrize("protocol", ["native", "lmms-eval", "original"])
def test_pgd_stays_in_the_ball_of_processed_pixels(folders, layout, protocol):
    """PGD perturbs the processed image (any grid), within eps in [0,1] pixels, with gradients."""
    from mbpo_bench.modality.pgd import pgd_attack

    if layout != LLAVA and protocol == "original":
        pytest.skip("Qwen defines no original protocol (refusal tested above)")
    limit = {} if layout == LLAVA else {"max_pixels": 128 * 28 * 28}  # keep the CPU test short
    vlm = load_model(folders[layout], device="cpu", protocol=protocol, **limit)
    prompts = [Prompt(QUESTION, PHOTOS["chelsea"]), Prompt(QUESTION, PHOTOS["384x191"])]
    clean = vlm.images_to_tensor([p.image for p in prompts])
    sizes = vlm.image_sizes(prompts, clean)

    def objective(images: torch.Tensor) -> torch.Tensor:
        lp = vlm.answer_logprobs(prompts, ["cat", "dog"], pixel_images=images, requires_grad=True)
        return lp.sum()

    eps = 4 / 255
    result = pgd_attack(objective, clean, eps=eps, alpha=2 / 255, steps=2)
    for k, (h, w) in enumerate(sizes):
        delta = result.images[k, :, :h, :w] - clean[k, :, :h, :w]
        assert float(delta.abs().max()) <= eps + 1e-6
        assert float(delta.abs().max()) > 0  # the attack moved the pixels the model sees
        assert float(result.images[k].min()) >= 0 and float(result.images[k].max()) <= 1
    assert bool((result.objective_after <= result.objective_before).all())


STOCK = {LLAVA: "llava_hf", QWEN2: "qwen2_vl", QWEN25: "qwen2_5_vl"}


@pytest.mark.lmms
@pytest.mark.slow
@pytest.mark.parametrize("layout", [LLAVA, QWEN2, QWEN25])
@pytest.mark.parametrize("photo", ["chelsea", "640x480", "1280x720", "384x191"])
def test_lmms_stock_wrappers_feed_the_same_tensors(folders, layout, photo):
    """lmms-eval 0.7.3's stock wrapper on the same folder and image: the tensors it hands to
    `generate` equal ours under `--protocol lmms-eval` (runs where lmms-eval is installed)."""
    import importlib
    import sys

    pytest.importorskip("lmms_eval")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import lmms_stock  # the benchmark's harness around the stock wrappers

    module = importlib.import_module(f"lmms_eval.models.simple.{STOCK[layout]}")
    cls = next(
        v for v in vars(module).values()
        if isinstance(v, type) and getattr(v, "__module__", "") == module.__name__
        and hasattr(v, "generate_until")
    )  # fmt: skip
    args = {"device": "cpu", "device_map": "cpu"}
    lm = cls(pretrained=str(folders[layout]), **args)
    image = PHOTOS[photo]
    reqs = lmms_stock.instances(lm, [QUESTION], [image], 2)
    seen = lmms_stock.spy_inputs(lm, reqs)
    vlm = load_model(folders[layout], device="cpu", protocol="lmms-eval")
    mine = ours(vlm, [Prompt(QUESTION, image)])
    for key in ("input_ids", "pixel_values", "image_grid_thw"):
        if key in seen:
            # the wrapper hands the model its own dtype (llava_hf: float16): ours cast the same
            # way; in float32 the torchvision backend's fused normalisation (see pixel_atol)
            a, b = mine[key].cpu().to(seen[key].dtype), seen[key].cpu()
            if key == "pixel_values" and a.dtype == torch.float32 and pixel_atol() > 0:
                torch.testing.assert_close(a, b, rtol=0.0, atol=pixel_atol(), msg=key)
            else:
                assert torch.equal(a, b), key


def test_a_folder_that_cannot_load_names_the_file_and_field(folders, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folders[QWEN2], broken)
    config = json.loads((broken / "preprocessor_config.json").read_text())
    config["image_processor_type"] = "SiglipImageProcessor"
    (broken / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as err:
        load_model(broken, device="cpu")
    line = str(err.value)
    assert "\n" not in line and "preprocessor_config.json" in line
    assert "image_processor_type 'SiglipImageProcessor'" in line
