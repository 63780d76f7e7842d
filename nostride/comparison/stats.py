"""Statistics of a study: mean +- standard deviation over seeds and paired differences with a 95 % t interval.

Seeds pair runs: seed k of model A and seed k of model B saw the same data order and the same
validation split, so their difference removes the variation the seed causes in both. The interval is
``mean(d) +- t(0.975, n-1) * sd(d) / sqrt(n)`` over the n paired differences ``d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Summary", "PairedDifference", "summarize", "paired_difference", "t_quantile_975"]

# two-sided 95 % quantiles of Student's t, df = 1..30 (then the normal's 1.96 is within 2 %)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df`` >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.959964 + 2.37 / df  # close to the exact value beyond 30 (error < 0.002)


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (n - 1) of ``n`` values; std is NaN for one value."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 2) -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1 or math.isnan(self.std):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize(values: Sequence[float]) -> Summary:
    """Mean +- std of the finite ``values`` (NaN ones, e.g. a failed run's, are left out)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
    return Summary(mean, std, n)


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over paired seeds: mean, 95 % interval [low, high], number of pairs.

    ``significant`` is True when the interval excludes 0 (needs at least 2 pairs with some spread:
    equal differences on every seed, common when a small test split moves the metric in coarse
    steps, give a zero-width interval that says nothing about the seed-to-seed noise).
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def no_spread(self) -> bool:
        """At least 2 pairs, all with the same non-zero difference: the t-interval is degenerate."""
        return self.n >= 2 and self.low == self.high and self.mean != 0

    @property
    def significant(self) -> bool:
        return self.n >= 2 and not self.no_spread and (self.low > 0 or self.high < 0)

    def verdict(self, better: str = "higher") -> str:
        """"better", "worse" or "no significant difference" for ``a`` against ``b``."""
        if self.no_spread:
            return "same difference on every seed: no interval, add seeds"
        if not self.significant:
            return "no significant difference" if self.n >= 2 else "one seed: no interval"
        up = self.mean > 0
        return "better" if up == (better == "higher") else "worse"

    def format(self, digits: int = 2) -> str:
        if self.n == 0:
            return "n/a"
        if self.n < 2:
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_difference(a: dict[int, float], b: dict[int, float]) -> PairedDifference:
    """Difference ``a[seed] - b[seed]`` over the seeds both have (finite values only)."""
    seeds = sorted(s for s in set(a) & set(b)
                   if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s]))
    d = [float(a[s]) - float(b[s]) for s in seeds]
    n = len(d)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = sum(d) / n
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n)
