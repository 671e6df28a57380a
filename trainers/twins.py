"""The twin-pair MBPO variant (`hybrid.twins`): MBPO that can only gain by looking.

On the embedded benchmark (generator v3) every counter-prior training item has a prior twin:
the same scene with only the asked attribute set back to the prior, asked with the same text
(`train_twins` split, `meta.pair_id` = the counter-prior item's doc_id). Plain MBPO trains on
mined counter-prior items only, and every rejected answer is the prior one, so moving the
text-only answer off the prior raises its reward without looking (the committed quickstart's
only "shown" gain was exactly that). With twins:
- mining draws its candidates from the training items that HAVE a twin (the counter-prior ones;
  with `mining.limit` null: all of them, i.e. the whole training split's counter-prior items);
- every mined pair is trained together with its twin in the same step: an extra offline group
  on the twin image whose chosen answer is the prior one and whose rejected answer is the mined
  item's answer (right and wrong are swapped), so a text-only shift gains on one twin exactly
  what it loses on the other;
- an mDPO-style image-conditional term uses the twin as the in-distribution "wrong image":
  the mined item's answer is preferred on its own image over the twin image, and the twin's
  answer on the twin image over the mined item's image (`losses.mdpo_conditional_loss`, weight
  `hybrid.twin_cond_weight`, temperature `hybrid.twin_cond_beta`).
The matched control is SFT on the same twins (`sft.preference_data` + `sft.twins`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mbpo_bench.errors import UserError

if TYPE_CHECKING:
    import torch
    from mbpo_bench.trainers.data import PreferencePair
    from mbpo_bench.trainers.policy import Policy

    from mbpo_bench.data.items import TaskItem


def twin_map(data: str, *, limit: int | None = None) -> dict[tuple[str, str], TaskItem]:
    """(task, doc_id of a counter-prior training item) -> its prior twin."""
    from mbpo_bench.trainers.data import load_items

    twins = load_items(data, split="train_twins", limit=limit)
    return {(it.task, str(it.meta["pair_id"])): it for it in twins}


def with_twin(items: Sequence[TaskItem], twins: dict[tuple[str, str], TaskItem]) -> list[TaskItem]:
    """The items that have a twin (the mining candidates of the twin variant)."""
    out = [it for it in items if (it.task, it.doc_id) in twins]
    if not out:
        raise UserError(
            "hybrid.twins needs training items with prior twins (the embedded benchmark, "
            "generator version 3) — use data=embedded, or set hybrid.twins=false"
        )
    return out


def twin_pairs(
    pairs: Sequence[PreferencePair], twins: dict[tuple[str, str], TaskItem]
) -> list[PreferencePair]:
    """Each mined pair's twin as an offline pair on the twin image: chosen = the prior answer
    (right there), rejected = the mined item's answer (wrong there)."""
    out = []
    for p in pairs:
        twin = twins.get((p.task, p.doc_id))
        if twin is None:
            raise UserError(
                f"pair {p.task}/{p.doc_id} has no prior twin — mine with hybrid.twins=true "
                "(candidates are the items that have twins)"
            )
        out.append(
            dataclasses.replace(
                p, doc_id=twin.doc_id, image_path=str(twin.image_path), target=twin.target,
                chosen=twin.target, rejected=p.target, rejected_parsed=p.target, source="twin",
            )
        )  # fmt: skip
    return out


def twin_items(pairs: Sequence[PreferencePair], twins: Sequence[PreferencePair]) -> list[TaskItem]:
    """Mined items and their twins, interleaved (online prompts / SFT samples of the variant)."""
    return [it for p, t in zip(pairs, twins, strict=True) for it in (p.as_item(), t.as_item())]


def conditional_loss(
    policy: Policy, pairs: Sequence[PreferencePair], twins: Sequence[PreferencePair], beta: float
) -> tuple[torch.Tensor, float]:
    """(summed image-conditional loss over the pairs, its value): y on its own image over y on
    the twin's image, for the mined answer and for the twin's (see the module docstring)."""
    import torch
    from mbpo_bench.trainers import losses
    from mbpo_bench.trainers.data import item_prompts

    from mbpo_bench.models.protocol import Prompt

    own = item_prompts([p.as_item() for p in pairs])
    twin = item_prompts([t.as_item() for t in twins])
    swapped = [Prompt(o.text, t.image) for o, t in zip(own, twin, strict=True)]
    swapped_back = [Prompt(t.text, o.image) for o, t in zip(own, twin, strict=True)]
    prompts = own + swapped + twin + swapped_back
    y, y_twin = [p.chosen for p in pairs], [t.chosen for t in twins]
    answers = y + y + y_twin + y_twin
    n = len(pairs)
    with torch.no_grad(), policy.reference() as ref:
        r = ref.answer_logprobs(prompts, answers).sum()
    policy.train_mode(True)
    p = policy.vlm.answer_logprobs(prompts, answers, requires_grad=True).sum()
    a = losses.mdpo_conditional_loss(p[:n], p[n : 2 * n], r[:n], r[n : 2 * n], beta=beta)
    b = losses.mdpo_conditional_loss(
        p[2 * n : 3 * n], p[3 * n :], r[2 * n : 3 * n], r[3 * n :], beta=beta
    )
    total = a.losses.sum() + b.losses.sum()
    return total, float(total.detach())
