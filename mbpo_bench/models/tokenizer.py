"""A byte-level BPE tokenizer for tiny offline models, trained in memory in well under a second.

Why byte-level BPE: it round-trips any text (newlines, punctuation) exactly, unlike a word-level
tokenizer (field notes). Why a designed corpus: the embedded benchmark scores one-token answers,
so every answer word (yes/no, option letters, digits, number words, colours, shapes) must be ONE
token right after the assistant prefix of the chat template. The prefix ends in a newline and the
GPT-2 split regex never glues a newline to a following letter, so the bare word is its own
pre-token; the corpus repeats each bare word (and its space-prefixed form, as it appears inside
questions) often enough that BPE merges it whole. `tests/test_models_tiny.py` checks this.

Prompt format (all tiny families, ChatML like Qwen's, no system prompt):

    <|im_start|>user\\n{IMAGE}{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>

where {IMAGE} is `<image>\\n` for LLaVA and `<|vision_start|><|image_pad|><|vision_end|>` for
Qwen2-VL / Qwen2.5-VL (as in the real checkpoints), and is absent for a text-only prompt. The
adapter expands the single image token to one token per image feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, BOS_TURN, EOS = "<|pad|>", "<|im_start|>", "<|im_end|>"
LLAVA_IMAGE = "<image>"
QWEN_IMAGE, QWEN_VIDEO = "<|image_pad|>", "<|video_pad|>"
QWEN_VISION_START, QWEN_VISION_END = "<|vision_start|>", "<|vision_end|>"
SPECIAL_TOKENS = (
    PAD,
    BOS_TURN,
    EOS,
    LLAVA_IMAGE,
    QWEN_VISION_START,
    QWEN_VISION_END,
    QWEN_IMAGE,
    QWEN_VIDEO,
)

YES_NO = ("yes", "no")
LETTERS = ("A", "B", "C", "D")
DIGITS = tuple(str(i) for i in range(10))
NUMBER_WORDS = ("one", "two", "three", "four", "five")
COLOURS = (
    "red green blue yellow purple orange white gray black pink brown".split()  # noqa: SIM905
)
SHAPES = "circle square triangle star cross diamond heart ring".split()  # noqa: SIM905
ANSWER_WORDS: tuple[str, ...] = (
    *YES_NO,
    *LETTERS,
    *DIGITS,
    *NUMBER_WORDS,
    *COLOURS,
    *SHAPES,
)

_QUESTIONS = (
    "Is there a {shape} in the image? Answer with yes or no.",
    "There is a {shape}. Is there a {other}? Answer with yes or no.",
    "What colour is the {shape}? Answer with one word.",
    "What color is the {shape}? Options: A. {c1} B. {c2} C. {c3} D. {c4} "
    "Answer with the option's letter.",
    "How many {shape}s are there? Answer with a number.",
    "What shape is {c1}? Answer with one word.",
    "Describe the image.",
    "The {c1} {shape} is next to the {c2} {other}.",
)


# tokenizer style (a family's `FamilySpec.tokenizer`) -> (what the chat template puts where the
# image goes, the named special tokens the tokenizer carries)
STYLES: dict[str, tuple[str, dict[str, str]]] = {
    "llava": (LLAVA_IMAGE + "\n", {"image_token": LLAVA_IMAGE}),
    "qwen": (
        QWEN_VISION_START + QWEN_IMAGE + QWEN_VISION_END,
        {
            "image_token": QWEN_IMAGE,
            "video_token": QWEN_VIDEO,
            "vision_start_token": QWEN_VISION_START,
            "vision_end_token": QWEN_VISION_END,
        },
    ),
}


def _style(family: str) -> tuple[str, dict[str, str]]:
    from mbpo_bench.errors import check_choice

    return STYLES[check_choice("tokenizer style", family, STYLES)]


def _image_placeholder(family: str) -> str:
    return _style(family)[0]


def chat_template(family: str) -> str:
    """The Jinja chat template of a tiny model (format in the module docstring)."""
    image = _image_placeholder(family).replace("\n", "\\n")
    return (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' -%}{{ '" + image + "' }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{ '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )


def training_corpus(extra: Sequence[str] = ()) -> list[str]:
    """Deterministic in-memory corpus: question phrases, answer words bare and space-prefixed."""
    lines: list[str] = []
    n_c = len(COLOURS)
    for i, shape in enumerate(SHAPES):
        other = SHAPES[(i + 3) % len(SHAPES)]
        cs = [COLOURS[(i + k) % n_c] for k in range(4)]
        for q in _QUESTIONS:
            lines.append(q.format(shape=shape, other=other, c1=cs[0], c2=cs[1], c3=cs[2], c4=cs[3]))
    for word in ANSWER_WORDS:
        lines.extend([f"user\n{word}\nassistant\n{word}", f"a {word} and the {word}"] * 8)
    lines.extend(extra)
    return lines


def build_tokenizer(family: str, extra_corpus: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `training_corpus` and wrap it with pad/eos, template, image token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,  # a ceiling: training stops when the small corpus has no pair left
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(extra_corpus), trainer=trainer)
    extra = dict(_style(family)[1])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        padding_side="left",
        chat_template=chat_template(family),
        extra_special_tokens=extra,
        model_max_length=4096,
    )
