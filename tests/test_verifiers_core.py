"""Verifiers: answer extraction, hedges, format reward, GRPO reward, unknown names."""

from __future__ import annotations

import pytest
from mbpo_bench.tasks.verifiers import VERIFIERS, format_reward, parse, reward, verify

from mbpo_bench.errors import UserError

COLOURS = ("green", "blue", "red", "yellow")  # red is option C, so "A red ..." cannot pass by text


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("YES!", "yes"),
        ("Yes, there is a dog.", "yes"),
        ("No, there is no cat.", "no"),
        ("There is no cat in the image.", "no"),
        ("The answer is yes", "yes"),
        ("Yes, but there is no cat", "yes"),
        ("yes or no", None),
        ("Yes/No", None),
        ("I cannot tell.", None),
        ("", None),
        ("True", "yes"),
    ],
)
def test_yesno_parse(response: str, expected: str | None) -> None:
    assert parse("yesno", response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(b)", "B"),
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("B. blue", "B"),
        ("D is correct", "D"),
        ("A is correct", "A"),
        ("blue", "B"),
        ("It is yellow.", "D"),
        ("A red circle", "C"),  # the article is not option A; "red" is option C
        ("a red one", "C"),
        ("A or C", None),
        ("A, C", None),
        ("green or blue", None),
        ("E", None),  # only four options
        ("purple", None),
        ("", None),
    ],
)
def test_multiple_choice_parse(response: str, expected: str | None) -> None:
    assert parse("multiple_choice", response, COLOURS) == expected


def test_multiple_choice_target_as_letter_or_text() -> None:
    assert verify("multiple_choice", "red", "C", COLOURS).correct
    assert verify("multiple_choice", "C", "red", COLOURS).correct
    assert verify("multiple_choice", "(C)", "Red", COLOURS).correct
    assert not verify("multiple_choice", "blue", "red", COLOURS).correct


def test_multiple_choice_longest_option_wins_when_it_contains_the_others() -> None:
    options = ("red", "dark red", "blue")
    assert parse("multiple_choice", "dark red", options) == "B"
    assert parse("multiple_choice", "red", options) == "A"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("3", "3"),
        ("three", "3"),
        ("There are 3 circles.", "3"),
        ("3 (three)", "3"),
        ("2 or 3", None),
        ("1,000", "1000"),
        ("-2.5", "-2.5"),
        ("3.0", "3"),
        ("no idea", None),
    ],
)
def test_number_parse(response: str, expected: str | None) -> None:
    assert parse("number", response) == expected


def test_short_word() -> None:
    assert verify("short_word", "It is a circle.", "circle").correct
    assert verify("short_word", "The answer is Circle", "circle").correct
    assert not verify("short_word", "a square", "circle").correct
    vocab = ("circle", "square", "triangle")
    assert verify("short_word", "I see a circle in the middle", "circle", vocab).correct
    assert parse("short_word", "circle or square", vocab) is None
    assert parse("short_word", "there is a big circle in the middle of it", ()) is None


def test_verdict_fields_and_reward() -> None:
    verdict = verify("yesno", "Yes.", "yes")
    assert (verdict.score, verdict.correct, verdict.parsed) == (1.0, True, "yes")
    assert verdict.components == {"correctness": 1.0, "format": 1.0}
    assert reward("yesno", "Yes.", "yes") == 2.0
    assert reward("yesno", "No.", "yes") == 1.0  # right form, wrong answer
    assert reward("yesno", "yes or no", "yes") == 0.0
    long_right = "Yes, " + " ".join(["there is a dog"] * 5)
    assert reward("yesno", long_right, "yes", max_words=5) == 1.0  # correct, too long


def test_format_reward_limits_length() -> None:
    assert format_reward("number", "3") == 1.0
    assert format_reward("number", "there are 3 of them", max_words=2) == 0.0
    assert format_reward("number", "many") == 0.0


def test_unknown_verifier_suggests_names() -> None:
    with pytest.raises(UserError, match="did you mean: yesno"):
        verify("yes_no", "yes", "yes")


def test_bad_target_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not a valid yesno answer"):
        verify("yesno", "yes", "maybe")


def test_registry_has_the_four_kinds() -> None:
    assert set(VERIFIERS) == {"yesno", "multiple_choice", "number", "short_word"}
