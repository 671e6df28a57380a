"""`answer_mode: choice`: close-ended items answered by one prompt prefill instead of decoding.

Why: greedy decoding of a one-word answer runs a prefill and then several decode steps; the
model's pick among a KNOWN finite answer set needs only the prefill (`choice_logprobs`: the
log-prob of each choice's first token at the prompt's last position). The picked choice's text
then goes through the task's own `process_results` exactly like a generated response, so the
metrics code cannot tell the two apart; what differs is recorded (mode per row, counts per probe
and run in results.json) so that reports flag comparisons across modes.

Decisions:
- The answer set comes from the item's verifier and the task's prompt template, never from a
  benchmark name: `yesno` -> yes / no; `multiple_choice` -> the option texts when the template
  lists them plainly (`{options}`), else the option letters (a lettered `{choices}` list, or
  options written inside the question: the verifier's letters); `number` and `short_word` ->
  the item's options when it has some. Anything else (no verifier, free-form numbers or words)
  has no finite set and is GENERATED, as is every item of a task that samples; fallbacks are per
  item and counted (`FALLBACK_*`).
- Surface forms, as a model writes them: each answer as given and, for words, with its first
  letter upper- and lower-cased ("Yes" after LLaVA's "ASSISTANT:"); each also with a leading
  space (generated text is stripped, so " Yes" and "Yes" are one prediction). A form is kept
  only if the verifier parses it back to its own answer, so the chosen text scores as meant.
- Only first tokens are compared. A first token that is blank (Llama's lone "▁" before a digit)
  or shared by forms of two DIFFERENT answers says nothing about the answer: such a variant form
  is dropped ("Gray" / "Green" split as "G..." by a small vocabulary), and when it starts an
  answer as the task writes it ("10" / "12" as "1..."), the item falls back to generation
  (`FALLBACK_SHARED`) rather than summing whole-sequence log-probs: greedy decoding picks the
  first-token rule's answer whenever its first token is one of the kept forms' first tokens,
  while summed answer+EOS log-probs agreed with greedy on only 222/256 items against 254/256 for
  the first token in the H200 benchmark (reports/perf/h200/eval_llava-7b.md).
- The prediction is the form with the highest first-token log-prob (ties: the earlier form),
  stripped. One `choice_logprobs` call per batch over the union of the items' first tokens.
- PGD-perturbed pixels (adversarial probe) are tensors, which `choice_logprobs` does not take:
  there the same first-token log-probs come from `answer_logprobs` rows (prompt + form), one row
  per form: C times the prefill, small next to the attack's K backward passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from mbpo_bench.errors import UserError, check_choice
from mbpo_bench.evaluation.config import AnswerMode

if TYPE_CHECKING:
    import torch

    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.models.protocol import Prompt, VisionLanguageModel

ANSWER_MODES: tuple[str, ...] = get_args(AnswerMode)
FALLBACK_NO_SET = "no_choice_set"  # the verifier's answers are not a finite, known set
FALLBACK_SHARED = "shared_first_token"  # an answer's first token does not tell it apart
FALLBACK_SAMPLING = "sampling"  # the task samples: an argmax is not its answer

TokenReader = Callable[[str], int | None]


def check_answer_mode(name: str) -> str:
    """`name` if it is an answer mode; else a one-line UserError with a suggestion."""
    return check_choice("answer mode", name, ANSWER_MODES)


@dataclass(frozen=True)
class Choices:
    """An item's answer forms, one per distinct first token, in priority order."""

    texts: tuple[str, ...]
    tokens: tuple[int, ...]


def _variants(text: str) -> list[str]:
    """`text` as written, first letter upper/lower (words only), each with a leading space."""
    base = [text]
    if len(text) > 1 and text[0].isalpha():
        base += [text[0].upper() + text[1:], text[0].lower() + text[1:]]
    forms = [*base, *(" " + b for b in base)]
    return list(dict.fromkeys(forms))


def _base_texts(verifier: str, options: Sequence[str], template: str) -> list[str] | None:
    """The answers as the task expects them written, or None when the set is not finite."""
    if verifier == "yesno":
        return ["yes", "no"]
    if verifier == "multiple_choice":
        from mbpo_bench.tasks.verifiers.choice import letters_for

        plain = "{options}" in template and "{choices}" not in template
        return list(options) if options and plain else list(letters_for(options))
    if verifier in ("number", "short_word") and options:
        return list(options)
    return None


def answer_forms(
    verifier: str, options: Sequence[str], template: str
) -> dict[str, list[str]] | None:
    """Canonical answer -> its surface forms (priority order); None: no finite answer set."""
    from mbpo_bench.tasks.verifiers import VERIFIERS

    kind = VERIFIERS.get(verifier)
    base = _base_texts(verifier, options, template) if kind is not None else None
    if kind is None or not base:
        return None
    opts = tuple(options)
    out: dict[str, list[str]] = {}
    for text in base:
        answer = kind.canonical(text, opts)
        if answer is None:
            continue
        forms = [f for f in _variants(text) if kind.parse(f.strip(), opts) == answer]
        out.setdefault(answer, [])
        out[answer] += [f for f in forms if f not in out[answer]]
    return out if len(out) >= 2 else None


def token_reader(tokenizer: Any) -> TokenReader:
    """text -> its first token id as `choice_logprobs` tokenizes it; None if empty or blank."""
    cache: dict[str, int | None] = {}

    def read(text: str) -> int | None:
        if text not in cache:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            first = int(ids[0]) if ids else None
            blank = first is not None and not tokenizer.decode([first]).strip()
            cache[text] = None if blank else first
        return cache[text]

    return read


def item_choices(item: TaskItem, template: str, read: TokenReader) -> Choices | str:
    """The item's `Choices`, or the reason it is generated instead (a `FALLBACK_*`).

    A first token that forms of two different answers share is dropped (it does not tell them
    apart); when that token, or a blank one, starts an answer as the task writes it (its first
    form), the item is generated instead.
    """
    forms = answer_forms(item.verifier, item.options, template)
    if forms is None:
        return FALLBACK_NO_SET
    owners: dict[int, set[str]] = {}
    first_form: dict[int, str] = {}  # token -> the first form (priority order) starting with it
    for answer, candidates in forms.items():
        for text in candidates:
            tok = read(text)
            if tok is not None:
                owners.setdefault(tok, set()).add(answer)
                first_form.setdefault(tok, text)
    ambiguous = {tok for tok, answers in owners.items() if len(answers) > 1}
    for candidates in forms.values():
        tok = read(candidates[0])
        if tok is None or tok in ambiguous:
            return FALLBACK_SHARED
    kept = [(text, tok) for tok, text in first_form.items() if tok not in ambiguous]
    return Choices(tuple(t for t, _ in kept), tuple(tok for _, tok in kept))


def plan_answers(
    items: Sequence[TaskItem],
    template: str,
    tokenizer: Any,
    *,
    mode: str,
    samples: bool,
) -> list[Choices | str]:
    """Per item: `Choices` to answer by prefill, or a fallback reason ('' in generate mode)."""
    if mode == "generate":
        return ["" for _ in items]
    if samples:
        return [FALLBACK_SAMPLING for _ in items]
    read = token_reader(tokenizer)
    return [item_choices(it, template, read) for it in items]


def _union(choices: Sequence[Choices]) -> dict[int, str]:
    """First token -> one form that starts with it, over all items (for one prefill)."""
    union: dict[int, str] = {}
    for c in choices:
        for text, tok in zip(c.texts, c.tokens, strict=True):
            union.setdefault(tok, text)
    return union


def _prefill_scores(
    vlm: VisionLanguageModel, prompts: Sequence[Prompt], choices: Sequence[Choices]
) -> list[list[float]]:
    """Per item, the first-token log-prob of each of its forms, from one prompt prefill."""
    scorer = getattr(vlm, "choice_logprobs", None)
    if scorer is None:
        raise UserError(
            f"model family '{getattr(vlm, 'family', '?')}' has no choice_logprobs — "
            "use --answer-mode generate"
        )
    union = _union(choices)
    column = {tok: j for j, tok in enumerate(union)}
    logp = scorer(list(prompts), list(union.values()), batch_size=max(1, len(prompts)))
    return [[float(logp[b, column[t]]) for t in c.tokens] for b, c in enumerate(choices)]


def _pixel_scores(
    vlm: VisionLanguageModel,
    prompts: Sequence[Prompt],
    choices: Sequence[Choices],
    pixel_images: torch.Tensor,
    batch_size: int,
) -> list[list[float]]:
    """The same log-probs from `answer_logprobs` rows (prompt + form) on given pixels."""
    owner = [b for b, c in enumerate(choices) for _ in c.texts]
    answers = [t for c in choices for t in c.texts]
    flat: list[float] = []
    step = max(1, batch_size)
    for start in range(0, len(owner), step):
        rows = owner[start : start + step]
        lp = vlm.answer_logprobs(
            [prompts[b] for b in rows],
            answers[start : start + step],
            pixel_images=pixel_images[rows],
        )
        flat += lp.logps[:, 0].float().cpu().tolist()
    out, pos = [], 0
    for c in choices:
        out.append(flat[pos : pos + len(c.texts)])
        pos += len(c.texts)
    return out


def choose(
    vlm: VisionLanguageModel,
    prompts: Sequence[Prompt],
    choices: Sequence[Choices],
    *,
    pixel_images: torch.Tensor | None = None,
    batch_size: int = 16,
) -> list[tuple[str, dict[str, float]]]:
    """Per prompt: (prediction text, {form: first-token log-prob}) of the best-scoring form."""
    if not prompts:
        return []
    if pixel_images is None:
        scores = _prefill_scores(vlm, prompts, choices)
    else:
        scores = _pixel_scores(vlm, prompts, choices, pixel_images, batch_size)
    out = []
    for c, s in zip(choices, scores, strict=True):
        best = max(range(len(s)), key=lambda j: s[j])  # first of equal maxima
        out.append((c.texts[best].strip(), dict(zip(c.texts, s, strict=True))))
    return out
