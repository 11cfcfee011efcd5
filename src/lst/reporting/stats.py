"""Spread over seeds and paired differences between methods, for tables that carry their uncertainty.

A method's figure over n seeds is its mean with the sample standard deviation (n - 1). Two methods run on the
same seeds are compared by their per-seed differences: the mean difference with a two-sided t-interval over
the n seeds (Student's t with n - 1 degrees of freedom). An interval that includes 0 says the seeds cannot
tell the methods apart. The t quantile is computed here (the regularised incomplete beta function by its
continued fraction), so that the report needs no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def _incomplete_beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return fraction


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), for 0 <= x <= 1."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _incomplete_beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _incomplete_beta_fraction(b, a, 1 - x) / b


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"t quantile of p={p} with {df} degrees of freedom")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Spread:
    """A figure over ``n`` seeds: mean and sample standard deviation (None for one seed)."""

    mean: float
    std: float | None
    n: int

    def percent(self) -> str:
        """``46.0 ± 1.2 (n=3)`` in percent with one decimal; one seed: ``46.0``."""
        if self.std is None:
            return f"{100 * self.mean:.1f}"
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f} (n={self.n})"


def spread(values: Iterable[float]) -> Spread:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return Spread(mean, None, 1)
    return Spread(mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), len(values))


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-seed difference of a method against a reference, with its t-interval over ``n`` seeds."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def percent(self) -> str:
        """``+1.8 [-0.4, +4.0]`` in percent points, marked where the interval includes 0."""
        text = f"{100 * self.mean:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"
        return text if self.distinguishable else f"{text} (not distinguishable on {self.n} seeds)"


def paired_difference(
    values: Mapping[int, float], reference: Mapping[int, float], confidence: float = 0.95
) -> PairedDifference | None:
    """``values - reference`` over the seeds both have: mean and two-sided t-interval; None under 2 seeds."""
    seeds = sorted(set(values) & set(reference))
    if len(seeds) < 2:
        return None
    differences = spread(values[s] - reference[s] for s in seeds)
    half = t_quantile(0.5 + confidence / 2, len(seeds) - 1) * differences.std / math.sqrt(len(seeds))
    return PairedDifference(differences.mean, differences.mean - half, differences.mean + half, len(seeds), confidence)
