"""The statistics adamkit reports, in plain numpy and the standard library (no scipy needed at run time).

- :func:`paired_bootstrap`: a percentile bootstrap of a mean over paired measurements. ``adamkit speed``
  (:mod:`adamkit.bench.speed`) applies it to the logarithms of step-time ratios taken within one repetition
  (so its interval is that of a geometric mean ratio). A fixed generator seed makes the same data give the
  same interval.
- The benchmark's judge (:mod:`adamkit.bench.judge`) uses the paired tests on per-seed differences
  ``d_1 … d_n``, with mean ``d̄``, standard deviation ``s`` and standard error ``se = s / √n``:

  * :func:`t_interval`: ``d̄ ± t_{1−α/2, n−1} · se`` (Student's t, ``n − 1`` degrees of freedom);
  * :func:`beyond_band`: the two-sided p of "the mean lies beyond the band ``±δ`` on the side of ``d̄``",
    ``2 · P(T_{n−1} ≥ (|d̄| − δ) / se)`` (capped at 1); with ``δ = 0`` it is the paired t-test's p;
  * :func:`tost`: Schuirmann's two one-sided tests of equivalence within ``±δ``,
    ``max(P(T ≥ (d̄ + δ)/se), P(T ≤ (d̄ − δ)/se))``: below α exactly when the ``1 − 2α`` t interval lies
    inside ``(−δ, δ)``;
  * :func:`wilcoxon`: the exact two-sided Wilcoxon signed-rank p (zero differences dropped, tied magnitudes
    given their average rank; the exact permutation distribution of the signed-rank sum over the 2^n sign
    patterns, so ties need no normal approximation);
  * :func:`holm`: Holm's step-down adjustment of m p-values, ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))``
    over the p-values in ascending order (it controls the family-wise error rate at α under any dependence).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95


def paired_bootstrap(d: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                     level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of paired differences ``d``: percentile bootstrap over the pairs."""
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    return float(d.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


# ------------------------------------------------------------------------------------------ Student's t


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast below the mean only: use the symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return front * h / a


def t_cdf(x: float, df: float) -> float:
    """P(T ≤ x) for Student's t with ``df`` > 0 degrees of freedom."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df!r}")
    if math.isnan(x):
        return math.nan
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + x * x))  # P(T ≥ |x|)
    return 1.0 - tail if x >= 0 else tail


def t_sf(x: float, df: float) -> float:
    """P(T ≥ x), computed from the tail directly (no cancellation for large x)."""
    return t_cdf(-x, df)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p!r}")
    if p == 0.5:
        return 0.0
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def _moments(d) -> tuple[np.ndarray, float, float]:
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or not np.all(np.isfinite(d)):
        raise ValueError("d must be a one-dimensional array of finite differences")
    if d.size < 2:
        return d, math.nan, math.nan
    return d, float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def t_interval(d, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the paired t interval of the mean of ``d`` (nan bounds when n < 2)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    d, mean, se = _moments(d)
    if d.size < 2:
        return (float(d.mean()) if d.size else math.nan), math.nan, math.nan
    half = t_quantile(0.5 + level / 2.0, d.size - 1) * se
    return mean, mean - half, mean + half


def _check_band(band: float) -> float:
    if isinstance(band, bool) or not isinstance(band, (int, float)) or not math.isfinite(band) or band < 0:
        raise ValueError(f"band must be a finite number >= 0, got {band!r}")
    return float(band)


def beyond_band(d, band: float = 0.0) -> float:
    """Two-sided p that the mean of ``d`` lies beyond ``±band`` on the side of the observed mean (nan: n < 2)."""
    band = _check_band(band)
    d, mean, se = _moments(d)
    if d.size < 2:
        return math.nan
    excess = abs(mean) - band
    if se == 0.0:
        return 0.0 if excess > 0 else 1.0
    return min(1.0, 2.0 * t_sf(excess / se, d.size - 1))


def tost(d, band: float) -> float:
    """The p of Schuirmann's two one-sided tests that the mean of ``d`` lies within ``(−band, band)``
    (nan: n < 2; 1 for a zero band, which nothing is equivalent within)."""
    band = _check_band(band)
    d, mean, se = _moments(d)
    if d.size < 2:
        return math.nan
    if band == 0.0:
        return 1.0
    if se == 0.0:
        return 0.0 if abs(mean) < band else 1.0
    df = d.size - 1
    return max(t_sf((mean + band) / se, df), t_cdf((mean - band) / se, df))


# ------------------------------------------------------------------------------------------ ranks


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=float)
    xs = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def wilcoxon(d) -> float:
    """The exact two-sided Wilcoxon signed-rank p of ``d`` against 0 (1.0 when every difference is 0)."""
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or not np.all(np.isfinite(d)):
        raise ValueError("d must be a one-dimensional array of finite differences")
    d = d[d != 0.0]
    if d.size == 0:
        return 1.0
    doubled = np.rint(2.0 * _average_ranks(np.abs(d))).astype(int)  # average ranks are multiples of 1/2
    observed = int(doubled[d > 0].sum())
    dist = np.zeros(int(doubled.sum()) + 1)
    dist[0] = 1.0
    for r in doubled:  # each rank enters the positive sum with probability 1/2 (r >= 2: a doubled rank)
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:dist.size - r]
        dist = 0.5 * dist + 0.5 * shifted
    low, high = float(dist[:observed + 1].sum()), float(dist[observed:].sum())
    return min(1.0, 2.0 * min(low, high))


def holm(p: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given; nan entries stay nan and are not counted in m."""
    p = [float(x) for x in p]
    idx = sorted((i for i, x in enumerate(p) if not math.isnan(x)), key=lambda i: p[i])
    out = [math.nan] * len(p)
    m, running = len(idx), 0.0
    for k, i in enumerate(idx):
        if not 0.0 <= p[i] <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p[i]!r}")
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out
