"""What a model that does not look can score on the embedded benchmark (generator version 3).

A text-only "model" answers from the question text alone. Twins share their text and differ in
the answer, so such a model answers both twins alike and gets at most one right: pair accuracy is
EXACTLY 0 for every deterministic text-only policy (from the prior, against it, anything), and
1/k^2 in expectation for uniform guessing over k answers (the chance level). From the prior it
scores 1 on prior-consistent and 0 on counter-prior items; against it, the reverse.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from mbpo_bench.tasks.common import score_row

from mbpo_bench.data.embedded import EmbeddedConfig
from mbpo_bench.data.registry import aggregate, get_task, load_items

CONFIG = EmbeddedConfig(seed=11, n_train=1500, n_eval_per_cell=200, n_dev_per_cell=10)
ANSWERS = {"existence": ("yes", "no"), "count": ("1", "2", "3")}


def _items(kind: str, split: str, factory: pytest.TempPathFactory) -> list:
    cache: Path = factory.getbasetemp() / "prior-cache"
    return load_items(get_task(f"mbpo_embedded_{kind}"), split=split, cache_dir=cache,
                      embedded=CONFIG)  # fmt: skip


def _score(kind: str, items: list, answer_of) -> dict[str, float]:  # type: ignore[no-untyped-def]
    rows = [score_row(i.verifier, answer_of(i), i.target, i.options, meta=i.meta) for i in items]
    return aggregate(get_task(f"mbpo_embedded_{kind}"), rows)


def _learned_prior(kind: str, factory: pytest.TempPathFactory) -> dict[str, str]:
    """'Training': the most frequent answer per question text in the training split."""
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for item in _items(kind, "train", factory):
        answers[item.meta["question_raw"]][item.target] += 1
    return {q: c.most_common(1)[0][0] for q, c in answers.items()}


@pytest.mark.parametrize("kind", ["existence", "color", "count"])
def test_text_only_policies_score_zero_pairs(
    kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    items = _items(kind, "eval", tmp_path_factory)
    prior = _learned_prior(kind, tmp_path_factory)

    from_prior = _score(kind, items, lambda i: prior.get(i.meta["question_raw"], ""))
    assert from_prior["acc_prior_consistent"] == 1.0
    assert from_prior["acc_counter_prior"] == 0.0
    assert from_prior["pair_accuracy"] == 0.0

    def anti(i):  # type: ignore[no-untyped-def]
        options = i.options or ANSWERS[kind]
        p = prior.get(i.meta["question_raw"], "")
        # a fixed non-prior answer per question text (what a text-only model can do)
        return sorted(o for o in options if o != p)[
            zlib.crc32(i.meta["question_raw"].encode()) % (len(options) - 1)
        ]

    against = _score(kind, items, anti)
    assert against["acc_prior_consistent"] == 0.0
    assert against["pair_accuracy"] == 0.0
    if kind == "existence":
        assert against["acc_counter_prior"] == 1.0

    looking = _score(kind, items, lambda i: i.target)  # a model that reads the image
    assert looking["pair_accuracy"] == 1.0 and looking["unparsed_rate"] == 0.0


@pytest.mark.parametrize("kind", ["existence", "color"])
def test_uniform_guessing_scores_chance_on_pairs(
    kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    items = _items(kind, "eval", tmp_path_factory)
    k = len(items[0].options or ANSWERS[kind])
    rng = random.Random(0)
    runs = [
        _score(kind, items, lambda i: rng.choice(i.options or ANSWERS[kind]))["pair_accuracy"]
        for _ in range(20)
    ]
    mean = sum(runs) / len(runs)
    n_pairs = 20 * len(items) // 2
    sd = (1 / k**2 * (1 - 1 / k**2) / n_pairs) ** 0.5
    assert abs(mean - 1 / k**2) < 4 * sd


def test_unparsed_answers_are_counted_apart(tmp_path_factory: pytest.TempPathFactory) -> None:
    items = _items("existence", "eval", tmp_path_factory)
    junk = _score("existence", items, lambda i: "%%")
    assert junk["unparsed_rate"] == 1.0 and junk["accuracy"] == 0.0
