"""Statistics for the leaderboard: intervals, paired tests and multiple-comparison correction.

* :func:`t_interval` — mean, standard deviation and Student-t confidence interval over seeds.
* :func:`paired_bootstrap` — the accuracy difference between two variants, with a percentile
  interval and a two-sided p-value, from a two-level bootstrap: seeds are resampled within each
  variant and test examples are resampled *jointly* for both (the pairing), so the interval carries
  both the run-to-run and the test-set variation.
* :func:`mcnemar_exact` — the exact McNemar test on one pair of prediction vectors.
* :func:`holm` — Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = ["BootstrapResult", "Interval", "holm", "mcnemar_exact", "paired_bootstrap", "t_interval"]


@dataclass(frozen=True)
class Interval:
    mean: float
    std: float
    lower: float
    upper: float
    n: int


def t_interval(values: list[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Student-t interval for the mean. With one value the spread is unknown: std and the
    bounds are NaN rather than a misleading zero-width interval."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, n)


@dataclass(frozen=True)
class BootstrapResult:
    delta: float  # observed mean accuracy of A minus that of B
    lower: float
    upper: float
    p_value: float


def paired_bootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Accuracy of A minus B, where ``correct_x`` is ``(seeds, examples)`` of 0/1 correctness on
    the same test examples. The p-value is twice the smaller tail of the bootstrap distribution
    on either side of zero (capped at 1)."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError("both variants must be scored on the same test examples")
    delta = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    n, ka, kb = a.shape[1], a.shape[0], b.shape[0]
    deltas = np.empty(n_boot)
    # Vectorised in chunks; resampling runs with replacement = multinomial counts as weights.
    for start in range(0, n_boot, 200):
        size = min(200, n_boot - start)
        runs_a = rng.multinomial(ka, np.full(ka, 1 / ka), size=size) @ a / ka  # (size, n)
        runs_b = rng.multinomial(kb, np.full(kb, 1 / kb), size=size) @ b / kb
        examples = rng.integers(0, n, (size, n))  # the same examples for A and B: paired
        deltas[start : start + size] = np.take_along_axis(runs_a - runs_b, examples, 1).mean(1)
    alpha = 1 - confidence
    lower, upper = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    # Add one to both counts so a p-value is never exactly 0 from finitely many resamples.
    below = (np.sum(deltas <= 0) + 1) / (n_boot + 1)
    above = (np.sum(deltas >= 0) + 1) / (n_boot + 1)
    return BootstrapResult(
        delta, float(lower), float(upper), float(min(1.0, 2 * min(below, above)))
    )


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order. NaNs are left out of the family."""
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    indexed.sort()
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))  # step-down, kept monotone
        adjusted[i] = running
    return adjusted
