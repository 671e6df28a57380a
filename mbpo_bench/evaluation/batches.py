"""One batch of one probe through the model: prompts -> responses or log-probs -> sample rows.

A row holds everything needed to recompute every metric and to pair samples between checkpoints:
task, probe, doc id, prompt text, the image used ("path", "mismatched:path", "noise:seed",
None), target and its canonical form, options, response, parsed answer, verdict (correct, score,
components) and the item's meta labels; `iig` rows hold per-token-mean log-probs of the reference
answer with and without the image instead of a response. Generation-probe rows also say how the
response came about: `answer_mode` "generate" (plus `fallback`, the reason, when the run's mode
is "choice") or "choice" (plus `choice_logprobs`, each answer form's first-token log-prob; see
`choices.py`). Every row with an image also says what the model saw of it: the input `protocol`,
the processed `image_hw` ([H, W]) and its `image_tokens` (users debugging token budgets ask for
exactly this; a Qwen image's count depends on its size).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from mbpo_bench.evaluation.probes import BACKBONE, ProbeInput, probe_input
from mbpo_bench.modality.images import stable_seed
from mbpo_bench.models.protocol import Prompt

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mbpo_bench.data.items import TaskItem
    from mbpo_bench.evaluation.config import EvalConfig
    from mbpo_bench.evaluation.plan import Batch, TaskPlan
    from mbpo_bench.models.protocol import VisionLanguageModel


def truncate_at(text: str, until: list[str]) -> str:
    """Cut a response at the first stop string (lmms-eval's `until`)."""
    cut = len(text)
    for stop in until:
        if stop:
            pos = text.find(stop)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


def score_response(plan: TaskPlan, item: TaskItem, response: str) -> dict[str, Any]:
    """The task's own per-sample row: its lmms-eval `process_results` (or the verifier's row).

    Calling the same function lmms-eval calls keeps our metrics and lmms-eval's identical.
    """
    from mbpo_bench.tasks.common import item_to_doc, score_row

    fn = resolve_function(plan.info.process_results)
    if fn is None:
        return score_row(
            plan.info.verifier,
            response,
            item.target,
            item.options,
            doc_id=item.doc_id,
            meta=item.meta,
        )
    doc = item_to_doc(item, list(plan.info.metrics))
    scored = fn(doc, [response])
    row = next(iter(scored.values())) if scored else {}
    return dict(row) if isinstance(row, dict) else {"value": row}


def resolve_function(dotted: str | None) -> Any:
    """Import `a.b.fn` (a YAML `!function` reference); None stays None."""
    if not dotted:
        return None
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def generation_row(
    plan: TaskPlan, probe: str, item: TaskItem, inp: ProbeInput, response: str
) -> dict[str, Any]:
    scored = score_response(plan, item, response)
    return {
        "task": plan.info.name,
        "probe": probe,
        "prompt": item.question,
        "image": inp.image,
        "options": list(item.options),
        "target_raw": item.target,
        "response": response,
        **scored,
        "doc_id": item.doc_id,
        "meta": dict(item.meta),
    }


def image_fields(vlm: VisionLanguageModel, image: Image.Image | None) -> dict[str, Any]:
    """What the model saw of the image: protocol, processed [H, W] and image-token count."""
    if image is None:
        return {"protocol": vlm.protocol, "image_hw": None, "image_tokens": 0}
    size = vlm.processed_size(image)
    return {
        "protocol": vlm.protocol,
        "image_hw": list(size),
        "image_tokens": vlm.num_image_tokens(size),
    }


def _adversarial(
    vlm: VisionLanguageModel,
    inputs: list[ProbeInput],
    items: list[TaskItem],
    config: EvalConfig,
    seed: int,
) -> tuple[torch.Tensor, list[float], list[float]]:
    """PGD against the reference answers; returns images and log p before/after per sample."""
    import torch

    from mbpo_bench.modality.pgd import pgd_attack

    prompts = [i.prompt for i in inputs]
    targets = [it.target for it in items]
    clean = vlm.images_to_tensor([p.image for p in prompts if p.image is not None])

    def objective(images: torch.Tensor) -> torch.Tensor:
        lp = vlm.answer_logprobs(prompts, targets, pixel_images=images, requires_grad=True)
        return lp.mean()  # per item: mean log-prob of the answer's tokens (EOS excluded)

    pc = config.probes
    result = pgd_attack(
        objective,
        clean,
        eps=pc.adversarial_eps,
        alpha=pc.adversarial_alpha,
        steps=pc.adversarial_steps,
        random_start=pc.adversarial_random_start,
        generator=torch.Generator().manual_seed(seed),
    )
    before, after = result.objective_before.cpu().tolist(), result.objective_after.cpu().tolist()
    return result.images, before, after


def _answers(
    vlm: VisionLanguageModel,
    plan: TaskPlan,
    items: list[TaskItem],
    prompts: list[Prompt],
    pixels: torch.Tensor | None,
    config: EvalConfig,
    seed: int,
) -> list[tuple[str, dict[str, Any]]]:
    """Per item: (response, how it was answered): by choice prefill where the run's mode and the
    item allow it, else by generation (the items left over, as one sub-batch, seeded)."""
    import torch

    from mbpo_bench.evaluation.choices import Choices, choose, plan_answers
    from mbpo_bench.models.compile import compiled_layers

    gen = plan.info.generation
    modes = plan_answers(
        items,
        plan.info.prompt_template,
        vlm.tokenizer,
        mode=config.answer_mode,
        samples=gen.do_sample,
    )
    out: list[tuple[str, dict[str, Any]]] = [("", {}) for _ in items]
    chosen = [k for k, m in enumerate(modes) if isinstance(m, Choices)]
    if chosen:
        with compiled_layers(vlm, enabled=config.runtime.compile_layers, qwen_vision=True):
            picks = choose(
                vlm,
                [prompts[k] for k in chosen],
                [m for m in modes if isinstance(m, Choices)],
                pixel_images=None if pixels is None else pixels[chosen],
                batch_size=config.batch_size,
            )
        for k, (text, scores) in zip(chosen, picks, strict=True):
            out[k] = (text, {"answer_mode": "choice", "choice_logprobs": scores})
    taken = set(chosen)
    rest = [k for k in range(len(items)) if k not in taken]
    if not rest:
        return out
    torch.manual_seed(seed)
    # inside the compiled context the vision tower compiles; the LM layers, given a KV cache,
    # run their eager forward (compile.py), so greedy decoding is the same
    enabled = config.runtime.compile_layers
    with torch.no_grad(), compiled_layers(vlm, enabled=enabled, qwen_vision=True):
        texts = vlm.generate(
            [prompts[k] for k in rest],
            max_new_tokens=config.max_new_tokens or gen.max_new_tokens,
            do_sample=gen.do_sample,
            temperature=gen.temperature,
            top_p=gen.top_p,
            batch_size=len(rest),
            pixel_images=None if pixels is None else pixels[rest],
        )
    for k, generated in zip(rest, texts, strict=True):
        how: dict[str, Any] = {"answer_mode": "generate"}
        if modes[k]:
            how["fallback"] = modes[k]
        out[k] = (truncate_at(generated[0], gen.until), how)
    return out


def batch_prompts(
    vlm: VisionLanguageModel,
    plan: TaskPlan,
    batch: Batch,
    config: EvalConfig,
    start: int = 0,
    stop: int | None = None,
) -> list[Any]:
    """The prompts of items [start, stop) of `batch`: a `ProbeInput` each (generation probes),
    or a (with image, null condition) `Prompt` pair each (iig). The loader (`loader.py`) calls
    this in worker processes, chunk by chunk, and then prepares the images."""
    items = [plan.items[d] for d in batch.doc_ids[start:stop]]
    if batch.probe == "iig":
        return [iig_prompts(vlm, plan, it, config) for it in items]
    return [
        probe_input(
            batch.probe,
            it,
            image_size=vlm.image_size,
            mismatched=plan.mismatched,
            seed=config.probes.seed,
        )
        for it in items
    ]


def generation_batch(
    vlm: VisionLanguageModel,
    plan: TaskPlan,
    batch: Batch,
    config: EvalConfig,
    inputs: list[ProbeInput] | None = None,
) -> list[dict[str, Any]]:
    """Rows of one generation-probe batch; `inputs` are its prompts when the loader made them."""
    items = [plan.items[d] for d in batch.doc_ids]
    if inputs is None:
        inputs = batch_prompts(vlm, plan, batch, config)
    seed = stable_seed(batch.task, batch.probe, str(batch.index))
    if batch.probe == BACKBONE:  # a text-only LM: no choice prefill, it generates
        runtime = dataclasses.replace(config.runtime, compile_layers=False)
        config = dataclasses.replace(config, answer_mode="generate", runtime=runtime)
    pixels, before, after = None, None, None
    if batch.probe == "adversarial":
        pixels, before, after = _adversarial(vlm, inputs, items, config, seed)
    answers = _answers(vlm, plan, items, [i.prompt for i in inputs], pixels, config, seed)
    rows = []
    for k, (it, inp, (response, how)) in enumerate(zip(items, inputs, answers, strict=True)):
        row = {**generation_row(plan, batch.probe, it, inp, response), **how}
        row.update(image_fields(vlm, inp.prompt.image))
        if before is not None and after is not None:
            row["attack_logp_before"], row["attack_logp_after"] = before[k], after[k]
        rows.append(row)
    return rows


def iig_prompts(
    vlm: VisionLanguageModel, plan: TaskPlan, it: TaskItem, config: EvalConfig
) -> tuple[Prompt, Prompt]:
    """An item's IIG prompts: with its image, and under the null condition I0 (seeded)."""
    import torch

    from mbpo_bench.data.images import load_rgb
    from mbpo_bench.errors import UserError
    from mbpo_bench.modality.iig import null_image

    cond = config.probes.iig_null
    gen = torch.Generator().manual_seed(
        stable_seed(it.task, it.doc_id, "iig", str(config.probes.seed))
    )
    null: Image.Image | None  # None: the text-only null condition
    if cond == "mismatched":  # the mismatched probe's image: in distribution
        if it.doc_id not in plan.mismatched:
            raise UserError(
                f"IIG with the mismatched null needs another image of task {it.task}, which "
                "has fewer than two — use --set probes.iig_null=text"
            )
        null = load_rgb(plan.mismatched[it.doc_id], item=it.doc_id)
    else:
        null = null_image(cond, vlm.image_size, gen)
    return Prompt(it.question, it.load_image()), Prompt(it.question, null)


def iig_batch(
    vlm: VisionLanguageModel,
    plan: TaskPlan,
    batch: Batch,
    config: EvalConfig,
    pairs: list[tuple[Prompt, Prompt]] | None = None,
) -> list[dict[str, Any]]:
    """IIG of the reference answers: answer log-probs with the image and under I0; `pairs` are
    the prompts when the loader made them."""
    import torch

    from mbpo_bench.modality.iig import iig_from_logprobs
    from mbpo_bench.models.compile import compiled_layers

    items = [plan.items[d] for d in batch.doc_ids]
    cond, reduce = config.probes.iig_null, config.probes.iig_reduce
    if pairs is None:
        pairs = batch_prompts(vlm, plan, batch, config)
    with_image = [a for a, _ in pairs]
    without = [b for _, b in pairs]
    targets = [it.target for it in items]
    with (
        torch.no_grad(),
        compiled_layers(vlm, enabled=config.runtime.compile_layers, qwen_vision=True),
    ):
        a = vlm.answer_logprobs(with_image, targets)
        b = vlm.answer_logprobs(without, targets)
    mask = (a.tokens & b.tokens).cpu()  # the answer's tokens, EOS excluded
    logp_a, logp_b = a.logps.float().cpu(), b.logps.float().cpu()
    iig = iig_from_logprobs(logp_a, logp_b, mask, reduce=reduce).tolist()
    m = mask.float()
    denom = m.sum(-1).clamp(min=1.0) if reduce == "mean" else torch.ones(len(items))
    lp_a = ((logp_a * m).sum(-1) / denom).tolist()
    lp_b = ((logp_b * m).sum(-1) / denom).tolist()
    n_tok = m.sum(-1).long().tolist()
    return [
        {
            "task": plan.info.name,
            "probe": "iig",
            "doc_id": it.doc_id,
            "prompt": it.question,
            "image": str(it.image_path),
            "target": it.target,
            "null": cond,
            "reduce": reduce,
            "logp_image": lp_a[k],
            "logp_null": lp_b[k],
            "n_tokens": n_tok[k],
            "iig": iig[k],
            **image_fields(vlm, with_image[k].image),
            "meta": dict(it.meta),
        }
        for k, it in enumerate(items)
    ]


def run_batch(
    vlm: VisionLanguageModel,
    plan: TaskPlan,
    batch: Batch,
    config: EvalConfig,
    prompts: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """One batch's rows; `prompts`: its `batch_prompts` made ahead (images prepared), or None."""
    if batch.probe == "iig":
        return iig_batch(vlm, plan, batch, config, prompts)
    return generation_batch(vlm, plan, batch, config, prompts)
