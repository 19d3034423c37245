"""Intervals and tests small enough to check by hand.

Why these: accuracy on a few hundred items has a wide interval and a Wald interval misbehaves near 0 and 1, so
accuracy (and every other rate: format compliance, degenerate outputs, decisions stated) gets a Wilson score
interval. Two models answering the same items are paired, so a difference is tested on the pairs rather than
by comparing intervals: McNemar's test for yes/no outcomes (the exact binomial test on the discordant pairs,
valid at any count), and the Wilcoxon signed-rank test for scores such as ROUGE-L (no normality assumed: ROUGE
per item is bounded and skewed), with a paired bootstrap interval of the mean difference. Judge scores are
bounded and lumpy (0-5 integers), so their mean gets a seeded percentile bootstrap.

The computations are scipy's and numpy's (``binomtest(...).proportion_ci(method="wilson")``, ``binomtest``,
``wilcoxon``, ``numpy.percentile``); this module chooses among them and shapes their results for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

#: Below this many discordant pairs McNemar's chi-square approximation is poor; use the exact binomial test.
EXACT_MCNEMAR_BELOW = 25


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    low: float | None
    high: float | None
    n: int

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion; ``n == 0`` gives an empty interval, not a fake 0."""
    if n == 0:
        return Interval(None, None, None, 0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside 0..{n}")
    ci = _st.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), n)


def bootstrap_mean(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Mean with a percentile bootstrap interval (seeded, so a report is reproducible)."""
    vals = np.asarray(values, dtype=float)
    n = len(vals)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = float(vals.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1)
    means = vals[np.random.default_rng(seed).integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), n)


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of model A and model B on the same items.

    ``a_only``: items A got right and B wrong; ``b_only``: the reverse. Only these discordant pairs carry
    information about which model is better.
    """

    n: int
    a_only: int
    b_only: int
    statistic: float | None
    p_value: float
    method: str  # "exact binomial" | "chi-square (continuity corrected)"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool], exact: bool = True) -> McNemar:
    """McNemar's test: the exact two-sided binomial test (p=0.5) on the discordant pairs; with
    ``exact=False``, the continuity-corrected chi-square from ``EXACT_MCNEMAR_BELOW`` discordant pairs up."""
    if len(a_correct) != len(b_correct):
        raise ValueError("paired test needs the same items for both models")
    a_only = sum(1 for a, b in zip(a_correct, b_correct, strict=True) if a and not b)
    b_only = sum(1 for a, b in zip(a_correct, b_correct, strict=True) if b and not a)
    discordant = a_only + b_only
    if discordant == 0:
        return McNemar(len(a_correct), 0, 0, None, 1.0, "exact binomial")
    if exact or discordant < EXACT_MCNEMAR_BELOW:
        p = _st.binomtest(a_only, discordant, 0.5, alternative="two-sided").pvalue
        return McNemar(len(a_correct), a_only, b_only, None, float(min(1.0, p)), "exact binomial")
    chi2 = (abs(a_only - b_only) - 1) ** 2 / discordant
    p = float(_st.chi2.sf(chi2, 1))
    return McNemar(len(a_correct), a_only, b_only, float(chi2), p, "chi-square (continuity corrected)")


@dataclass(frozen=True)
class PairedDifference:
    """Model B minus model A on the same items: means, the mean difference with a paired bootstrap 95%
    interval, and the Wilcoxon signed-rank test (two-sided; pairs with no difference are dropped, as
    Wilcoxon's original test does)."""

    n: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None
    low: float | None
    high: float | None
    b_higher: int
    a_higher: int
    statistic: float | None
    p_value: float | None
    method: str = "Wilcoxon signed-rank"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def wilcoxon_paired(a: Sequence[float], b: Sequence[float], seed: int = 0) -> PairedDifference:
    """Paired comparison of per-item scores (e.g. ROUGE-L) of two models; p = 1 when no pair differs and
    None when there are no pairs."""
    if len(a) != len(b):
        raise ValueError("paired test needs the same items for both models")
    if not a:
        return PairedDifference(0, None, None, None, None, None, 0, 0, None, None)
    xa, xb = [float(v) for v in a], [float(v) for v in b]
    diffs = [y - x for x, y in zip(xa, xb, strict=True)]
    ci = bootstrap_mean(diffs, seed=seed)
    b_higher = sum(1 for d in diffs if d > 0)
    a_higher = sum(1 for d in diffs if d < 0)
    if b_higher + a_higher == 0:
        statistic, p = None, 1.0
    else:
        res = _st.wilcoxon(xb, xa, zero_method="wilcox", alternative="two-sided")
        statistic, p = float(res.statistic), float(res.pvalue)
    n = len(diffs)
    return PairedDifference(
        n, sum(xa) / n, sum(xb) / n, ci.estimate, ci.low, ci.high, b_higher, a_higher, statistic, p
    )


def binomial_above(successes: int, n: int, rate: float) -> float | None:
    """One-sided exact binomial p-value that the true proportion exceeds ``rate`` (e.g. accuracy above the
    majority-class rate); None for no items."""
    if n == 0:
        return None
    return float(_st.binomtest(successes, n, rate, alternative="greater").pvalue)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100), linearly interpolated between ranks; None for no values."""
    return float(np.percentile(values, q)) if len(values) else None
