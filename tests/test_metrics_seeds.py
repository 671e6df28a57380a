"""Seeds as the unit of inference: the t interval over seeds and Holm's correction, checked
against scipy (the reference; not a runtime dependency, so the package carries its own t)."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_bench.metrics import across_seeds, holm, t_quantile, t_sf_two_sided

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 12, 30, 100])
def test_t_distribution_matches_scipy(df: int) -> None:
    for t in (0.0, 0.3, 1.0, 2.2, 4.5, 12.0):
        assert t_sf_two_sided(t, df) == pytest.approx(2 * stats.t.sf(t, df), abs=1e-10)
    for p in (0.9, 0.975, 0.995):
        assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_across_seeds_is_the_one_sample_t(seed: int) -> None:
    values = np.random.default_rng(seed).normal(0.02, 0.05, size=3 + seed)
    est = across_seeds(values)
    ref = stats.ttest_1samp(values, 0.0)
    low, high = stats.t.interval(0.95, len(values) - 1, values.mean(), stats.sem(values))
    assert est.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert (est.low, est.high) == (pytest.approx(low, rel=1e-8), pytest.approx(high, rel=1e-8))


def test_one_seed_has_no_interval_and_identical_seeds_a_point() -> None:
    one = across_seeds([0.1])
    assert one.low is None and one.high is None and one.p_value is None
    same = across_seeds([0.1, 0.1, 0.1])
    # no spread: the interval is the point and there is no test (a t statistic of x / 0), so
    # seeds that repeat one measurement can never make a finding "shown"
    assert same.low == same.high == pytest.approx(0.1) and same.p_value is None


def test_holm_matches_the_textbook_example() -> None:
    # step-down: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(.., 2 x 0.03), max(.., 1 x 0.04)
    assert holm([0.01, 0.04, 0.03, None]) == [
        pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None,
    ]  # fmt: skip
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # adjusted p-values never fall below an earlier one
