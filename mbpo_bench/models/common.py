"""What every family adapter shares: prompt rendering, batching, generation and answer scoring.

Prompt format: each `Prompt` becomes one user turn rendered with the checkpoint's own chat template
(the processor's if it has one, else the tokenizer's) and `add_generation_prompt=True`; the turn's
content is `[{"type": "image"}, {"type": "text", "text": ...}]`, or only the text part when
`Prompt.image is None`. The single image placeholder the template emits (`<image>` for LLaVA,
`<|image_pad|>` between vision start/end markers for Qwen) is expanded here to one token per image
feature. Tiny models use ChatML, see `tokenizer.py`; LLaVA-1.5 renders `USER: <image>\\n... ASSISTANT:`.

Decisions:
- The processor's `__call__` is not on the hot path: images go PIL -> the input protocol's
  geometric step (`geometry.ImageGeometry`, once per image: the checkpoint's own resize/crop, plus
  pad-to-square or JPEG where the protocol says so) -> [0,1] tensor at the processed geometry
  (`images_to_tensor`, zero-padded to one batch) -> `pixels_to_inputs` (normalise, patchify; each
  image cropped back to its own size). The PGD path and the plain path are the same code; tests
  check `pixel_values`, `input_ids` and `image_grid_thw` equal the processor's on real photos.
- The protocol (`families.PROTOCOLS`) also picks the prompt: the checkpoint's chat template, or
  lmms-eval's / LLaVA-1.5's template and system prompt.
- Text-only and image prompts are run as separate sub-batches (order kept): a text-only prompt
  carries no image tokens and no pixel inputs at all.
- Scoring left-pads prompt+answer, runs the base model (no lm_head) once, gathers the hidden states
  that predict answer tokens, and projects only those through `lm_head` in float32. Results are
  left-aligned: `logps[b, t]` is answer token t of item b. A text answer is a complete reference
  answer: its tokens + EOS. A sampled answer (token ids) is scored exactly as sampled: through
  its EOS, or without one when it was cut at max_new_tokens. Where EOS counts: in `mask` (the
  sums GRPO, DPO and SFT optimise), not in `answer_mask` (the means of IIG, PGD, scoring).
- Rows that answer one prompt can share it (`prepare_answers(shared=keys)`, GRPO's and DPO's
  `packed_scoring`): one row per key holds the prompt once and its answers after it, under a mask
  that hides the answers from each other (`packing.py`); the same log-probs, fewer tokens.
- Generated texts are decoded without special tokens and stripped of surrounding whitespace;
  `generate_completions` also keeps the sampled token ids (`Completion`). Sampling uses the
  checkpoint's generation config with top_k off and the image token suppressed; training
  rollouts also turn its repetition penalty off (TRL's settings).
- `generate(speed=...)` takes the rollout speed options of `rollout_speed` (merged LoRA, static
  cache, shared prefill); the default is plain transformers `generate` with a DynamicCache.
- Close-ended answers can skip generation (`choice_logprobs`): one prompt-only prefill gives the
  log-prob of every choice's first token at the last position (no KV cache, no decode steps).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

from mbpo_bench.errors import UserError
from mbpo_bench.models.protocol import (
    Answer,
    AnswerLogprobs,
    Completion,
    PreparedAnswers,
    Prompt,
    ScoringPart,
)
from mbpo_bench.models.rollout_speed import GenerationSpeed, merged_lora, run_generate

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mbpo_bench.models.packing import PackedLayout
    from mbpo_bench.models.protocol import GenerateOptions


# set on a model sharded with FSDP2 (`trainers/sharding.py`): every rank must then step
# `generate` together (`synced_gpus`), since each forward all-gathers layers from all ranks,
# unless its weights are gathered whole for the moment (GATHERED_ATTR on that root is True)
SHARDED_ATTR = "_mbpo_fsdp_root"
GATHERED_ATTR = "_mbpo_gathered"


def is_sharded(model: Any) -> bool:
    return getattr(model, SHARDED_ATTR, None) is not None


def in_lockstep(model: Any) -> bool:
    """Whether every forward of `model` is a collective (sharded, and not gathered now)."""
    root = getattr(model, SHARDED_ATTR, None)
    return root is not None and not getattr(root, GATHERED_ATTR, False)


def unwrap(model: Any) -> Any:
    """The transformers model under an optional peft wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _chunks(indices: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


class AdapterBase:
    """Family-independent operations; a family module adds the vision-input specifics.

    Subclasses set `family` and implement `pixels_to_inputs`, `num_image_tokens` and
    `_text_extras`. The model is loaded frozen and in eval mode.
    """

    family: str = ""

    def __init__(
        self,
        model: Any,
        processor: Any,
        tokenizer: Any,
        *,
        name: str,
        image_size: int,
        protocol: str = "native",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        from mbpo_bench.models.families import check_protocol
        from mbpo_bench.models.geometry import ImageGeometry

        self.model = model
        self.processor = processor
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = image_size
        self.protocol = protocol
        self.spec = check_protocol(self.family, protocol)
        self.geometry = ImageGeometry(
            self.family,
            processor.image_processor,
            self.spec,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        # the processor's image token first: a real Qwen tokenizer has no `image_token`
        self.image_token: str = getattr(processor, "image_token", None) or tokenizer.image_token
        self.image_token_id: int = tokenizer.convert_tokens_to_ids(self.image_token)

    # ---- family hooks -------------------------------------------------------------------------
    def num_image_tokens(self, size: tuple[int, int] | None = None) -> int:
        """Image tokens of one image at processed (H, W) `size` (None: `image_size` square)."""
        raise NotImplementedError

    def pixels_to_inputs(
        self, pixel_images: torch.Tensor, sizes: Sequence[tuple[int, int]] | None = None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _text_extras(self, input_ids: torch.Tensor, has_image: bool) -> dict[str, torch.Tensor]:
        return {}

    # ---- shared -------------------------------------------------------------------------------
    @property
    def hf_model(self) -> Any:
        return unwrap(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def images_to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The protocol's geometric step per image, zero-padded into one (B, 3, H, W) batch.

        Images the loader already prepared (`PreparedImage`, pinned) are copied to the device
        as they are (non-blocking, uint8 where exact) and scaled there; the values are the same.
        """
        import torch

        from mbpo_bench.models.prepared import PreparedImage

        if images and all(isinstance(img, PreparedImage) for img in images):
            ready: list[PreparedImage] = list(images)  # type: ignore[arg-type]
            h = max(img.processed[0] for img in ready)
            w = max(img.processed[1] for img in ready)
            batch = torch.zeros(len(ready), 3, h, w, device=self.device)
            for i, img in enumerate(ready):
                ih, iw = img.processed
                batch[i, :, :ih, :iw] = img.to_float(self.device)
            return batch
        prepared = [self.geometry.prepare(img) for img in images]
        if not prepared:
            return torch.zeros(0, 3, self.image_size, self.image_size, device=self.device)
        h = max(x.shape[1] for x in prepared)
        w = max(x.shape[2] for x in prepared)
        out = torch.zeros(len(prepared), 3, h, w)
        for i, x in enumerate(prepared):
            out[i, :, : x.shape[1], : x.shape[2]] = x
        return out.to(self.device)

    def processed_size(self, image: Image.Image) -> tuple[int, int]:
        """(H, W) the model sees for `image` under this run's input protocol."""
        return self.geometry.size(image)

    def image_sizes(self, prompts: Sequence[Prompt], pixels: torch.Tensor) -> list[tuple[int, int]]:
        """Each prompt's processed (H, W): from its image, else the whole tensor (no image)."""
        full = (int(pixels.shape[2]), int(pixels.shape[3]))
        return [full if p.image is None else self.geometry.size(p.image) for p in prompts]

    def _conversation(self, prompt: Prompt, with_image: bool) -> list[dict[str, Any]]:
        """One user turn in the protocol's form (an explicit system turn where it has one)."""
        content: Any
        if self.spec.template is not None:  # a string turn, image token first (lmms-eval, LLaVA)
            content = (self.image_token + "\n" if with_image else "") + prompt.text
        else:
            content = [{"type": "image"}] if with_image else []
            content.append({"type": "text", "text": prompt.text})
        conv = [{"role": "user", "content": content}]
        if self.spec.system_prompt is not None:
            conv.insert(0, {"role": "system", "content": self.spec.system_prompt})
        return conv

    def render(
        self,
        prompts: Sequence[Prompt],
        with_image: bool,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[str]:
        """Chat-templated prompt strings with the image placeholder expanded (or absent).

        `sizes` are the processed (H, W) per prompt (None: from each prompt's image).
        """
        template = (
            self.spec.template
            or getattr(self.processor, "chat_template", None)
            or self.tokenizer.chat_template
        )
        convs = [self._conversation(p, with_image) for p in prompts]
        texts = self.tokenizer.apply_chat_template(
            convs, chat_template=template, tokenize=False, add_generation_prompt=True
        )
        if not with_image:
            return list(texts)
        if sizes is None:
            square = (self.image_size, self.image_size)  # a caller's image-less prompt
            sizes = [square if p.image is None else self.geometry.size(p.image) for p in prompts]
        return [
            t.replace(self.image_token, self.image_token * self.num_image_tokens(hw), 1)
            for t, hw in zip(texts, sizes, strict=True)
        ]

    def _add_special(self, text: str) -> bool:
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))

    def prompt_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of rendered prompts (`render`), special tokens added unless the template
        already starts with BOS."""
        add = self._add_special(texts[0]) if texts else False
        ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=add)["input_ids"]
        return ids

    def _check_image_tokens(self, input_ids: torch.Tensor, expected: list[int]) -> None:
        counts = (input_ids == self.image_token_id).sum(-1).tolist()
        if counts != expected:
            raise UserError(
                f"prompts have {counts} image tokens, expected {expected} — the prompt "
                f"text must not contain the image token '{self.image_token}'"
            )

    def model_inputs(
        self,
        ids: list[list[int]],
        pixels: torch.Tensor | None,
        sizes: Sequence[tuple[int, int]] | None = None,
        extra_pad: int = 0,
    ) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for `prompt_ids` (left-padded) and their images (or None for
        text-only prompts) at processed (H, W) `sizes`: what `generate` and `choice_logprobs`
        feed the model. `extra_pad` left-pads every row by that many more tokens (compiled
        scoring passes: a batch then always carries a padding mask, so it reuses the compiled
        graph of a padded one instead of compiling a mask-free variant).

        The token checks run on the host tensors and the copies are non-blocking: preparing a
        batch never waits for the device's queued work."""
        longest = max((len(x) for x in ids), default=0)
        pad: dict[str, Any] = (
            {"padding": "max_length", "max_length": longest + extra_pad}
            if extra_pad
            else {"padding": True}
        )
        batch = self.tokenizer.pad(
            {"input_ids": ids}, padding_side="left", return_tensors="pt", **pad
        )
        return self._device_inputs(batch["input_ids"], batch["attention_mask"], pixels, sizes)

    def _device_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor | None,
        sizes: Sequence[tuple[int, int]] | None,
    ) -> dict[str, torch.Tensor]:
        """Host token ids (checked: one image token per image feature) and mask, the family's
        text extras and the images' pixel inputs, on the device without waiting for it."""
        if pixels is not None and sizes is None:
            sizes = [(int(pixels.shape[2]), int(pixels.shape[3]))] * len(input_ids)
        expected = [self.num_image_tokens(hw) for hw in sizes] if sizes else [0] * len(input_ids)
        self._check_image_tokens(input_ids, expected)
        on_device = input_ids.to(self.device, non_blocking=True)
        inputs: dict[str, torch.Tensor] = {
            "input_ids": on_device,
            "attention_mask": attention_mask.to(self.device, non_blocking=True),
        }
        inputs.update(self._text_extras(on_device, pixels is not None))
        if pixels is not None:
            inputs.update(self.pixels_to_inputs(pixels.to(self.device), sizes))
        return inputs

    def _groups(
        self, prompts: Sequence[Prompt], pixel_images: torch.Tensor | None
    ) -> list[tuple[list[int], bool]]:
        """Indices of image prompts and of text-only prompts (either may be empty)."""
        if pixel_images is not None:
            if pixel_images.shape[0] != len(prompts):
                raise UserError(
                    f"pixel_images has {pixel_images.shape[0]} images for {len(prompts)} prompts "
                    "— pass one image per prompt"
                )
            return [(list(range(len(prompts))), True)]
        with_img = [i for i, p in enumerate(prompts) if p.image is not None]
        without = [i for i, p in enumerate(prompts) if p.image is None]
        return [(g, has) for g, has in ((with_img, True), (without, False)) if g]

    def pixels_for(
        self, prompts: Sequence[Prompt], idx: list[int], pixel_images: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Pixels of prompts `idx` at processed geometry (padded) and each one's (H, W)."""
        pixels = (
            pixel_images[idx]
            if pixel_images is not None
            else self.images_to_tensor([prompts[i].image for i in idx])  # type: ignore[misc]
        )
        return pixels, self.image_sizes([prompts[i] for i in idx], pixels)

    # ---- generation ---------------------------------------------------------------------------
    def generation_config(self, options: GenerateOptions) -> Any:
        """The checkpoint's generation config with this call's settings (their defaults are
        `GenerateOptions`'s).

        `repetition_penalty` None keeps the checkpoint's (Qwen's 1.05: what its own `generate`
        and lmms-eval's wrappers apply); training rollouts pass 1.0, as TRL does, so that the
        sampled tokens follow the distribution whose log-probs are optimised. top_k is off. The
        image token is never generated (as TRL suppresses it): a sampled one would be scored
        against image features that do not exist.
        """
        cfg = copy.deepcopy(self.hf_model.generation_config)
        if (repetition_penalty := options.get("repetition_penalty")) is not None:
            cfg.repetition_penalty = repetition_penalty
        cfg.suppress_tokens = sorted({*(cfg.suppress_tokens or []), self.image_token_id})
        cfg.max_new_tokens = options.get("max_new_tokens", 8)
        cfg.min_new_tokens = options.get("min_new_tokens", 0) or None
        cfg.num_return_sequences = options.get("num_samples", 1)
        cfg.pad_token_id = self.tokenizer.pad_token_id
        if cfg.eos_token_id is None:
            cfg.eos_token_id = self.tokenizer.eos_token_id
        cfg.do_sample = do_sample = options.get("do_sample", False)
        cfg.temperature = options.get("temperature", 1.0) if do_sample else None
        cfg.top_p = options.get("top_p", 1.0) if do_sample else None
        cfg.top_k = None
        return cfg

    def generate(
        self, prompts: Sequence[Prompt], **options: Unpack[GenerateOptions]
    ) -> list[list[str]]:
        """`num_samples` texts per prompt, in prompt order; `batch_size` counts prompts.

        `speed` picks faster ways to the same samples (merged LoRA, static cache, shared
        prefill; see `rollout_speed`); None is plain transformers `generate`.
        """
        done = self.generate_completions(prompts, **options)
        return [[c.text for c in group] for group in done]

    def _completion(self, row: list[int], eos: set[int]) -> Completion:
        """New token ids of one generated row -> through its first EOS, or all (truncated)."""
        cut = next((k for k, tok in enumerate(row) if tok in eos), None)
        ids = row if cut is None else row[: cut + 1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return Completion(text=text, ids=tuple(ids), truncated=cut is None)

    def generate_completions(
        self, prompts: Sequence[Prompt], **options: Unpack[GenerateOptions]
    ) -> list[list[Completion]]:
        """`generate`, keeping each sample's token ids (`Completion`): what training scores."""
        import contextlib

        import torch

        from mbpo_bench.models.protocol import GenerateOptions

        if unknown := sorted(set(options) - GenerateOptions.__optional_keys__):
            raise TypeError(f"generate got unknown options {unknown}")  # a misspelt keyword
        speed = options.get("speed") or GenerationSpeed()
        pixel_images = options.get("pixel_images")
        num_samples, batch_size = options.get("num_samples", 1), options.get("batch_size", 16)
        cfg = self.generation_config(options)
        stop = cfg.eos_token_id
        eos = set(stop if isinstance(stop, list) else [stop])
        results: list[list[Completion]] = [[] for _ in prompts]
        merge = merged_lora(self.model) if speed.merge_lora else contextlib.nullcontext()
        with merge:
            for group, has_image in self._groups(prompts, pixel_images):
                for idx in _chunks(group, max(1, batch_size)):
                    pixels, sizes = (
                        self.pixels_for(prompts, idx, pixel_images) if has_image else (None, None)
                    )
                    texts = self.render([prompts[i] for i in idx], has_image, sizes)
                    with torch.no_grad():
                        inputs = self.model_inputs(self.prompt_ids(texts), pixels, sizes)
                        out = run_generate(
                            self.hf_model, inputs, cfg, num_samples, speed,
                            synced=in_lockstep(self.model),
                        )  # fmt: skip
                    rows = out[:, inputs["input_ids"].shape[1] :].tolist()
                    for j, i in enumerate(idx):
                        chunk = rows[j * num_samples : (j + 1) * num_samples]
                        results[i] = [self._completion(r, eos) for r in chunk]
        return results

    # ---- scoring ------------------------------------------------------------------------------
    def answer_token_ids(self, answers: Sequence[Answer]) -> tuple[list[list[int]], list[int]]:
        """(scored ids, answer tokens before the final EOS) per answer.

        A text is a complete answer: its tokens plus EOS. Token ids (a sample) are scored as
        they are: a sample cut at max_new_tokens gets no EOS.
        """
        eos = self.tokenizer.eos_token_id
        stops = set(self._eos_ids())
        scored, n_answer = [], []
        texts = [a for a in answers if isinstance(a, str)]
        encoded = iter(
            self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        )
        for a in answers:
            if isinstance(a, str):
                ids = [*next(encoded), eos]
                scored.append(ids)
                n_answer.append(len(ids) - 1)
            else:
                ids = [int(t) for t in a]
                if not ids:
                    raise UserError("an empty sampled answer cannot be scored — drop it")
                scored.append(ids)
                n_answer.append(len(ids) - (1 if ids[-1] in stops else 0))
        return scored, n_answer

    def _eos_ids(self) -> list[int]:
        stop = self.hf_model.generation_config.eos_token_id
        ids = [] if stop is None else (list(stop) if isinstance(stop, list) else [stop])
        return [*ids, self.tokenizer.eos_token_id]

    def _score_inputs(
        self,
        prompts: Sequence[Prompt],
        answers: Sequence[Answer],
        pixels: torch.Tensor | None,
        sizes: Sequence[tuple[int, int]] | None = None,
        extra_pad: int = 0,
    ) -> tuple[dict[str, torch.Tensor], list[list[int]], list[int]]:
        """(model inputs of prompt + answer, scored answer ids, answer tokens before EOS)."""
        if pixels is not None and sizes is None:
            sizes = self.image_sizes(prompts, pixels)
        texts = self.render(prompts, pixels is not None, sizes)
        prompt_ids = self.prompt_ids(texts)
        answer_ids, n_answer = self.answer_token_ids(answers)
        inputs = self.model_inputs(
            [p + a for p, a in zip(prompt_ids, answer_ids, strict=True)], pixels, sizes, extra_pad
        )
        return inputs, answer_ids, n_answer

    def scoring_batch(
        self,
        prompts: Sequence[Prompt],
        answers: Sequence[Answer],
        pixels: torch.Tensor | None,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs for prompt+answer (left-padded) and each row's scored length (texts get
        EOS appended, sampled ids are taken as they are; `answer_token_ids`)."""
        import torch

        inputs, answer_ids, _ = self._score_inputs(prompts, answers, pixels, sizes)
        return inputs, torch.tensor([len(a) for a in answer_ids], device=self.device)

    def _prepare_part(
        self,
        idx: list[int],
        prompts: Sequence[Prompt],
        answers: Sequence[Answer],
        pixels: torch.Tensor | None,
        sizes: Sequence[tuple[int, int]] | None,
        extra_pad: int,
    ) -> ScoringPart:
        """One sub-batch's inputs and answer-token positions, built on the host and copied
        without waiting for the device (no `nonzero` or `.max()` on device tensors)."""
        inputs, answer_ids, n_answer = self._score_inputs(
            prompts, answers, pixels, sizes, extra_pad
        )
        targets = _answer_targets(answer_ids, n_answer)
        rows, cols = targets.rows, targets.cols
        pos = inputs["input_ids"].shape[1] - targets.lengths[rows] + cols
        return targets.part(idx, inputs, rows, pos - 1, self.device)

    def packed_position_ids(
        self, inputs: dict[str, torch.Tensor], layout: PackedLayout
    ) -> torch.Tensor:
        """Position ids of a packed batch (`packing`): the layout's own; multimodal-RoPE
        families override it."""
        return layout.positions.to(self.device, non_blocking=True)

    def _prepare_packed_part(
        self,
        idx: list[int],
        prompts: Sequence[Prompt],
        answers: Sequence[Answer],
        keys: Sequence[Hashable],
        pixels: torch.Tensor | None,
        sizes: Sequence[tuple[int, int]] | None,
    ) -> ScoringPart:
        """`_prepare_part` with the answers of one key packed behind one copy of their prompt
        (`packing`): the prompt and its image run once per key instead of once per answer."""
        from mbpo_bench.models import packing

        first, row_of = packing.owners(keys)
        unique = [prompts[i] for i in first]
        for i, r in enumerate(row_of):
            if prompts[i].text != unique[r].text or prompts[i].image is not unique[r].image:
                raise UserError(
                    f"rows sharing the key {keys[i]!r} have different prompts or images — give "
                    "each distinct prompt its own key"
                )
        usizes = None if sizes is None else [sizes[i] for i in first]
        upixels = None if pixels is None else pixels[first]
        texts = self.render(unique, upixels is not None, usizes)
        answer_ids, n_answer = self.answer_token_ids(answers)
        pad = self.tokenizer.pad_token_id
        layout = packing.pack(self.prompt_ids(texts), answer_ids, row_of, pad)
        lm = getattr(self.hf_model.model, "language_model", self.hf_model.model)
        mask = packing.attention_mask(lm, layout.allow, self.dtype)
        inputs = self._device_inputs(layout.input_ids, mask, upixels, usizes)
        inputs["position_ids"] = self.packed_position_ids(inputs, layout)
        return _answer_targets(answer_ids, n_answer).part(
            idx, inputs, layout.hidden_rows, layout.hidden_cols, self.device
        )

    def _score_part(
        self, part: ScoringPart, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch

        hidden = self.hf_model.model(**part.inputs, use_cache=False).last_hidden_state
        logits = self.hf_model.lm_head(hidden[part.hidden_rows, part.hidden_cols]).float()
        if temperature != 1.0:  # TRL: logits / temperature, the distribution that was sampled
            logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1).gather(-1, part.targets[:, None])[:, 0]
        out = torch.zeros(part.mask.shape, dtype=torch.float32, device=logp.device)
        out = out.index_put((part.rows, part.cols), logp)
        return out, part.mask, part.answer_mask

    def choice_logprobs(
        self, prompts: Sequence[Prompt], choices: Sequence[str], *, batch_size: int = 16
    ) -> torch.Tensor:
        """(B, C) float32 log p(first token of `choices[c]` | prompt b) from ONE prompt prefill.

        Close-ended answering without generation: the vocabulary projection runs only at each
        row's last position (left padding puts every prompt's end there). Greedy decoding picks
        the same choice whenever its first token is one of the choices' first tokens, so the
        choices' first tokens must differ.
        """
        import torch

        first = [self.tokenizer(c, add_special_tokens=False)["input_ids"][:1] for c in choices]
        ids = [f[0] for f in first if f]
        if len(ids) != len(choices) or len(set(ids)) != len(ids):
            raise UserError(
                f"choices {list(choices)} do not start with distinct tokens — pass choices whose "
                "first tokens differ (e.g. 'yes' / 'no')"
            )
        out = torch.empty(len(prompts), len(ids), dtype=torch.float32)
        token_ids = torch.tensor(ids, device=self.device)
        for group, has_image in self._groups(prompts, None):
            for idx in _chunks(group, max(1, batch_size)):
                pixels, sizes = self.pixels_for(prompts, idx, None) if has_image else (None, None)
                texts = self.render([prompts[i] for i in idx], has_image, sizes)
                with torch.no_grad():
                    inputs = self.model_inputs(self.prompt_ids(texts), pixels, sizes)
                    hidden = self.hf_model.model(**inputs, use_cache=False).last_hidden_state
                    logits = self.hf_model.lm_head(hidden[:, -1]).float()
                    logp = torch.log_softmax(logits, dim=-1)[:, token_ids]
                out[idx] = logp.cpu()
        return out

    def prepare_answers(
        self,
        prompts: Sequence[Prompt],
        answers: Sequence[Answer],
        *,
        pixel_images: torch.Tensor | None = None,
        extra_pad: int = 0,
        shared: Sequence[Hashable] | None = None,
    ) -> PreparedAnswers:
        """Everything `answer_logprobs` feeds the model, made once: GRPO scores the same batch
        with the reference and the policy (`prepared_logprobs` twice), so the chat template,
        tokenising, image pixels and copies are paid once, before either forward.

        `shared` (one key per row): rows with one key have one prompt and image, and are
        packed behind a single copy of it (`packing`; the same log-probs, the prompt computed
        once per key). `extra_pad` does not apply there: a packed batch always has a mask."""
        if len(prompts) != len(answers):
            raise UserError(f"{len(prompts)} prompts but {len(answers)} answers — pass one each")
        if shared is not None and len(shared) != len(prompts):
            raise UserError(
                f"{len(shared)} sharing keys for {len(prompts)} prompts — pass one each"
            )
        parts = []
        for idx, has_image in self._groups(prompts, pixel_images):
            pixels, sizes = (
                self.pixels_for(prompts, idx, pixel_images) if has_image else (None, None)
            )
            sub = [prompts[i] for i in idx]
            ans = [answers[i] for i in idx]
            if shared is None:
                parts.append(self._prepare_part(idx, sub, ans, pixels, sizes, extra_pad))
            else:
                keys = [shared[i] for i in idx]
                parts.append(self._prepare_packed_part(idx, sub, ans, keys, pixels, sizes))
        return PreparedAnswers(size=len(prompts), parts=parts)

    def prepared_logprobs(
        self, prepared: PreparedAnswers, *, requires_grad: bool = False, temperature: float = 1.0
    ) -> AnswerLogprobs:
        """`answer_logprobs` of a batch made by `prepare_answers` (of this model's family)."""
        import torch

        grad = torch.enable_grad() if requires_grad else torch.no_grad()
        with grad:
            scored = [(p.idx, *self._score_part(p, temperature)) for p in prepared.parts]
        if len(scored) == 1:
            return AnswerLogprobs(logps=scored[0][1], mask=scored[0][2], answer_mask=scored[0][3])
        width = max(p[1].shape[1] for p in scored)
        logps = torch.zeros(prepared.size, width, device=self.device)
        mask = torch.zeros(prepared.size, width, dtype=torch.bool, device=self.device)
        answer = torch.zeros_like(mask)
        for idx, lp, mk, am in scored:
            rows = torch.tensor(idx, device=self.device)
            logps = logps.index_put((rows,), torch.nn.functional.pad(lp, (0, width - lp.shape[1])))
            mask[rows, : mk.shape[1]] = mk
            answer[rows, : am.shape[1]] = am
        return AnswerLogprobs(logps=logps, mask=mask, answer_mask=answer)

    def answer_logprobs(
        self,
        prompts: Sequence[Prompt],
        answers: Sequence[Answer],
        *,
        pixel_images: torch.Tensor | None = None,
        requires_grad: bool = False,
        temperature: float = 1.0,
        shared: Sequence[Hashable] | None = None,
    ) -> AnswerLogprobs:
        """Log-probs of each answer's tokens (texts: + EOS; sampled ids: as sampled).

        `temperature` divides the logits first, as TRL's GRPOTrainer does for the policy and
        reference log-probs, so they are those of the distribution the rollout sampled from.
        Inputs are prepared inside the grad mode too: PGD's gradient reaches `pixel_images`.
        `shared`: rows with one key share one copy of their prompt (`prepare_answers`).
        """
        import torch

        grad = torch.enable_grad() if requires_grad else torch.no_grad()
        with grad:
            prepared = self.prepare_answers(
                prompts, answers, pixel_images=pixel_images, shared=shared
            )
            return self.prepared_logprobs(
                prepared, requires_grad=requires_grad, temperature=temperature
            )


@dataclass(frozen=True)
class _AnswerTargets:
    """Where a batch's scored answer tokens go (host tensors): the (B, T) left-aligned masks
    and, flat in row-major order, each token's row, column and id."""

    lengths: torch.Tensor  # (B,) scored tokens per answer
    mask: torch.Tensor  # (B, T) scored tokens, EOS included
    answer_mask: torch.Tensor  # (B, T) answer tokens without the final EOS
    rows: torch.Tensor  # (N,)
    cols: torch.Tensor  # (N,)
    targets: torch.Tensor  # (N,) token ids

    def part(
        self,
        idx: list[int],
        inputs: dict[str, torch.Tensor],
        hidden_rows: torch.Tensor,
        hidden_cols: torch.Tensor,
        device: torch.device,
    ) -> ScoringPart:
        def dev(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=True)

        return ScoringPart(
            idx=idx, inputs=inputs, rows=dev(self.rows), cols=dev(self.cols),
            hidden_rows=dev(hidden_rows), hidden_cols=dev(hidden_cols),
            targets=dev(self.targets), mask=dev(self.mask), answer_mask=dev(self.answer_mask),
        )  # fmt: skip


def _answer_targets(answer_ids: list[list[int]], n_answer: list[int]) -> _AnswerTargets:
    import torch

    lengths = torch.tensor([len(a) for a in answer_ids])
    t = torch.arange(int(lengths.max()))
    mask = t[None, :] < lengths[:, None]  # (B, T) left-aligned answer tokens
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: the order of the flat targets
    return _AnswerTargets(
        lengths=lengths,
        mask=mask,
        answer_mask=t[None, :] < torch.tensor(n_answer)[:, None],
        rows=rows,
        cols=cols,
        targets=torch.tensor([tok for a in answer_ids for tok in a]),
    )
