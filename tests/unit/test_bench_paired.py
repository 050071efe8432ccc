"""bench/paired.py: the intervals the feedback bench judges the 5 µs minting goal by (issue #14)."""

from __future__ import annotations

import random
import statistics

import pytest
from bench.paired import bootstrap_interval, paired_summary, sign_test_interval


@pytest.mark.parametrize(("n", "rank"), [(6, 1), (20, 6), (100, 40)])
def test_the_sign_test_interval_is_the_tabled_order_statistics(n: int, rank: int) -> None:
    """The 95% interval for the median is [x(k), x(n-k+1)] with k from the binomial(n, 1/2) tail (tables:
    k = 1 for n = 6, 6 for n = 20, 40 for n = 100)."""
    values = [float(v) for v in range(1, n + 1)]
    random.Random(n).shuffle(values)
    assert sign_test_interval(values) == (rank, n + 1 - rank)


def test_too_few_values_have_no_distribution_free_interval() -> None:
    assert sign_test_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None


def test_many_values_use_the_normal_tail_without_overflow() -> None:
    """n = 2000 (beyond 2**1000): the rank is near n/2 - 1.96 sqrt(n)/2 = 956."""
    low, high = sign_test_interval([float(v) for v in range(1, 2001)])  # type: ignore[misc]
    assert 954 <= low <= 958 and high == 2001 - low


def test_intervals_cover_the_true_median_about_95_percent_of_the_time() -> None:
    rng = random.Random(3)
    covered = {"sign": 0, "bootstrap": 0}
    trials = 300
    for _ in range(trials):
        sample = [rng.expovariate(1.0) for _ in range(40)]  # skewed; true median ln 2
        low, high = sign_test_interval(sample)  # type: ignore[misc]
        covered["sign"] += low <= 0.6931 <= high
        b_low, b_high = bootstrap_interval(sample, resamples=400)
        covered["bootstrap"] += b_low <= 0.6931 <= b_high
    assert covered["sign"] / trials >= 0.92
    assert 0.88 <= covered["bootstrap"] / trials <= 0.99


def test_the_summary_says_where_the_intervals_lie_against_the_bound() -> None:
    rng = random.Random(1)
    above = paired_summary([8.0 + rng.gauss(0, 1) for _ in range(200)], bound=5.0)
    assert above["median_vs_bound_sign_test"] == "above" and above["mean_vs_bound_bootstrap"] == "above"
    below = paired_summary([2.0 + rng.gauss(0, 1) for _ in range(200)], bound=5.0)
    assert below["median_vs_bound_bootstrap"] == "at_or_below"
    unsure = paired_summary([5.0 + rng.gauss(0, 3) for _ in range(30)], bound=5.0)
    assert unsure["median_vs_bound_sign_test"] == "undecided"
    data = [float(v) for v in range(10)]
    summary = paired_summary(data)
    assert (summary["n"], summary["median"], summary["positive"]) == (10, statistics.median(data), 9)
    assert summary == paired_summary(data)  # a fixed seed: the same differences, the same intervals
