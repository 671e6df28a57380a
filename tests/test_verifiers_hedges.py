"""Hedges and negations earn nothing: several option letters in any separator, yes-and-no
answers, uncertain or negated yes/no answers all parse as no answer (no credit, format reward 0,
GRPO reward 0), while the plain answers they are built from still score. Also: the verifiers
import the standard library only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import mbpo_bench.tasks.verifiers as verifiers_pkg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mbpo_bench.tasks.verifiers import format_reward, parse, reward

LETTERS = "ABCD"
OPTIONS = ("red", "green", "blue", "yellow")
SEPARATORS = [
    " ", "  ", "\n", "\n\n", "\t", ",", ", ", " ,", ";", "; ", "/", " / ", "|", " | ", "&", " & ",
    " or ", " and ", " OR ", ", or ", " and/or ", "-", " - ", ".", ". ", ".\n", "\r\n", "+",
]  # fmt: skip
WRAPS = ["{}", "({})", "[{}]", "**{}**", "{}."]
LEADS = ["", "The answer is ", "Answer: ", "I think ", "Options "]


@settings(max_examples=300, deadline=None)
@given(
    pair=st.lists(st.sampled_from(LETTERS), min_size=2, max_size=3, unique=True),
    sep=st.sampled_from(SEPARATORS),
    wrap=st.sampled_from(WRAPS),
    lead=st.sampled_from(LEADS),
    with_options=st.booleans(),
)
def test_several_letters_in_any_separator_are_a_hedge(
    pair: list[str], sep: str, wrap: str, lead: str, with_options: bool
) -> None:
    options = OPTIONS if with_options else ()
    response = lead + sep.join(wrap.format(letter) for letter in pair)
    assert parse("multiple_choice", response, options) is None, response
    assert format_reward("multiple_choice", response, options) == 0.0
    for letter in pair:  # whichever letter is right, the hedge earns nothing
        assert reward("multiple_choice", response, letter, options) == 0.0


@settings(max_examples=100, deadline=None)
@given(
    letter=st.sampled_from(LETTERS),
    wrap=st.sampled_from(WRAPS),
    lead=st.sampled_from(LEADS[:3]),
)
def test_one_letter_still_scores(letter: str, wrap: str, lead: str) -> None:
    response = lead + wrap.format(letter)
    assert parse("multiple_choice", response, OPTIONS) == letter
    assert reward("multiple_choice", response, letter, OPTIONS) == 2.0


@pytest.mark.parametrize("response", ["B C", "C D", "B\nC", "B, C", "B/C", "A C", "A\nB", "A B"])
def test_issue_examples_of_letter_hedges(response: str) -> None:
    assert parse("multiple_choice", response, OPTIONS) is None
    assert reward("multiple_choice", response, "B", OPTIONS) == 0.0


# --- yes/no --------------------------------------------------------------------------------------

HEDGES = [
    "Yes and no", "Yes and no.", "yes or no", "Yes/No", "no & yes", "No and yes.", "Yes. No.",
    "Yes\nNo", "Yes, no.", "I'm not sure, maybe yes", "Maybe yes", "Perhaps no.",
    "Probably yes", "Possibly not, no", "I am unsure. Yes?", "I don't know, yes?",
    "Hard to say, yes", "I can't tell; no", "It is unclear, yes.", "Not sure. Yes",
    "I’m not sure, maybe yes",
]  # fmt: skip
NEGATIONS = [
    "I would not say yes", "Not yes", "not no", "I wouldn't say yes", "I don't think yes.",
    "I would never say no", "It is not true", "That is not correct", "NOT YES",
    "I wouldn’t say yes",
]  # fmt: skip
PLAIN = [
    ("Yes", "yes"), ("No", "no"), ("Yes.", "yes"), ("no", "no"), ("Yes, there is a dog.", "yes"),
    ("No, there is not a dog.", "no"), ("No, there is no cat.", "no"),
    ("Yes, but there is no cat", "yes"), ("Yes, and no cat is visible.", "yes"),
    ("No, not at all.", "no"), ("I don't think so, no.", "no"), ("The answer is no.", "no"),
    ("Yes, it is not red.", "yes"), ("There isn't one. No.", "no"),
]  # fmt: skip


@pytest.mark.parametrize("response", HEDGES + NEGATIONS)
@pytest.mark.parametrize("target", ["yes", "no"])
def test_yesno_hedges_and_negations_earn_nothing(response: str, target: str) -> None:
    assert parse("yesno", response) is None
    assert format_reward("yesno", response) == 0.0
    assert reward("yesno", response, target) == 0.0


@pytest.mark.parametrize(("response", "expected"), PLAIN)
def test_yesno_plain_answers_still_score(response: str, expected: str) -> None:
    assert parse("yesno", response) == expected
    assert reward("yesno", response, expected) == 2.0


@settings(max_examples=200, deadline=None)
@given(
    label=st.sampled_from(["yes", "no", "Yes", "No", "YES"]),
    negation=st.sampled_from(["not", "Not", "never", "don't", "wouldn't", "can't", "isn't"]),
    filler=st.lists(st.sampled_from(["I", "would", "say", "really", "think"]), max_size=2),
    tail=st.sampled_from(["", ".", "!", " at all"]),
)
def test_yesno_negated_label_has_no_answer(
    label: str, negation: str, filler: list[str], tail: str
) -> None:
    response = " ".join([negation, *filler, label]) + tail
    assert parse("yesno", response) is None, response


@settings(max_examples=200, deadline=None)
@given(
    first=st.sampled_from(["yes", "Yes", "YES", "true"]),
    second=st.sampled_from(["no", "No", "NO", "false"]),
    joint=st.sampled_from([" or ", " and ", "/", " / ", " & ", ", or ", " | ", ". ", "\n"]),
    swap=st.booleans(),
    tail=st.sampled_from(["", ".", "!", ", it depends"]),
)
def test_yes_and_no_joined_is_a_hedge(
    first: str, second: str, joint: str, swap: bool, tail: str
) -> None:
    a, b = (second, first) if swap else (first, second)
    assert parse("yesno", f"{a}{joint}{b}{tail}") is None


# --- standard library only -----------------------------------------------------------------------


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_verifiers_import_the_standard_library_only() -> None:
    """The verifiers and the lmms-eval-compatible rules (both run inside `process_results`)."""
    tasks_dir = Path(verifiers_pkg.__file__).parents[1]
    files = sorted((tasks_dir / "verifiers").glob("*.py"))
    files += sorted((tasks_dir / "lmms_compat").glob("*.py"))
    assert len(files) >= 10
    allowed = set(sys.stdlib_module_names) | {"mbpo_bench", "__future__"}
    for path in files:
        outside = _imported_roots(path) - allowed
        assert not outside, f"{path.name} imports {sorted(outside)}"
