"""Bootstrap CIs, paired differences and yes/no metrics (mbpo_bench.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbpo_bench.metrics import (
    RatioMetric,
    binary_metrics,
    bootstrap_ci,
    difference_ci,
    paired_bootstrap,
    ratio_ci,
    resample_counts,
)


def test_mean_ci_matches_normal_approximation() -> None:
    rng = np.random.default_rng(1)
    values = (rng.random(400) < 0.5).astype(float)
    est = bootstrap_ci(values, n_resamples=2000, seed=3)
    p = values.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / 400)
    assert est.n == 400 and est.value == pytest.approx(p)
    assert est.ci_low == pytest.approx(p - half, abs=0.012)
    assert est.ci_high == pytest.approx(p + half, abs=0.012)


def test_seeded_and_reproducible() -> None:
    values = np.arange(50, dtype=float) % 3
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_counts_are_resamples_of_n() -> None:
    counts = resample_counts(13, 40, seed=0)
    assert counts.shape == (40, 13)
    assert np.all(counts.sum(axis=1) == 13)


def test_ratio_resampling_equals_explicit_index_resampling() -> None:
    rng = np.random.default_rng(0)
    num, den = rng.random(20), (rng.random(20) > 0.3).astype(float)
    counts = resample_counts(20, 5, seed=2)
    got = RatioMetric(num, den).resampled(counts)
    for b in range(5):
        idx = np.repeat(np.arange(20), counts[b].astype(int))
        assert got[b] == pytest.approx(num[idx].sum() / den[idx].sum())


def test_custom_statistic_is_vectorised() -> None:
    values = np.arange(101, dtype=float)
    est = bootstrap_ci(values, statistic=lambda a: np.median(a, axis=-1), n_resamples=500)
    assert est.value == 50.0
    assert est.ci_low is not None and est.ci_high is not None
    assert est.ci_low < 50.0 < est.ci_high


def test_empty_and_undefined_give_none() -> None:
    assert bootstrap_ci([]).value is None
    est = ratio_ci(RatioMetric(np.zeros(5), np.zeros(5)), resample_counts(5, 10))
    assert est.value is None and est.ci_low is None and est.n == 5


def test_paired_bootstrap_of_a_constant_shift_is_exact() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(100)
    res = paired_bootstrap(b + 0.1, b, n_resamples=300)
    assert res.diff == pytest.approx(0.1)
    assert res.ci_low == pytest.approx(0.1) and res.ci_high == pytest.approx(0.1)
    assert res.p_value is not None and res.p_value < 0.01


def test_paired_bootstrap_is_narrower_than_unpaired_for_correlated_runs() -> None:
    rng = np.random.default_rng(4)
    base = (rng.random(300) < 0.6).astype(float)
    flip = rng.random(300) < 0.05
    other = np.where(flip, 1 - base, base)
    paired = paired_bootstrap(other, base, seed=1)
    ea, eb = bootstrap_ci(other, seed=1), bootstrap_ci(base, seed=2)
    assert paired.ci_low is not None and paired.ci_high is not None
    assert ea.ci_high is not None and ea.ci_low is not None
    assert (paired.ci_high - paired.ci_low) < (ea.ci_high - ea.ci_low)
    assert paired.p_value is not None and 0 < paired.p_value <= 1
    assert eb.n == 300


def test_paired_bootstrap_rejects_misaligned() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_difference_ci_matches_paired_bootstrap() -> None:
    rng = np.random.default_rng(5)
    a, b = (rng.random(80) < 0.7).astype(float), (rng.random(80) < 0.4).astype(float)
    counts = resample_counts(80, 1000, seed=0)
    d = difference_ci(RatioMetric.mean(a), RatioMetric.mean(b), counts)
    p = paired_bootstrap(a, b, seed=0)
    assert d.value == pytest.approx(p.diff)
    assert (d.ci_low, d.ci_high) == pytest.approx((p.ci_low, p.ci_high))


def test_binary_metrics_by_hand() -> None:
    pred = np.array([1, 1, 0, 0, np.nan, 1], dtype=float)
    gold = np.array([1, 0, 0, 1, 1, 1], dtype=float)
    m = {k: v.value() for k, v in binary_metrics(pred, gold).items()}
    # tp=2 (0,5), fp=1 (1), tn=1 (2), fn=2 (3, 4: no answer counts as not-yes)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert m["yes_ratio"] == pytest.approx(3 / 6)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(min_value=-5, max_value=5), min_size=1, max_size=40), st.integers(0, 99))
def test_mean_ci_lies_within_the_data_range(values: list[float], seed: int) -> None:
    est = bootstrap_ci(values, n_resamples=200, seed=seed)
    assert est.ci_low is not None and est.ci_high is not None
    assert min(values) - 1e-9 <= est.ci_low <= est.ci_high <= max(values) + 1e-9
