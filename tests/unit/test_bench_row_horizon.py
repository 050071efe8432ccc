"""bench/row_horizon.py: the conditional error-spending boundaries of the labelled-row horizon McNemar test
(bench/quality_row_horizon.py, issue #14's 1.5x goal). Its validity rests on the conditional size given the
discordant pairs at each horizon never exceeding the allowance spent by then."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from bench.row_horizon import (
    Boundary,
    _hypergeometric_window,
    best_per_kind,
    brute_force_size,
    noncentral_step,
    paired_first_power,
    paired_power_given,
    rejects,
    spend,
    spend_hypergeometric,
    spend_steps,
    unpaired_power_given,
)
from scipy import stats

ALPHA = 0.0125


@pytest.mark.parametrize("randomise", [False, True])
@pytest.mark.parametrize(
    ("discordant", "shares"),
    [([3, 9, 16], (0.4, 0.7, 1.0)), ([0, 5, 14], (0.5, 0.5, 1.0)), ([6, 6, 12], (0.2, 0.9, 1.0)), ([15], (1.0,))],
)
def test_the_bookkeeping_matches_enumerating_every_way_the_pairs_go(
    discordant: list[int], shares: tuple[float, ...], randomise: bool
) -> None:
    """The spent size :func:`spend` reports equals the rejection probability over all 2**D fair-coin paths,
    and stays within alpha; randomised, it spends alpha exactly."""
    allowance = [ALPHA * s for s in shares]
    bounds = spend(discordant, allowance, randomise)
    enumerated = brute_force_size(discordant, allowance, randomise)
    assert math.isclose(bounds[-1].spent, enumerated, rel_tol=1e-9, abs_tol=1e-15)
    assert enumerated <= ALPHA + 1e-15
    for b, limit in zip(bounds, allowance, strict=True):
        assert b.spent <= limit + 1e-15
    if randomise:
        assert math.isclose(enumerated, ALPHA, rel_tol=1e-9)


def test_one_horizon_is_the_fixed_sample_binomial_test() -> None:
    """With one horizon the deterministic boundary is the one-sided exact binomial test's critical value at
    alpha (the oracle's, without its randomisation)."""
    for d in (10, 18, 57, 145, 568):
        (b,) = spend([d], [ALPHA])
        assert b.at_least == int(stats.binom.isf(ALPHA, d, 0.5)) + 1
        assert stats.binom.sf(b.at_least - 1, d, 0.5) <= ALPHA < stats.binom.sf(b.at_least - 2, d, 0.5)


def test_random_discordant_sequences_never_exceed_their_allowances() -> None:
    """Conditional size at most each cumulative allowance for 200 random D sequences (up to 700 pairs), and
    the unspent share of a horizon carried forward (a later boundary is never stricter than spending its own
    share alone would make it)."""
    rng = random.Random(14)
    for _ in range(200):
        steps = [rng.randint(0, 250) for _ in range(rng.randint(1, 4))]
        discordant = [sum(steps[: i + 1]) for i in range(len(steps))]
        shares = [*sorted(rng.uniform(0.05, 1.0) for _ in steps[:-1]), 1.0]
        allowance = [ALPHA * s for s in shares]
        for randomise in (False, True):
            bounds = spend(discordant, allowance, randomise)
            for b, limit in zip(bounds, allowance, strict=True):
                assert b.spent <= limit * (1 + 1e-9) + 1e-15
            if randomise and discordant[-1] > 0:
                assert math.isclose(bounds[-1].spent, ALPHA, rel_tol=1e-6)


def test_rejects_reports_the_first_horizon_over_its_boundary() -> None:
    bounds = spend([20, 60, 200], [0.004, 0.008, ALPHA])
    at = [b.at_least for b in bounds]
    assert rejects(bounds, [at[0] - 1, at[1], 0], [0.99, 0.99, 0.99]) == 1
    assert rejects(bounds, [at[0], 0, 0], [0.99, 0.99, 0.99]) == 0
    assert rejects(bounds, [0, 0, at[2] - 1], [0.99, 0.99, 0.99]) is None


def test_decreasing_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="decrease"):
        spend([5, 3], [0.01, ALPHA])


@pytest.mark.parametrize("randomise", [False, True])
def test_hypergeometric_steps_match_enumerating_the_wrong_rows(randomise: bool) -> None:
    """:func:`spend_steps` with the unpaired increments (the candidate's wrong rows among a batch's wrong rows,
    hypergeometric given each track's rows): its spent size equals the rejection probability over every
    equally likely placement of each batch's wrong rows."""
    batches = [(8, 3, 4), (6, 2, 3), (7, 3, 5)]  # (labelled rows, the candidate's, wrong) new in each batch
    allowance = [0.02, 0.05, 0.1]
    steps = [stats.hypergeom.pmf(np.arange(min(c, w) + 1), n, c, w) for n, c, w in batches]
    bounds = spend_steps(steps, allowance, randomise)
    placements = [
        [sum(1 for i in wrong if i < c) for wrong in itertools.combinations(range(n), w)] for n, c, w in batches
    ]
    total, count = 0.0, 0
    for path in itertools.product(*placements):
        alive, k = 1.0, 0
        for b, step in zip(bounds, path, strict=True):
            k += step
            if k >= b.at_least:
                alive = 0.0
                break
            if k == b.at_least - 1:
                alive *= 1.0 - b.gamma
        total, count = total + 1.0 - alive, count + 1
    assert math.isclose(bounds[-1].spent, total / count, rel_tol=1e-9)
    assert total / count <= allowance[-1] + 1e-12
    if randomise:
        assert math.isclose(total / count, allowance[-1], rel_tol=1e-9)


def _steps(rows: list[int], candidate: list[int], wrong: list[int]) -> list[np.ndarray]:
    """The full hypergeometric pmfs of the candidate's new wrong rows between horizons (from 0)."""
    out = []
    for n, c, w in zip(np.diff(rows, prepend=0), np.diff(candidate, prepend=0), np.diff(wrong, prepend=0), strict=True):
        out.append(stats.hypergeom.pmf(np.arange(min(c, w) + 1), n, c, w))
    return out


def _size(bounds: list[Boundary], steps: list[np.ndarray]) -> float:
    """The conditional probability under the null that ``bounds`` reject, on the full pmfs."""
    dist, rejected = np.array([1.0]), 0.0
    for b, step in zip(bounds, steps, strict=True):
        dist = np.convolve(dist, step)
        rejected += float(dist[b.at_least :].sum())
        dist[b.at_least :] = 0.0
        if 0 < b.at_least <= dist.size:
            rejected += b.gamma * float(dist[b.at_least - 1])
            dist[b.at_least - 1] *= 1.0 - b.gamma
    return rejected


@pytest.mark.parametrize("randomise", [False, True])
def test_windowed_hypergeometric_spending_matches_the_full_pmfs(randomise: bool) -> None:
    """:func:`spend_hypergeometric` (each step's pmf kept within 12 standard deviations, with an offset) gives
    the boundaries :func:`spend_steps` gives on the full pmfs, for canary-sized counts."""
    rng = np.random.default_rng(7)
    allowance = [0.004, 0.006, 0.01, ALPHA]
    for _ in range(10):
        rows = np.cumsum(rng.integers(200, 3000, 4))
        candidate = np.cumsum(rng.binomial(np.diff(rows, prepend=0), 0.1))
        wrong = np.cumsum(rng.binomial(np.diff(rows, prepend=0), 0.1))
        args = [int(x) for x in rows], [int(x) for x in candidate], [int(x) for x in wrong]
        full = spend_steps(_steps(*args), allowance, randomise)
        fast = spend_hypergeometric(*args, allowance, randomise)
        assert [b.at_least for b in fast] == [b.at_least for b in full]
        for f, g in zip(fast, full, strict=True):
            assert math.isclose(f.spent, g.spent, rel_tol=1e-9, abs_tol=1e-15)
            assert math.isclose(f.gamma, g.gamma, rel_tol=1e-6, abs_tol=1e-9)


@pytest.mark.parametrize("randomise", [False, True])
def test_a_narrow_window_only_makes_the_test_more_cautious(randomise: bool) -> None:
    """With the pmfs cut to 3 standard deviations (about 0.3 % of each step's mass left out), the bound on the
    left-out mass is counted as spent: the boundaries' true size, on the full pmfs, stays within what is
    reported spent, and that within every allowance; cut to 1 standard deviation (a third left out, over
    the allowances) the true size still stays within what is reported spent."""
    rng = np.random.default_rng(8)
    allowance = [0.02, 0.03, 0.05]
    for _ in range(20):
        rows = np.cumsum(rng.integers(100, 800, 3))
        candidate = np.cumsum(rng.binomial(np.diff(rows, prepend=0), 0.2))
        wrong = np.cumsum(rng.binomial(np.diff(rows, prepend=0), 0.15))
        args = [int(x) for x in rows], [int(x) for x in candidate], [int(x) for x in wrong]
        steps = _steps(*args)
        bounds = spend_hypergeometric(*args, allowance, randomise, width=3.0)
        for j, b in enumerate(bounds):
            assert _size(bounds[: j + 1], steps[: j + 1]) <= b.spent + 1e-12
            assert b.spent <= allowance[j] + 1e-12
        crude = spend_hypergeometric(*args, allowance, randomise, width=1.0)
        assert crude[-1].spent > allowance[-1]
        for j, b in enumerate(crude):
            assert _size(crude[: j + 1], steps[: j + 1]) <= b.spent + 1e-12


def test_counts_that_decrease_are_refused() -> None:
    with pytest.raises(ValueError, match="decrease"):
        spend_hypergeometric([100, 90], [10, 10], [10, 10], [0.01, ALPHA])
    with pytest.raises(ValueError, match="one count"):
        spend_hypergeometric([100], [10, 10], [10], [ALPHA])


def test_allowances_that_decrease_are_refused() -> None:
    """The allowances are cumulative (alpha spent by each horizon): a smaller one after a larger one is a
    mistake in the design, said so, not an IndexError from the boundary search."""
    steps = [stats.binom.pmf(np.arange(11), 10, 0.5), stats.binom.pmf(np.arange(11), 10, 0.5)]
    with pytest.raises(ValueError, match="must not decrease"):
        spend_steps(steps, [0.01, 0.005])


def _enumerated_power(discordant: list[int], allowance: list[float], against: float) -> list[float]:
    """The probability of having rejected by each horizon, by enumerating every way the pairs can go, each
    favouring stable with probability ``against``."""
    bounds = spend(discordant, allowance)
    out = [0.0] * len(discordant)
    for coins in itertools.product((0, 1), repeat=discordant[-1]):
        weight = against ** sum(coins) * (1 - against) ** (len(coins) - sum(coins))
        for j, (b, d) in enumerate(zip(bounds, discordant, strict=True)):
            if sum(coins[:d]) >= b.at_least:
                for later in range(j, len(out)):
                    out[later] += weight
                break
    return out


@pytest.mark.parametrize("against", [0.5, 0.7, 0.9])
def test_power_given_the_pairs_matches_enumerating_them(against: float) -> None:
    """:func:`paired_power_given` (the design bench's power) equals enumerating every way the pairs go; under
    the null it is the size the boundaries spent."""
    discordant, allowance = [3, 9, 15], [ALPHA * s for s in (0.4, 0.7, 1.0)]
    got = paired_power_given(discordant, allowance, against)
    for a, b in zip(got, _enumerated_power(discordant, allowance, against), strict=True):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
    if against == 0.5:
        assert got == pytest.approx([b.spent for b in spend(discordant, allowance)], rel=1e-12, abs=1e-15)
        assert got[-1] <= ALPHA + 1e-15


def test_power_at_the_first_horizon_exactly_and_by_simulation() -> None:
    """The exact sum over the pairs at the first horizon agrees with simulating the pairs and the coins."""
    rows, rate, level, against = 300, 0.06, 0.6 * ALPHA, 11 / 12
    exact = paired_first_power(rows, rate, level, against)
    rng = np.random.default_rng(7)
    d = rng.binomial(rows, rate, 40_000)
    k = rng.binomial(d, against)
    bound = {int(x): spend([int(x)], [level])[0].at_least for x in np.unique(d)}
    simulated = float(np.mean([kk >= bound[int(dd)] for dd, kk in zip(d, k, strict=True)]))
    assert abs(simulated - exact) < 4 * math.sqrt(exact * (1 - exact) / d.size)
    assert 0.8 < exact < 0.95  # the -5 pp shadow row near 1.4x its oracle: the knife edge the design is about


def test_rao_blackwellised_power_matches_counting_rejections() -> None:
    """Averaging the power given the pairs over draws of the pairs agrees with counting the rejections of
    simulated pairs and coins (three horizons, deterministic boundaries)."""
    rng = np.random.default_rng(11)
    horizons, allowance, against = (300, 1800, 4000), [ALPHA * s for s in (0.5, 0.75, 1.0)], 0.6
    steps = rng.binomial(np.diff(horizons, prepend=0), 0.06, (6000, 3))
    d = np.cumsum(steps, axis=1)
    k = np.cumsum(rng.binomial(steps, against), axis=1)
    given, counted = np.zeros(3), np.zeros(3)
    for dd, kk in zip(d, k, strict=True):
        ds = [int(x) for x in dd]
        given += paired_power_given(ds, allowance, against)
        first = rejects(spend(ds, allowance), [int(x) for x in kk], [1.0] * 3)
        if first is not None:
            counted[first:] += 1
    given, counted = given / d.shape[0], counted / d.shape[0]
    for g, c in zip(given, counted, strict=True):
        assert abs(g - c) < 4 * math.sqrt(max(g * (1 - g), 1e-4) / d.shape[0])
    assert counted[-1] > 0.5


def test_the_noncentral_step_is_fishers_noncentral_hypergeometric() -> None:
    """At odds 1 the central window; otherwise the mean and the pmf of scipy's Fisher noncentral law."""
    rows, cand, wrong = 4000, 400, 420
    lo, pmf, _ = _hypergeometric_window(rows, cand, wrong, 12.0)
    lo1, pmf1 = noncentral_step(rows, cand, wrong, 1.0)
    assert lo1 == lo
    assert np.allclose(pmf1, pmf / pmf.sum(), rtol=1e-12)
    odds = 1.5
    lo2, pmf2 = noncentral_step(rows, cand, wrong, odds)
    ks = lo2 + np.arange(pmf2.size)
    law = stats.nchypergeom_fisher(rows, cand, wrong, odds)
    assert np.allclose(pmf2, law.pmf(ks), rtol=1e-6, atol=1e-12)
    assert math.isclose(float(np.sum(ks * pmf2)), float(law.mean()), rel_tol=1e-6)


def test_unpaired_power_under_the_null_is_within_the_spent_size() -> None:
    """Given each track's counts, the canary test's rejection probability under the null (odds 1) is what the
    boundaries report spent (up to the windows), within alpha; under an effect it is more."""
    rng = np.random.default_rng(5)
    horizons = (7000, 40000, 150000)
    allowance = [ALPHA * s for s in (0.5, 0.8, 1.0)]
    for _ in range(5):
        new = np.diff(horizons, prepend=0)
        cand = rng.binomial(new, 0.1)
        wrong = rng.binomial(cand, 0.11) + rng.binomial(new - cand, 0.1)
        rows, c, w = ([int(x) for x in np.cumsum(v)] for v in (new, cand, wrong))
        null = unpaired_power_given(rows, c, w, allowance, 1.0)
        spent = [b.spent for b in spend_hypergeometric(rows, c, w, allowance)]
        for got, limit, most in zip(null, spent, allowance, strict=True):
            assert got == pytest.approx(limit, abs=1e-9)  # the window's renormalisation: within 1e-9
            assert limit <= most + 1e-15
        alt = unpaired_power_given(rows, c, w, allowance, (0.11 / 0.89) / (0.1 / 0.9))
        assert alt[-1] > 10 * null[-1]


def test_best_per_kind_picks_each_kinds_least_worst_ratio() -> None:
    """The search tail both row-horizon benches share: per kind the design with the least worst ratio, and
    each kind's best few labelled with it (sorted by that kind's worst ratio; a tie keeps the order the
    previous kind's sort left, as the benches' in-place sorts did)."""
    tried = [
        {"horizons": (1, 2), "shares": (0.5, 1.0), "a_worst": 1.4, "b_worst": 1.2},
        {"horizons": (3, 4), "shares": (0.4, 1.0), "a_worst": 1.3, "b_worst": 1.6},
        {"horizons": (5, 6), "shares": (0.6, 1.0), "a_worst": 1.5, "b_worst": 1.1},
        {"horizons": (7, 8), "shares": (0.3, 1.0), "a_worst": 1.35, "b_worst": 1.2},
    ]
    designs, top = best_per_kind(tried, ["a", "b"], 2)
    assert designs == {"a": ((3, 4), (0.4, 1.0)), "b": ((5, 6), (0.6, 1.0))}
    assert [(t["objective"], t["horizons"]) for t in top] == [
        ("a", (3, 4)),
        ("a", (7, 8)),
        ("b", (5, 6)),
        ("b", (7, 8)),  # (7, 8) and (1, 2) tie for b; (7, 8) came first after the sort by a
    ]
