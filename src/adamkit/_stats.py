"""The one interval statistic adamkit reports: a percentile bootstrap of a mean over paired measurements.

The benchmark's judge (:mod:`adamkit.bench.judge`) applies it to paired seeds' differences, ``adamkit speed``
(:mod:`adamkit.bench.speed`) to the logarithms of step-time ratios taken within one repetition (so its
interval is that of a geometric mean ratio). A fixed generator seed makes the same data give the same interval.
"""
from __future__ import annotations

import math

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
