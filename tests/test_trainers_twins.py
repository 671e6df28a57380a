"""The twin-pair variant's data: each mined pair's twin swaps right and wrong on the twin image,
and only items with a twin are candidates."""

from __future__ import annotations

from pathlib import Path

import pytest
from mbpo_bench.trainers.data import PreferencePair
from mbpo_bench.trainers.twins import twin_items, twin_pairs, with_twin

from mbpo_bench.data.items import TaskItem
from mbpo_bench.errors import UserError


def _pair(doc: str) -> PreferencePair:
    return PreferencePair(
        task="t", doc_id=doc, image_path=f"/img/{doc}.png", question="What color is the star?",
        target="blue", verifier="multiple_choice", options=("red", "blue"), chosen="blue",
        rejected="red", iig=1.0, source="pgd", rejected_parsed="red",
    )  # fmt: skip


def _twin(doc: str) -> TaskItem:
    return TaskItem("t", f"{doc}-twin", "What color is the star?", "red", "multiple_choice",
                    image_path=Path(f"/img/{doc}-twin.png"), options=("red", "blue"),
                    meta={"pair_id": doc})  # fmt: skip


def test_twin_pair_swaps_right_and_wrong_on_the_twin_image() -> None:
    twins = {("t", "a"): _twin("a")}
    (t,) = twin_pairs([_pair("a")], twins)
    assert (t.doc_id, t.image_path, t.question) == (
        "a-twin",
        "/img/a-twin.png",
        _pair("a").question,
    )
    assert (t.chosen, t.rejected, t.target) == ("red", "blue", "red")
    items = twin_items([_pair("a")], [t])
    assert [(i.doc_id, i.target) for i in items] == [("a", "blue"), ("a-twin", "red")]
    with pytest.raises(UserError, match="no prior twin"):
        twin_pairs([_pair("b")], twins)


def test_only_items_with_a_twin_are_candidates() -> None:
    items = [TaskItem("t", d, "q", "x", "yesno", image_path=Path("/i.png")) for d in "abc"]
    twins = {("t", "b"): _twin("b")}
    assert [i.doc_id for i in with_twin(items, twins)] == ["b"]
    with pytest.raises(UserError, match="prior twins"):
        with_twin(items, {})
