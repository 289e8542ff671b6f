"""The judge's statistics (adamkit._stats): Student's t, the Wilcoxon signed-rank test, TOST and Holm, checked
against hand computations and, where it is installed, scipy."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from adamkit import _stats as S


def test_t_distribution_matches_known_values():
    # t_{0.975} of 1, 4 and 9 degrees of freedom (textbook tables), and the symmetric cdf
    assert S.t_quantile(0.975, 1) == pytest.approx(12.706204736, rel=1e-9)
    assert S.t_quantile(0.975, 4) == pytest.approx(2.776445105, rel=1e-9)
    assert S.t_quantile(0.975, 9) == pytest.approx(2.262157163, rel=1e-9)
    assert S.t_quantile(0.025, 9) == pytest.approx(-2.262157163, rel=1e-9)
    assert S.t_cdf(0.0, 3) == 0.5 and S.t_cdf(math.inf, 3) == 1.0 and S.t_cdf(-math.inf, 3) == 0.0
    # 1 degree of freedom is the Cauchy distribution: cdf = 1/2 + atan(x)/π
    for x in (-3.0, -0.4, 0.7, 5.0):
        assert S.t_cdf(x, 1) == pytest.approx(0.5 + math.atan(x) / math.pi, abs=1e-13)
    with pytest.raises(ValueError, match="p must lie in"):
        S.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df must be > 0"):
        S.t_cdf(1.0, 0)


def test_against_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for df in (1, 2, 5, 9, 29, 300):
        for x in (-7.0, -1.3, 0.2, 2.5, 40.0):
            assert S.t_cdf(x, df) == pytest.approx(stats.t.cdf(x, df), abs=1e-12)
        for p in (0.001, 0.05, 0.5, 0.95, 0.975):
            assert S.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
    for n in (5, 10, 12, 25):
        d = rng.normal(0.4, 1.0, n)
        assert S.wilcoxon(d) == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, abs=1e-12)
        ci = stats.ttest_1samp(d, 0.0).confidence_interval()
        mean, low, high = S.t_interval(d)
        assert (mean, low, high) == pytest.approx((d.mean(), ci.low, ci.high), abs=1e-10)
        assert S.beyond_band(d) == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, abs=1e-12)


def test_t_interval_by_hand():
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, s = √2.5, se = √0.5
    mean, low, high = S.t_interval(d)
    half = 2.776445105 * math.sqrt(0.5)
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half), rel=1e-9)
    assert math.isnan(S.t_interval([2.0])[1])  # one pair: no interval
    with pytest.raises(ValueError, match="finite"):
        S.t_interval([1.0, math.inf])


def test_wilcoxon_exact_by_enumeration_with_ties_and_zeros():
    d = np.array([1.0, 1.0, 2.0, -2.0, 3.0, 0.0, -0.5])
    nz = d[d != 0]
    # average ranks of |d|: 0.5 -> 1, 1,1 -> 2.5, 2,2 -> 4.5, 3 -> 6
    ranks = {0.5: 1.0, 1.0: 2.5, 2.0: 4.5, 3.0: 6.0}
    r = [ranks[abs(x)] for x in nz]
    observed = sum(ri for ri, x in zip(r, nz) if x > 0)
    sums = [sum(ri for ri, s in zip(r, signs) if s) for signs in itertools.product((0, 1), repeat=len(r))]
    low = sum(s <= observed for s in sums) / len(sums)
    high = sum(s >= observed for s in sums) / len(sums)
    assert S.wilcoxon(d) == pytest.approx(min(1.0, 2 * min(low, high)), abs=1e-15)
    # all five differences positive: the smallest two-sided p of n = 5 is 2/32; of n = 10, 2/1024
    assert S.wilcoxon(np.arange(1.0, 6.0)) == pytest.approx(0.0625)
    assert S.wilcoxon(np.arange(1.0, 11.0)) == pytest.approx(2 / 1024)
    assert S.wilcoxon(np.zeros(4)) == 1.0


def test_tost_and_the_band_test():
    rng = np.random.default_rng(0)
    d = 0.001 + rng.normal(0, 0.002, 20)
    # TOST p < 0.05 exactly when the 90 % t interval lies inside (−band, band)
    _, low90, high90 = S.t_interval(d, level=0.90)
    for band in (0.5 * max(abs(low90), abs(high90)), 1.01 * max(abs(low90), abs(high90)),
                 0.99 * max(abs(low90), abs(high90))):
        assert (S.tost(d, band) < 0.05) == (-band < low90 and high90 < band)
    assert S.tost(d, 0.0) == 1.0
    # beyond the band: p < 0.05 exactly when the 95 % interval excludes the band on one side
    _, low, high = S.t_interval(d)
    assert (S.beyond_band(d, 0.0) < 0.05) == (low > 0 or high < 0)
    assert S.beyond_band(d, 0.0) < S.beyond_band(d, 0.0005) < S.beyond_band(d, 0.002)
    e = 0.01 + rng.normal(0, 0.002, 12)
    _, low_e, _ = S.t_interval(e)
    assert low_e > 0 and S.beyond_band(e, low_e * 0.99) < 0.05 < S.beyond_band(e, low_e * 1.01)
    # a constant difference: decided without sampling error
    assert S.tost(np.full(5, 0.001), 0.002) == 0.0 and S.tost(np.full(5, 0.003), 0.002) == 1.0
    assert S.beyond_band(np.full(5, 0.003), 0.002) == 0.0 and S.beyond_band(np.full(5, 0.001), 0.002) == 1.0
    with pytest.raises(ValueError, match="band must be a finite number >= 0"):
        S.tost(d, -0.1)


def test_holm_against_a_hand_computation():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone: 0.06)
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # nan entries are not tests: m counts the others
    out = S.holm([0.02, math.nan, 0.04])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert S.holm([0.6, 0.5]) == [1.0, 1.0] and S.holm([]) == []
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        S.holm([1.5])


def test_bootstrap_is_unchanged():
    d = np.array([0.1, 0.2, 0.15, 0.12, 0.3])
    assert S.paired_bootstrap(d) == S.paired_bootstrap(d)
    mean, low, high = S.paired_bootstrap(d)
    assert low < mean < high and mean == pytest.approx(d.mean())
