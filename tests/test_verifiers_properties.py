"""Property tests: verifiers never raise on any response, are deterministic, score in range;
and importing them pulls in none of the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from mbpo_bench.tasks.verifiers import VERIFIERS, reward, verify

TARGETS = {"yesno": "yes", "multiple_choice": "B", "number": "3", "short_word": "circle"}
OPTIONS = ("red", "green", "blue", "yellow")
# Text built from the pieces that parsers look at, so the search reaches the interesting paths.
PIECES = st.sampled_from(
    ["yes", "No", "A", "a", "(B)", "3", "three", "1,000", "-2.5", "or", "/", "red", "circle",
     "The answer is", ".", ",", " ", "\n", "Ａ", "ｙｅｓ", "answer:"]
)  # fmt: skip
RESPONSES = st.one_of(st.text(max_size=60), st.lists(PIECES, max_size=12).map(" ".join))


@settings(max_examples=150, deadline=None)
@given(response=RESPONSES, kind=st.sampled_from(sorted(VERIFIERS)), with_options=st.booleans())
def test_never_raises_deterministic_in_range(response: str, kind: str, with_options: bool) -> None:
    options = OPTIONS if with_options and kind in ("multiple_choice", "short_word") else ()
    target = "red" if options and kind == "short_word" else TARGETS[kind]
    first = verify(kind, response, target, options)
    second = verify(kind, response, target, options)
    assert first == second
    assert 0.0 <= first.score <= 1.0
    assert first.correct == (first.score == 1.0)
    assert first.correct <= (first.parsed is not None)
    assert 0.0 <= reward(kind, response, target, options) <= 2.0


def test_importing_verifiers_pulls_no_heavy_library() -> None:
    code = (
        "import sys, importlib, pkgutil\n"
        "import mbpo_bench.tasks.verifiers as v\n"
        "for m in pkgutil.iter_modules(v.__path__):\n"
        "    importlib.import_module('mbpo_bench.tasks.verifiers.' + m.name)\n"
        "import mbpo_bench.tasks.metrics\n"
        "heavy = [n for n in ('torch', 'transformers', 'lmms_eval', 'pandas', 'numpy', 'PIL')"
        " if n in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
