"""Metrics with bootstrap confidence intervals, and paired differences between runs.

Why ratios of sums: every metric the harness reports (accuracy, predicted-yes ratio, precision,
recall, F1, accuracy within a group such as counter-prior items, mean IIG) is
`sum(num_i) / sum(den_i)` over samples i for suitable per-sample columns (F1 = 2TP / (2TP + FP +
FN) is one too). A bootstrap resample is then a row of multinomial counts `w` over the samples
and the resampled metric is `(w @ num) / (w @ den)`, so one (B, n) count matrix and two
matrix-vector products give all B resamples at once, for any metric, without Python loops.

Differences that share items (acc(image) - acc(blind) on the same questions, checkpoint A vs
checkpoint B on the same items) reuse the SAME count matrix for both sides: the paired bootstrap.
Intervals are percentile intervals; resamples whose denominator is zero (no predicted "yes" in a
resample, say) are dropped. Everything is seeded, so a results file is reproducible bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point value with its bootstrap interval; `None` where undefined (n = 0, 0/0)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class RatioMetric:
    """Per-sample numerator and denominator columns of a `sum(num) / sum(den)` metric."""

    num: FloatArray
    den: FloatArray

    @classmethod
    def mean(cls, values: Sequence[float] | FloatArray) -> RatioMetric:
        arr = np.asarray(values, dtype=np.float64)
        return cls(arr, np.ones_like(arr))

    def value(self) -> float | None:
        den = float(self.den.sum())
        return float(self.num.sum()) / den if den > 0 else None

    def resampled(self, counts: FloatArray) -> FloatArray:
        """The metric under each row of `counts` (B, n); NaN where the denominator is 0."""
        den = counts @ self.den
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (counts @ self.num) / np.where(den > 0, den, 1.0), np.nan)


def resample_counts(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> FloatArray:
    """(n_resamples, n) multinomial counts: row b says how often sample i is drawn in resample b."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((n_resamples, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def percentile_interval(stats: FloatArray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of resampled statistics, ignoring NaN (undefined) resamples."""
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return None, None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def ratio_ci(
    metric: RatioMetric,
    counts: FloatArray,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Estimate:
    """Point value and percentile CI of a ratio metric under the given resample counts."""
    n = int(metric.num.shape[0])
    value = metric.value()
    if value is None or n == 0:
        return Estimate(value, None, None, n)
    low, high = percentile_interval(metric.resampled(counts), confidence)
    return Estimate(value, low, high, n)


def difference_ci(
    a: RatioMetric,
    b: RatioMetric,
    counts: FloatArray,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Estimate:
    """`a - b` for two metrics over the SAME samples (aligned rows), paired through `counts`."""
    if a.num.shape != b.num.shape:
        raise ValueError(f"paired metrics need aligned samples, got {a.num.shape} vs {b.num.shape}")
    n = int(a.num.shape[0])
    va, vb = a.value(), b.value()
    if va is None or vb is None or n == 0:
        return Estimate(None, None, None, n)
    low, high = percentile_interval(a.resampled(counts) - b.resampled(counts), confidence)
    return Estimate(va - vb, low, high, n)


def bootstrap_ci(
    values: Sequence[float] | FloatArray,
    *,
    statistic: Callable[[FloatArray], FloatArray] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """Bootstrap CI of a statistic over per-sample values (default: the mean).

    `statistic` maps an array of shape (..., n) or (..., n, k) to shape (...): it is called once
    on the data and once on the (B, n[, k]) stack of resamples (vectorised, no Python loop).
    """
    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.shape[0]) if arr.ndim else 0
    if statistic is None:
        metric = RatioMetric.mean(arr)
        return ratio_ci(metric, resample_counts(n, n_resamples, seed), confidence)
    if n == 0:
        return Estimate(None, None, None, 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    point = float(statistic(arr))
    low, high = percentile_interval(np.asarray(statistic(arr[idx]), dtype=np.float64), confidence)
    return Estimate(point, low, high, n)


@dataclass(frozen=True)
class PairedDifference:
    """mean(a) - mean(b) on the same items with its paired-bootstrap CI and a two-sided p-value."""

    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int


def paired_bootstrap(
    a: Sequence[float] | FloatArray,
    b: Sequence[float] | FloatArray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> PairedDifference:
    """Difference of two runs' per-sample values on the same items (aligned: a[i], b[i] = item i).

    The p-value is the bootstrap's two-sided one: twice the smaller share of resampled
    differences on either side of zero (clipped to 1), with +1 smoothing so it is never 0.
    """
    arr_a = np.asarray(a, dtype=np.float64)
    arr_b = np.asarray(b, dtype=np.float64)
    if arr_a.shape != arr_b.shape or arr_a.ndim != 1:
        raise ValueError(
            f"paired_bootstrap needs two aligned 1-D arrays, got {arr_a.shape} and {arr_b.shape}"
        )
    n = int(arr_a.shape[0])
    if n == 0:
        return PairedDifference(None, None, None, None, 0)
    counts = resample_counts(n, n_resamples, seed)
    diffs = RatioMetric.mean(arr_a - arr_b).resampled(counts)
    low, high = percentile_interval(diffs, confidence)
    below = (np.count_nonzero(diffs <= 0) + 1) / (n_resamples + 1)
    above = (np.count_nonzero(diffs >= 0) + 1) / (n_resamples + 1)
    p = min(1.0, 2.0 * min(below, above))
    return PairedDifference(float(np.mean(arr_a - arr_b)), low, high, p, n)


def binary_metrics(pred_yes: FloatArray, gold_yes: FloatArray) -> dict[str, RatioMetric]:
    """POPE-style yes/no metrics as ratio metrics; the yes-ratio counts PREDICTED yes.

    `pred_yes` is 1 where the model answered yes, 0 for no, NaN where it gave neither (counted
    as wrong and as not-yes, never dropped, so n stays the number of questions).
    """
    pred = np.nan_to_num(np.asarray(pred_yes, dtype=np.float64), nan=-1.0)
    gold = np.asarray(gold_yes, dtype=np.float64)
    yes, no = (pred == 1.0).astype(np.float64), (pred == 0.0).astype(np.float64)
    tp, fp = yes * gold, yes * (1.0 - gold)
    fn = (1.0 - yes) * gold
    ones = np.ones_like(gold)
    return {
        "accuracy": RatioMetric(tp + no * (1.0 - gold), ones),
        "precision": RatioMetric(tp, yes),
        "recall": RatioMetric(tp, gold),
        "f1": RatioMetric(2.0 * tp, 2.0 * tp + fp + fn),
        "yes_ratio": RatioMetric(yes, ones),
    }


# --- over seeds: Student t without scipy (not on the GPU image); tests check it against scipy ---


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    import math

    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
    front = math.exp(ln + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t, by bisection on the two-sided tail."""
    low, high = 0.0, 1e6
    tail = 2.0 * (1.0 - p)
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_sf_two_sided(mid, df) > tail:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


@dataclass(frozen=True)
class SeedInterval:
    """Mean over seeds with a t interval (n - 1 df) and the one-sample t-test p of mean = 0;
    interval and p are None with fewer than two seeds; p is None (no test) when every seed gave
    the same value."""

    mean: float
    low: float | None
    high: float | None
    p_value: float | None
    n: int


def across_seeds(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> SeedInterval:
    """Seeds as the unit of inference: a t interval over per-seed values."""
    import math

    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.size)
    mean = float(arr.mean()) if n else float("nan")
    if n < 2:
        return SeedInterval(mean, None, None, None, n)
    sd = float(arr.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        # identical per-seed values: the interval is the point, but there is no spread to test
        # against (scipy's t-test gives NaN), so no p: seeds that all repeat one measurement
        # (e.g. one shared base) are not independent evidence and must never read as "shown"
        return SeedInterval(mean, mean, mean, None, n)
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * se
    return SeedInterval(mean, mean - half, mean + half, t_sf_two_sided(mean / se, n - 1), n)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values over a list of tests (None: not a test, stays None)."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    order = sorted(idx, key=lambda i: float(p_values[i]))  # type: ignore[arg-type]
    m = len(order)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))  # type: ignore[arg-type]
        out[i] = running
    return out
