"""Paired statistics of the comparisons: exact tests and the bootstrap interval, on hand-computed cases."""

import pytest

from dnas.report.stats import bootstrap_interval, kendall_p, kendall_tau, paired, sign_flip_p, wilcoxon_p


def test_sign_flip_p_by_hand():
    # 8 sign vectors of (1, 1, 1): only all-plus and all-minus reach |sum| = 3
    assert sign_flip_p([1.0, 1.0, 1.0]) == pytest.approx(2 / 8)
    # (3, -1): |sum| 2 is reached by (+,-) and (-,+); (+,+) gives 4, (-,-) 4: all four
    assert sign_flip_p([3.0, -1.0]) == pytest.approx(1.0)
    assert sign_flip_p([]) == 1.0


def test_wilcoxon_p_by_hand():
    # ranks 1..5, W+ = 10, E W+ = 7.5; 10 of the 32 subsets of {1..5} sum to <= 5, 10 to >= 10
    assert wilcoxon_p([1.0, 2.0, 3.0, 4.0, -5.0]) == pytest.approx(20 / 32)
    # ten wins: only the all-positive and all-negative sign vectors are as extreme
    assert wilcoxon_p([float(i + 1) for i in range(10)]) == pytest.approx(2 / 1024)
    # zero differences are dropped; tied magnitudes share their mean rank: (1, 3, -3, 4) has ranks
    # 1, 2.5, 2.5, 4, W+ = 7.5 against E W+ = 5; 8 of the 16 subset sums lie 2.5 or more from 5
    assert wilcoxon_p([0.0, 0.0]) == 1.0
    assert wilcoxon_p([1.0, 3.0, -3.0, 4.0, 0.0]) == pytest.approx(8 / 16)


def test_bootstrap_interval_and_the_verdict():
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    low, high = bootstrap_interval([1.0, 2.0, 3.0, 4.0, 5.0], resamples=4000)
    assert 1.0 < low < 3.0 < high < 5.0
    better = paired({s: 90.0 + s % 3 for s in range(10)}, {s: 80.0 for s in range(10)})
    assert better.verdict == "better" and better.wins == 10 and better.seeds == tuple(range(10))
    mixed = paired({0: 1.0, 1: -1.0, 2: 2.0, 3: -2.0}, {s: 0.0 for s in range(5)})
    assert mixed.verdict == "tied" and mixed.seeds == (0, 1, 2, 3) and mixed.mean_difference == 0.0
    assert paired({s: 70.0 for s in range(8)}, {s: 80.0 + s for s in range(8)}).verdict == "worse"


def test_kendall_tau_and_its_permutation_p_by_hand():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs of (1, 2, 3) vs (1, 3, 2): (0,1) alike, (0,2) alike, (1,2) opposite -> (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a tie counts in neither C nor D: (1, 1, 2) vs (1, 2, 3): (0,1) tied, (0,2), (1,2) alike -> 2 / 3
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    # n = 3: of the 6 orderings, tau = +1 and -1 once each, +-1/3 for the other four
    assert kendall_p([1, 2, 3], [1, 2, 3]) == pytest.approx(2 / 6)
    assert kendall_p([1, 2, 3], [1, 3, 2]) == 1.0
    # n = 4, perfect agreement: only the identity and the reversal reach |tau| = 1, of 24 orderings
    assert kendall_p([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 24)
    assert kendall_p([1, 2], [2, 1]) == 1.0
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1])
