"""bench/label_strata.py: the two candidate repairs of the canary accuracy harm test for track-dependent label
processes (bench/quality_label_delay.py). Each is checked against the product's per-ratio likelihood ratio
(``grid_harm_log_e`` with one ratio and no Beta share) and, exactly, for the expectation that makes it an
e-process."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from bench.label_strata import increment_log_e, mixture_log_e, ratio_log_lr, stratified_log_e
from scipy import stats

from mlrollout.analysis.sequential import QUALITY_UNPAIRED, OddsMixture, grid_harm_log_e

ONE = OddsMixture(log_ratios=(0.16,), weights=(1.0,), beta_weight=0.0)
FIXED = OddsMixture(QUALITY_UNPAIRED.log_ratios, QUALITY_UNPAIRED.weights, beta_weight=0.0)


@pytest.mark.parametrize(("k", "n", "share"), [(3, 10, 0.1), (0, 7, 0.5), (40, 100, 0.37), (12, 12, 0.9)])
def test_one_ratio_is_the_products_likelihood_ratio(k: int, n: int, share: float) -> None:
    ours = float(ratio_log_lr(np.array(k), np.array(n), np.array(share), 0.16))
    assert ours == pytest.approx(grid_harm_log_e(k, n, share, ONE), abs=1e-9)


def test_the_fixed_mixture_is_the_products_without_its_beta_share() -> None:
    k, n, share = np.array([5.0, 30.0]), np.array([20.0, 150.0]), np.array([0.1, 0.5])
    per_ratio = [ratio_log_lr(k, n, share, lr) for lr in FIXED.log_ratios]
    ours = mixture_log_e(per_ratio, QUALITY_UNPAIRED)  # its weights renormalised: the Beta share dropped
    for i in range(2):
        assert ours[i] == pytest.approx(grid_harm_log_e(int(k[i]), int(n[i]), float(share[i]), FIXED), abs=1e-9)
    with pytest.raises(ValueError, match="2 ratio processes for 3 weights"):
        mixture_log_e(per_ratio[:2], QUALITY_UNPAIRED)


def test_cells_without_evidence_add_nothing() -> None:
    """No event, or a share of 0 or 1 (one track has no labelled row): a factor of 1."""
    out = ratio_log_lr(np.array([0.0, 3.0, 3.0]), np.array([0.0, 5.0, 5.0]), np.array([0.3, 0.0, 1.0]), 0.31)
    assert out.tolist() == [0.0, 0.0, 0.0]


def test_increments_multiply_each_looks_likelihood_ratio_against_its_own_share() -> None:
    # cumulative at three looks: the second adds nothing for the candidate, so it adds no evidence
    candidate_wrong, wrong = np.array([2.0, 2.0, 9.0]), np.array([10.0, 14.0, 40.0])
    candidate_labelled, labelled = np.array([20.0, 20.0, 70.0]), np.array([100.0, 140.0, 400.0])
    got = increment_log_e(candidate_wrong, wrong, candidate_labelled, labelled, ONE)
    first = grid_harm_log_e(2, 10, 0.2, ONE)
    third = grid_harm_log_e(7, 26, 50 / 260, ONE)
    assert got.tolist() == pytest.approx([first, first, first + third], abs=1e-9)


def test_strata_enter_once_closed_each_against_its_own_share() -> None:
    candidate_wrong, wrong = np.array([[1.0, 4.0, 0.0]]), np.array([[10.0, 12.0, 9.0]])
    candidate_labelled, labelled = np.array([[10.0, 30.0, 0.0]]), np.array([[100.0, 100.0, 90.0]])
    got = stratified_log_e(candidate_wrong, wrong, candidate_labelled, labelled, 1, ONE)
    first, second = grid_harm_log_e(1, 10, 0.1, ONE), grid_harm_log_e(4, 12, 0.3, ONE)
    assert got[0].tolist() == pytest.approx([0.0, first, first + second], abs=1e-9)
    assert stratified_log_e(candidate_wrong, wrong, candidate_labelled, labelled, 3, ONE)[0].tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="close=-1"):
        stratified_log_e(candidate_wrong, wrong, candidate_labelled, labelled, -1, ONE)


@pytest.mark.parametrize(("n_c", "n_s", "p_c", "p_s"), [(4, 9, 0.2, 0.2), (6, 6, 0.3, 0.3), (5, 15, 0.1, 0.25)])
@pytest.mark.parametrize("log_ratio", [0.08, 0.31, 1.9])
def test_a_strata_factor_has_expectation_at_most_one_under_the_null(
    n_c: int, n_s: int, p_c: float, p_s: float, log_ratio: float
) -> None:
    """Exactly, over every pair of wrong counts: a closed stratum's likelihood ratio, the factor the stratified
    e-process multiplies by, averages at most 1 when the candidate's error rate is at most stable's (the strata
    are independent, so the running product is a test supermartingale)."""
    share = n_c / (n_c + n_s)
    expectation = 0.0
    for k_c, k_s in itertools.product(range(n_c + 1), range(n_s + 1)):
        weight = stats.binom.pmf(k_c, n_c, p_c) * stats.binom.pmf(k_s, n_s, p_s)
        lr = float(ratio_log_lr(np.array(k_c), np.array(k_c + k_s), np.array(share), log_ratio))
        expectation += weight * math.exp(lr)
    assert expectation <= 1.0 + 1e-12
    if p_c == p_s and log_ratio < 0.1:
        assert expectation > 0.99  # not trivially small: near 1 for a small ratio at equal rates


def _expected_lr(cells: list[tuple[int, float, int, float]], log_ratio: float, pooled: bool) -> float:
    """Exactly, the expectation of the likelihood ratio over every wrong count of each cell (candidate's rows
    and error rate, stable's), the cells pooled into one share or each against its own (strata)."""
    laws = [(stats.binom(n_c, p_c), stats.binom(n_s, p_s)) for n_c, p_c, n_s, p_s in cells]
    ranges = [(range(n_c + 1), range(n_s + 1)) for n_c, _, n_s, _ in cells]
    total_c, total = sum(c[0] for c in cells), sum(c[0] + c[2] for c in cells)
    expectation = 0.0
    for counts in itertools.product(*(itertools.product(*r) for r in ranges)):
        pmfs = zip(laws, counts, strict=True)
        weight = math.prod(law_c.pmf(k_c) * law_s.pmf(k_s) for (law_c, law_s), (k_c, k_s) in pmfs)
        k_c = np.array([k for k, _ in counts], float)
        k = np.array([a + b for a, b in counts], float)
        if pooled:
            lr = float(ratio_log_lr(k_c.sum(), k.sum(), np.array(total_c / total), log_ratio))
        else:
            share = np.array([c[0] / (c[0] + c[2]) for c in cells])
            lr = float(ratio_log_lr(k_c, k, share, log_ratio).sum())
        expectation += weight * math.exp(lr)
    return expectation


def test_pooling_minutes_of_different_error_rates_breaks_the_null_and_strata_do_not() -> None:
    """Equal models, an easy minute (5 % wrong) and a hard one (30 %): the candidate's labelled rows all from
    the hard minute (its labels came sooner), stable's from both. Pooled, as the product conditions, the
    likelihood ratio averages above 1 (no longer an e-value); stratified by the serving minute, at most 1."""
    cells = [(0, 0.05, 6, 0.05), (4, 0.30, 6, 0.30)]
    assert _expected_lr(cells, 0.31, pooled=True) > 1.1
    assert _expected_lr(cells, 0.31, pooled=False) <= 1.0 + 1e-12
