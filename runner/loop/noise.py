"""The statistics of a promotion: the margin that holds a change with no effect to a target
false-promotion rate, the rate a margin implies, and the z-score of a gain.

Pure functions of numbers (no lab, no files), so bench/aa_test.py and the runner share them.
"""
from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

EVIDENCE_Z = 3.0     # a promotion whose gain is below this many σ of the difference is single-run evidence


def diff_sd(sigma: float, n_base: int, n_cand: int = 1) -> float:
    """The stdev of (mean of n_cand runs) - (mean of n_base runs) when every run has stdev σ."""
    return sigma * math.sqrt(1 / max(1, n_cand) + 1 / max(1, n_base))


def t_cdf(x: float, df: int | None) -> float:
    """P(T <= x) for Student's t with df degrees of freedom (df None: the standard normal)."""
    if df is None:
        return NormalDist().cdf(x)
    if x < 0:
        return 1.0 - t_cdf(-x, df)
    # substitute t = tan(u): the integrand stays bounded up to u = pi/2; Simpson's rule on [0, atan x]
    top, n = math.atan(x), 400
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def f(u: float) -> float:
        c = math.cos(u)
        return math.exp(log_c - (df + 1) / 2 * math.log1p(math.tan(u) ** 2 / df)) / (c * c)
    h = top / n
    total = f(0.0) + f(top) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
    return min(1.0, 0.5 + total * h / 3)


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int | None) -> float:
    """The x with t_cdf(x, df) = p (bisection; p in (0.5, 1))."""
    if df is None:
        return NormalDist().inv_cdf(p)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def derived_margin(sigma: float, rate: float, n_base: int, n_cand: int = 1, df: int | None = None) -> float:
    """The margin that a change with no effect clears with probability `rate`.

    The candidate is the mean of n_cand runs and its base the mean of n_base runs, each run with
    seed stdev σ, so their difference has stdev σ·√(1/n_cand + 1/n_base). σ is estimated from
    df + 1 runs, so the difference divided by that estimate follows Student's t with df degrees of
    freedom, and a one-sided test at level `rate` needs

        margin = t(1 - rate, df) · σ · √(1/n_cand + 1/n_base)

    (df None: σ is known exactly and t(1 - rate) is the normal quantile, 1.6449 for 5%).
    E.g. σ 0.026, rate 0.05, base of 4 seeds that also gave σ (df 3), one candidate run:
    2.3534 · 0.026 · √1.25 = 0.0684.
    """
    if not 0 < rate < 0.5:
        raise ValueError(f"false-promotion rate {rate} must be in (0, 0.5)")
    return t_quantile(1 - rate, df) * diff_sd(sigma, n_base, n_cand)


def implied_rate(margin: float, sigma: float, n_base: int, n_cand: int = 1, df: int | None = None) -> float:
    """The probability that a change with no effect clears `margin` (the inverse of derived_margin)."""
    sd = diff_sd(sigma, n_base, n_cand)
    if sd <= 0:
        return 0.0 if margin >= 0 else 1.0
    return 1.0 - t_cdf(margin / sd, df)


def z_score(gain: float, sigma: float | None, n_base: int, n_cand: int = 1) -> float | None:
    """A gain (positive = better) in stdevs of the difference; None when σ is unknown, ±inf
    when the seeds measured no noise at all (a deterministic target: one run is exact)."""
    if sigma is None:
        return None
    if sigma == 0:
        return math.copysign(math.inf, gain) if gain else 0.0
    return gain / diff_sd(sigma, n_base, n_cand)
