"""The contract every model family adapter meets (LLaVA, Qwen2-VL, Qwen2.5-VL).

Trainers, evaluation and mining only ever talk to this Protocol, so a new family is one adapter
module. Images travel as PIL images at their own resolution (the model's input protocol does the
geometry once per image: `geometry.py`) or as [0,1] float tensors (B, 3, H, W) at the processed
geometry, zero-padded to the batch's largest image, on the differentiable path used by PGD;
each image is cropped back to its own (H, W), known from its prompt image.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, Unpack

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mbpo_bench.models.rollout_speed import GenerationSpeed

ImageMode = Literal["image", "blind", "black", "noise"]


class GenerateOptions(TypedDict, total=False):
    """The keyword options of `generate` and `generate_completions`, declared once for both and
    for every adapter; a key left out takes the default in brackets."""

    max_new_tokens: int  # (8)
    min_new_tokens: int  # (0)
    do_sample: bool  # sample instead of greedy decoding (False)
    temperature: float  # (1.0; sampling only)
    top_p: float  # (1.0; sampling only)
    num_samples: int  # samples per prompt, a GRPO group (1)
    batch_size: int  # prompts per model call (16)
    pixel_images: torch.Tensor | None  # (B, 3, H, W) in [0,1] for the prompts' images (None)
    speed: GenerationSpeed | None  # faster ways to the same samples (None: plain `generate`)
    repetition_penalty: float | None  # None keeps the checkpoint's (None)


@dataclass(frozen=True)
class Prompt:
    """One user turn: question text plus an optional image.

    `image=None` builds a text-only prompt with no image tokens at all (the "blind" condition of
    method.md); a black or noise image is a different condition and is passed as an image.
    """

    text: str
    image: Image.Image | None = None


@dataclass(frozen=True)
class Completion:
    """One generated answer: its text and the token ids that were sampled.

    `ids` run through the first EOS (kept: the model chose to stop) or, when the sample was cut
    at `max_new_tokens` (`truncated`), end without one. Training scores exactly these ids.
    """

    text: str
    ids: tuple[int, ...]
    truncated: bool


@dataclass
class ScoringPart:
    """One sub-batch of `PreparedAnswers` (image prompts, or text-only ones): the model's inputs
    on its device and where each scored answer token sits (flat, row-major)."""

    idx: list[int]  # positions of its rows in the whole batch
    inputs: dict[str, torch.Tensor]
    rows: torch.Tensor  # (N,) row of each scored token
    cols: torch.Tensor  # (N,) its index within the answer
    hidden_rows: torch.Tensor  # (N,) the input row whose hidden state predicts it
    hidden_cols: torch.Tensor  # (N,) that hidden state's column (packed rows: `packing`)
    targets: torch.Tensor  # (N,) its token id
    mask: torch.Tensor  # (B, T) bool: scored tokens, EOS included
    answer_mask: torch.Tensor  # (B, T) bool: answer tokens without the final EOS


@dataclass
class PreparedAnswers:
    """Prompt + answer batches ready for the forward (`prepare_answers`), so that scoring one
    batch with the policy and with its reference prepares it once."""

    size: int  # prompts in the whole batch
    parts: list[ScoringPart]


# An answer to score: a text (tokenised, EOS appended: a complete reference answer) or the
# token ids of a sample (scored as they are, EOS only where the sample has one).
Answer = str | Sequence[int]


@dataclass(frozen=True)
class AnswerLogprobs:
    """Per-token log-probs of given answers: `logps[b, t]` valid where `mask[b, t]` is true.

    `mask` covers every scored token, the EOS included (a text answer's appended EOS, a
    sample's own); `answer_mask` only the answer's tokens, without that final EOS. Sums over
    `mask` are sequence log-likelihoods (what GRPO, DPO and SFT optimise); means over
    `answer_mask` are the per-token answer scores (IIG, PGD's objective, answer scoring), so a
    one-token answer is not averaged with the likelihood of stopping after it.
    """

    logps: torch.Tensor  # (B, T) float32
    mask: torch.Tensor  # (B, T) bool
    answer_mask: torch.Tensor | None = None  # (B, T) bool; None: same as mask

    @property
    def tokens(self) -> torch.Tensor:
        return self.mask if self.answer_mask is None else self.answer_mask

    def sum(self) -> torch.Tensor:
        return (self.logps * self.mask).sum(-1)

    def mean(self) -> torch.Tensor:
        """Mean log-prob over the answer's tokens (EOS excluded)."""
        tokens = self.tokens
        return (self.logps * tokens).sum(-1) / tokens.sum(-1).clamp(min=1)


class VisionLanguageModel(Protocol):
    """A loaded LMM with the few operations everything else needs, batched and padding-aware."""

    family: str
    name: str
    model: Any  # transformers PreTrainedModel, possibly wrapped by peft
    processor: Any
    tokenizer: Any
    image_size: int  # side of synthetic square images (black / noise); LLaVA: its input side
    protocol: str  # input protocol: native | lmms-eval | original (families.PROTOCOLS)

    @property
    def device(self) -> torch.device: ...

    def generate(
        self, prompts: Sequence[Prompt], **options: Unpack[GenerateOptions]
    ) -> list[list[str]]:
        """Texts for each prompt: `num_samples` of them (GRPO groups), in prompt order.

        `pixel_images` (B, 3, H, W) in [0,1] replaces the prompts' PIL images (PGD-perturbed).
        `speed` only changes how fast the same samples come (merged LoRA, static KV cache, one
        prefill per prompt; see `rollout_speed.GenerationSpeed`); None = plain `generate`.
        """
        ...

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
        """Log-probs of each answer's tokens given its prompt, in one batch: a text with EOS
        appended, sampled token ids as sampled (see `AnswerLogprobs` for where EOS counts).

        The vocabulary projection runs only at answer positions, on logits / `temperature`.
        With `requires_grad` the result carries gradients to trainable weights and to
        `pixel_images`. `shared`: a key per row; rows of one key (one prompt, one image) are
        packed behind a single copy of it (`packing`), the same log-probs.
        """
        ...

    def answer_token_ids(self, answers: Sequence[Answer]) -> tuple[list[list[int]], list[int]]:
        """(scored token ids, answer tokens before the final EOS) of each answer."""
        ...

    def prepare_answers(
        self,
        prompts: Sequence[Prompt],
        answers: Sequence[Answer],
        *,
        pixel_images: torch.Tensor | None = None,
        extra_pad: int = 0,
        shared: Sequence[Hashable] | None = None,
    ) -> PreparedAnswers:
        """The inputs `answer_logprobs` would build, built once (`extra_pad`: that many more left
        pad tokens per row, so a compiled pass always sees a padding mask; `shared`: a key per
        row, rows of one key packed behind one copy of their common prompt, `packing`)."""
        ...

    def prepared_logprobs(
        self, prepared: PreparedAnswers, *, requires_grad: bool = False, temperature: float = 1.0
    ) -> AnswerLogprobs:
        """`answer_logprobs` of a prepared batch: the policy and its reference share one."""
        ...

    def generate_completions(
        self, prompts: Sequence[Prompt], **options: Unpack[GenerateOptions]
    ) -> list[list[Completion]]:
        """`generate` keeping each sample's token ids (through its EOS, or cut, no EOS)."""
        ...

    def pixels_to_inputs(
        self, pixel_images: torch.Tensor, sizes: Sequence[tuple[int, int]] | None = None
    ) -> dict[str, torch.Tensor]:
        """Differentiable [0,1] images -> the processor's vision inputs (pixel_values, ...).

        `sizes` are each image's processed (H, W) inside the zero-padded batch (None: all full).
        """
        ...

    def images_to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> the protocol's geometric step, (B, 3, H, W) in [0,1], zero-padded."""
        ...

    def processed_size(self, image: Image.Image) -> tuple[int, int]:
        """(H, W) the model sees for `image` under the input protocol."""
        ...

    def num_image_tokens(self, size: tuple[int, int] | None = None) -> int:
        """Image tokens for one image of processed (H, W) `size`."""
        ...
