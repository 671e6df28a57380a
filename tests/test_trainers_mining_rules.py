"""Mining options of ours: the mismatched IIG null, the keep rules (the clean answer must be
right; the prior-fallback rule) and what flip_rate counts.

Fake models only: what is checked is which image each null prompt carries and which pairs the
keep rule lets through, not a model's numbers.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from mbpo_bench.trainers import mining
from PIL import Image

from mbpo_bench.data.items import TaskItem
from mbpo_bench.errors import UserError
from mbpo_bench.modality.iig import compute_iig
from mbpo_bench.models.protocol import AnswerLogprobs, Prompt


class ImageIdModel:
    """log p(answer) = the id painted into the image's red channel; records every call."""

    image_size = 4

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def answer_logprobs(self, prompts: list[Prompt], answers: list[str]) -> AnswerLogprobs:
        ids = [p.image.getpixel((0, 0))[0] for p in prompts]  # type: ignore[union-attr,index]
        self.calls.append(ids)
        logps = torch.tensor(ids, dtype=torch.float32)[:, None]
        return AnswerLogprobs(logps=logps, mask=torch.ones_like(logps, dtype=torch.bool))


def _painted(i: int) -> Image.Image:
    return Image.new("RGB", (4, 4), (i, 0, 0))


def _mismatched_iig(seed: int) -> tuple[list[int], list[float]]:
    """(the image id each prompt's null carried, the IIG values) for 7 prompts in batches of 3."""
    prompts = [Prompt(f"q{i}", _painted(i)) for i in range(7)]
    model = ImageIdModel()
    values = compute_iig(model, prompts, ["a"] * 7, null="mismatched", batch_size=3, seed=seed)  # type: ignore[arg-type]
    nulls = [i for call in model.calls[1::2] for i in call]  # per batch: image call, then null
    return nulls, values.tolist()


def test_mismatched_null_uses_another_prompts_image_and_is_seeded() -> None:
    nulls, values = _mismatched_iig(0)
    assert sorted(nulls) == list(range(7)), "every image is some prompt's null exactly once"
    assert all(n != i for i, n in enumerate(nulls)), "a prompt never gets its own image"
    assert values == [float(i - n) for i, n in enumerate(nulls)]
    assert _mismatched_iig(0)[0] == nulls
    assert any(_mismatched_iig(s)[0] != nulls for s in (1, 2, 3))


def _items(n: int) -> list[TaskItem]:
    return [
        TaskItem("t", str(i), f"q{i}", "yes" if i % 2 else "no", "yesno",
                 image_path=Path(f"/none/{i}.png"))
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize(("keep", "require_clean"), [("wrong", True), ("wrong", False),
                                                   ("prior", True)])  # fmt: skip
def test_keep_rules_clean_answer_and_flip_rate(
    keep: str, require_clean: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _items(8)
    clean_image = _painted(1)
    monkeypatch.setattr(
        mining, "item_prompts", lambda its: [Prompt(it.question, clean_image) for it in its]
    )
    # under attack every item answers "yes"; without the image items 0-3 answer "yes", 4-7 "no"
    monkeypatch.setattr(
        mining, "_negatives",
        lambda vlm, batch, cfg, seed: (["yes"] * len(batch),
                                       {"before": [0.0] * len(batch), "after": [-1.0] * len(batch),
                                        "linf": [0.03] * len(batch)}),
    )  # fmt: skip
    target = {it.question: it.target for it in items}

    def generate(prompts: list[Prompt], **_: Any) -> list[list[str]]:
        out = []
        for p in prompts:
            i = int(p.text[1:])
            if p.image is None:  # the text-only (prior) answer
                out.append(["yes" if i < 4 else "no"])
            else:  # the clean image: right, except items 6 and 7 (already wrong, no attack)
                right = target[p.text]
                out.append([right if i < 6 else {"yes": "no", "no": "yes"}[right]])
        return out

    vlm = SimpleNamespace(model=SimpleNamespace(eval=lambda: None), image_size=4, generate=generate)
    cfg = mining.MiningConfig(
        iig_filter=False, keep=keep, limit=None, batch_size=3,  # type: ignore[arg-type]
        require_clean_correct=require_clean,
    )  # fmt: skip
    monkeypatch.setattr(mining, "_pool_iig", lambda v, its, c: torch.zeros(len(its)))
    pairs, stats = mining.mine_pairs(vlm, items, cfg)  # type: ignore[arg-type]
    # "yes" under attack is wrong for the "no" items 0, 2, 4, 6; item 6 was wrong already
    kept = {p.doc_id for p in pairs}
    if keep == "prior":  # also the text-only answer: only items < 4 answer "yes" blind
        assert kept == {"0", "2"}
    elif require_clean:
        assert kept == {"0", "2", "4"}
    else:  # the pre-v3 rule: an item wrong without any attack is kept too
        assert kept == {"0", "2", "4", "6"}
    assert stats.kept == len(pairs)
    assert (stats.attacked, stats.clean_right, stats.clean_wrong, stats.flipped) == (8, 6, 2, 3)
    assert stats.as_dict()["flip_rate"] == 3 / 6  # flips / attacked items right when clean


def test_online_pool_all_or_the_mined_pairs_items() -> None:
    from mbpo_bench.trainers.data import PreferencePair
    from mbpo_bench.trainers.hybrid import online_items

    items = _items(4)
    pair = PreferencePair(
        task="t", doc_id="2", image_path="/none/2.png", question="q2", target="yes",
        verifier="yesno", options=(), chosen="yes", rejected="no", iig=1.0, source="pgd",
        rejected_parsed="no", attack_logp_before=0.0, attack_logp_after=-1.0, attack_linf=0.03,
        attack_steps=10,
    )  # fmt: skip
    assert online_items(items, [pair], "all") == items
    mined = online_items(items, [pair], "mined")
    assert [(it.doc_id, it.question, it.target) for it in mined] == [("2", "q2", "yes")]
    assert online_items(items, [], "mined") == items  # nothing mined: every item, logged
    with pytest.raises(UserError, match=r"unknown hybrid\.online_pool"):
        online_items(items, [pair], "mine")
