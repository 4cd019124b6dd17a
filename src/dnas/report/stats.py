"""Paired comparisons of two methods over the same seeds: is one better, and by how much? And do two
budgets rank the methods alike?

With ``n`` seeds run by both methods, the paired differences ``d_i = a_i - b_i`` (same seed, same
data split, same initial weights) carry the comparison; seeds are the unit of replication.

* :func:`bootstrap_interval`: the percentile bootstrap interval of ``mean(d)``: resample the ``n``
  differences with replacement ``resamples`` times (a seeded generator), take the ``(1-level)/2``
  and ``(1+level)/2`` quantiles of the resampled means.
* :func:`sign_flip_p`: the exact two-sided sign-flip (paired permutation) test of ``mean(d) = 0``:
  under the null each ``d_i`` is as likely to have either sign, so
  ``p = #{s in {-1,1}^n : |mean(s d)| >= |mean(d)|} / 2^n`` (all ``2^n`` sign vectors; exact).
* :func:`wilcoxon_p`: the exact two-sided Wilcoxon signed-rank test: zero differences dropped,
  ``|d_i|`` ranked (ties get their mean rank), ``W+ = sum of the ranks of the positive d_i``,
  ``p = P(|W+ - E W+| >= |w+ - E W+|)`` over all ``2^m`` sign vectors of the ``m`` non-zero ranks.

* :func:`kendall_tau`: the rank agreement of two scorings of the same ``n`` methods (e.g. their mean
  accuracy at two budgets): ``tau = (C - D) / (n (n - 1) / 2)`` over the pairs of methods, ``C`` the
  pairs both scorings order alike, ``D`` those they order oppositely (a pair tied in either counts in
  neither), and its exact two-sided permutation p-value ``#{pi : |tau(x, y_pi)| >= |tau(x, y)|} / n!``
  over all orderings of ``y`` (up to 9 methods; beyond, ``2^17`` random orderings).

Exact enumeration is used up to 20 pairs (about a million sign vectors); beyond, both tests draw
``2^20`` random sign vectors instead (a Monte Carlo p-value).
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

EXACT_UP_TO = 20


def _sign_vectors(m: int, seed: int = 0):
    if m <= EXACT_UP_TO:
        yield from itertools.product((1, -1), repeat=m)
        return
    rng = random.Random(seed)
    for _ in range(2**EXACT_UP_TO):
        yield tuple(rng.choice((1, -1)) for _ in range(m))


def sign_flip_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the paired sign-flip test (module docstring); 1 when there are no pairs."""
    d = list(differences)
    if not d:
        return 1.0
    observed = abs(sum(d)) * (1 - 1e-12)  # ties with the observed statistic count as at least as extreme
    total = hits = 0
    for signs in _sign_vectors(len(d)):
        total += 1
        hits += abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed
    return hits / total


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of ``values`` (ascending), tied values sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the exact Wilcoxon signed-rank test (module docstring); 1 without non-zero pairs."""
    d = [x for x in differences if x != 0]
    if not d:
        return 1.0
    ranks = _ranks([abs(x) for x in d])
    centre = sum(ranks) / 2
    observed = abs(sum(r for r, x in zip(ranks, d, strict=True) if x > 0) - centre) * (1 - 1e-12)
    total = hits = 0
    for signs in _sign_vectors(len(d)):
        total += 1
        hits += abs(sum(r for r, s in zip(ranks, signs, strict=True) if s > 0) - centre) >= observed
    return hits / total


def bootstrap_interval(differences: Sequence[float], level: float = 0.95, resamples: int = 10000,
                       seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean difference (module docstring)."""
    d = list(differences)
    if not d:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(d, k=len(d))) / len(d) for _ in range(resamples))
    low = means[int((1 - level) / 2 * (resamples - 1))]
    high = means[int(round((1 + level) / 2 * (resamples - 1)))]
    return low, high


@dataclass(frozen=True)
class Paired:
    """``a`` against ``b`` on their common seeds."""

    seeds: tuple[int, ...]
    mean_difference: float
    interval: tuple[float, float]
    sign_flip_p: float
    wilcoxon_p: float
    wins: int  # seeds where a > b
    losses: int  # seeds where a < b

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` when the 95% interval excludes 0 and the sign-flip p < 0.05, else ``tied``."""
        low, high = self.interval
        if self.sign_flip_p < 0.05 and low > 0:
            return "better"
        if self.sign_flip_p < 0.05 and high < 0:
            return "worse"
        return "tied"


def paired(a: dict[int, float], b: dict[int, float], level: float = 0.95, seed: int = 0) -> Paired:
    """``a`` vs ``b`` (``{seed: value}``) on the seeds both have."""
    seeds = tuple(sorted(set(a) & set(b)))
    d = [a[s] - b[s] for s in seeds]
    return Paired(seeds, statistics.fmean(d) if d else float("nan"), bootstrap_interval(d, level, seed=seed),
                  sign_flip_p(d), wilcoxon_p(d), sum(x > 0 for x in d), sum(x < 0 for x in d))


EXACT_PERMUTATIONS_UP_TO = 9


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-a of two scorings of the same methods (module docstring); nan below two methods."""
    n = len(x)
    if n != len(y):
        raise ValueError("kendall_tau needs two scorings of the same methods")
    if n < 2:
        return float("nan")
    score = 0
    for i, j in itertools.combinations(range(n), 2):
        product = (x[i] - x[j]) * (y[i] - y[j])
        score += (product > 0) - (product < 0)
    return score / (n * (n - 1) / 2)


def kendall_p(x: Sequence[float], y: Sequence[float], seed: int = 0) -> float:
    """Two-sided permutation p-value of :func:`kendall_tau` (module docstring); 1 below three methods."""
    n = len(x)
    if n < 3:
        return 1.0
    observed = abs(kendall_tau(x, y)) * (1 - 1e-12)
    orderings: Iterable[Sequence[float]]
    if n <= EXACT_PERMUTATIONS_UP_TO:
        orderings = itertools.permutations(y)
    else:
        rng = random.Random(seed)
        orderings = (rng.sample(list(y), n) for _ in range(2**17))
    total = hits = 0
    for ordering in orderings:
        total += 1
        hits += abs(kendall_tau(x, ordering)) >= observed
    return hits / total
