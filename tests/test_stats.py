"""lst.reporting.stats against printed t tables and hand computations."""

import math

import pytest

from lst.reporting.stats import paired_difference, regularized_beta, spread, t_cdf, t_quantile


@pytest.mark.parametrize(
    "p, df, table",  # two-sided 95% and 90% critical values of Student's t, as printed in statistics tables
    [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776), (0.975, 9, 2.262),
     (0.975, 29, 2.045), (0.95, 5, 2.015), (0.95, 1, 6.314)],
)  # fmt: skip
def test_t_quantile_matches_the_table(p, df, table):
    assert round(t_quantile(p, df), 3) == table
    assert t_quantile(1 - p, df) == pytest.approx(-t_quantile(p, df))
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)


def test_closed_forms():
    # df = 1 is the Cauchy distribution, df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
    assert regularized_beta(1, 1, 0.3) == pytest.approx(0.3)  # the uniform distribution
    assert regularized_beta(2, 3, 0.4) == pytest.approx(0.5248)  # 1 - sum_{j<2} C(4,j) 0.4^j 0.6^(4-j)


def test_spread_is_the_mean_and_the_sample_standard_deviation():
    three = spread([0.46, 0.47, 0.45])
    assert (three.mean, three.n) == (pytest.approx(0.46), 3)
    assert three.std == pytest.approx(0.01)  # sqrt((0.0001 + 0 + 0.0001) / 2)
    assert three.percent() == "46.0 ± 1.0 (n=3)"
    assert spread([0.4567]).percent() == "45.7" and spread([0.4567]).std is None


def test_paired_difference_by_hand():
    # per-seed differences 0.04, 0.05, 0.04: mean 0.04333, sd 0.005774, half width 4.303 x 0.005774 / sqrt(3)
    diff = paired_difference({0: 0.50, 1: 0.52, 2: 0.49}, {0: 0.46, 1: 0.47, 2: 0.45})
    assert diff.mean == pytest.approx(0.043333, abs=1e-6) and diff.n == 3
    assert (diff.low, diff.high) == (pytest.approx(0.028990, abs=2e-6), pytest.approx(0.057677, abs=2e-6))
    assert diff.distinguishable and diff.percent() == "+4.3 [+2.9, +5.8]"
    # differences +0.04 and -0.03: the interval includes 0
    mixed = paired_difference({0: 0.50, 1: 0.44, 7: 0.9}, {0: 0.46, 1: 0.47})  # seed 7 has no pair
    assert mixed.n == 2 and not mixed.distinguishable
    assert mixed.percent().endswith("(not distinguishable on 2 seeds)")
    assert paired_difference({0: 0.5}, {0: 0.4}) is None  # one seed measures no spread
