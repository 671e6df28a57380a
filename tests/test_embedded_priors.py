"""A text-only "model" that answers from the training split's priors scores high on
prior-consistent and low on counter-prior evaluation items: the benchmark measures the prior."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest
from mbpo_bench.tasks.common import score_row

from mbpo_bench.data.embedded import EmbeddedConfig
from mbpo_bench.data.registry import aggregate, get_task, load_items

CONFIG = EmbeddedConfig(seed=11, n_train=1500, n_eval_per_cell=60)


@pytest.mark.parametrize("kind", ["existence", "color", "count"])
def test_prior_only_answers_split_the_cells(
    kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache: Path = tmp_path_factory.getbasetemp() / "prior-cache"
    spec = get_task(f"mbpo_embedded_{kind}")
    train = load_items(spec, split="train", cache_dir=cache, embedded=CONFIG)
    # "Training": the most frequent answer per question text (the text alone, no image).
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for item in train:
        answers[item.meta["question_raw"]][item.target] += 1
    blind = {q: c.most_common(1)[0][0] for q, c in answers.items()}

    items = load_items(spec, split="eval", cache_dir=cache, embedded=CONFIG)
    rows = [
        score_row(
            i.verifier, blind.get(i.meta["question_raw"], ""), i.target, i.options, meta=i.meta
        )
        for i in items
    ]
    metrics = aggregate(spec, rows)
    assert metrics["acc_prior_consistent"] >= 0.9
    assert metrics["acc_counter_prior"] <= 0.1
    assert metrics["counter_prior_gap"] >= 0.8
