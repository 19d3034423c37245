"""Intervals and tests against values worked out by hand / from the literature."""

import math

import pytest

from evaluator.stats import (
    binomial_above,
    bootstrap_mean,
    mcnemar,
    percentile,
    wilcoxon_paired,
    wilson_interval,
)


def test_wilson_known_values():
    iv = wilson_interval(8, 10)
    assert iv.estimate == 0.8
    assert iv.low == pytest.approx(0.4902, abs=1e-4)  # Newcombe (1998), table I style value
    assert iv.high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_edges_stay_inside_0_1_and_are_not_degenerate():
    zero = wilson_interval(0, 10)
    assert zero.low == 0.0 and zero.high == pytest.approx(0.2775, abs=1e-4)
    full = wilson_interval(10, 10)
    assert full.high == 1.0 and full.low == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0).estimate is None
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_for_few_discordant_pairs():
    # 1 item right only for A, 9 only for B, 5 right for both: exact two-sided binomial p = 2 * 11 / 1024.
    a = [True] * 1 + [False] * 9 + [True] * 5
    b = [False] * 1 + [True] * 9 + [True] * 5
    t = mcnemar(a, b)
    assert (t.a_only, t.b_only, t.n) == (1, 9, 15)
    assert t.method == "exact binomial"
    assert t.p_value == pytest.approx(22 / 1024)


def test_mcnemar_is_exact_by_default_for_many_pairs_too():
    a = [True] * 10 + [False] * 30
    b = [False] * 10 + [True] * 30
    t = mcnemar(a, b)
    assert t.method == "exact binomial" and (t.a_only, t.b_only) == (10, 30)
    # Two-sided exact binomial on 40 discordant pairs: 2 * P(X <= 10), X ~ Bin(40, 1/2).
    assert t.p_value == pytest.approx(2 * sum(math.comb(40, k) for k in range(11)) / 2**40)


def test_mcnemar_chi_square_with_continuity_correction_for_many_pairs():
    a = [True] * 10 + [False] * 30
    b = [False] * 10 + [True] * 30
    t = mcnemar(a, b, exact=False)
    assert t.method.startswith("chi-square")
    assert t.statistic == pytest.approx(361 / 40)
    assert t.p_value == pytest.approx(math.erfc(math.sqrt(361 / 40 / 2)), rel=1e-9)


def test_mcnemar_no_discordant_pairs_and_unpaired_input():
    assert mcnemar([True, False], [True, False]).p_value == 1.0
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])


def test_bootstrap_mean_is_seeded_and_brackets_the_mean():
    vals = [0, 1, 2, 3, 4, 5, 5, 4, 3, 3]
    a, b = bootstrap_mean(vals, seed=1), bootstrap_mean(vals, seed=1)
    assert a == b
    assert a.estimate == pytest.approx(3.0)
    assert a.low < 3.0 < a.high and 1.5 < a.low and a.high < 4.5
    assert bootstrap_mean([]).estimate is None


def test_percentile():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5
    assert percentile([], 50) is None


def test_wilcoxon_paired_against_the_textbook_example():
    # Cushny & Peebles differences as in scipy.stats.wilcoxon's documentation: W = 24, exact two-sided
    # p = 0.04126 (R: wilcox.test(d) gives V = 96, the other tail's sum; p-value the same).
    d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    t = wilcoxon_paired([0.0] * len(d), d)
    assert t.statistic == 24 and t.p_value == pytest.approx(0.041259765625)
    assert (t.n, t.b_higher, t.a_higher) == (15, 13, 2)
    assert t.mean_diff == pytest.approx(sum(d) / len(d)) and t.low < t.mean_diff < t.high
    assert t.mean_b - t.mean_a == pytest.approx(t.mean_diff)


def test_wilcoxon_paired_edges():
    same = wilcoxon_paired([0.2, 0.4], [0.2, 0.4])
    assert same.p_value == 1.0 and same.statistic is None and same.mean_diff == 0.0
    assert wilcoxon_paired([], []).p_value is None
    with pytest.raises(ValueError):
        wilcoxon_paired([0.1], [0.1, 0.2])


def test_binomial_above_a_rate():
    # P(X >= 8), X ~ Bin(10, 1/2) = (45 + 10 + 1) / 1024
    assert binomial_above(8, 10, 0.5) == pytest.approx(56 / 1024)
    assert binomial_above(0, 0, 0.5) is None
