"""Margins: relative to stable's level with an absolute floor, or absolute; one definition for every family."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from mlrollout.api.rolloutpolicy import MIN_MARGIN, Margin, Margins, RolloutPolicySpec


def test_a_relative_margin_with_a_floor_is_the_larger_of_the_two() -> None:
    m = Margin(relative=0.3, floor=0.0025)
    assert m.allowed(0.20) == pytest.approx(0.06)  # 30% of a 20% error rate
    assert m.allowed(0.01) == pytest.approx(0.003)
    assert m.allowed(0.001) == pytest.approx(0.0025)  # the floor: 30% of 0.1% would be 0.03 pp
    assert m.limit(0.001) == pytest.approx(0.0035)
    assert Margin(absolute=0.01).allowed(0.2) == Margin(absolute=0.01).allowed(0.0) == 0.01
    assert Margin(relative=0.1).allowed(0.0) == 0.0


def test_limit_is_increasing_in_stable_level() -> None:
    """The validity of judging against stable's lower bound rests on this (result.within_margin)."""
    for m in (Margin(relative=0.3, floor=0.0025), Margin(absolute=0.01), Margin(relative=0.1)):
        levels = [i / 1000 for i in range(0, 400)]
        limits = [m.limit(x) for x in levels]
        assert all(b > a for a, b in itertools.pairwise(limits))


def test_defaults_are_relative_with_a_floor() -> None:
    margins = Margins()
    assert (margins.error_rate.relative, margins.error_rate.floor) == (0.3, 0.0025)
    assert (margins.latency.relative, margins.latency.floor) == (0.1, 0.001)
    assert margins.error_rate.describe(lambda x: f"{x * 100:g} pp") == "30% of stable's, at least 0.25 pp"


@pytest.mark.parametrize(
    ("mine", "theirs", "stricter"),
    [
        (Margin(relative=0.2, floor=0.001), Margin(relative=0.3, floor=0.0025), True),
        (Margin(absolute=0.002), Margin(relative=0.3, floor=0.0025), True),  # below the floor everywhere
        (Margin(absolute=0.003), Margin(relative=0.3, floor=0.0025), False),  # looser at low rates
        (Margin(relative=0.2), Margin(absolute=0.01), False),  # looser at high levels
        (Margin(relative=0.3, floor=0.005), Margin(relative=0.3, floor=0.0025), False),
    ],
)
def test_a_stricter_margin_allows_no_more_at_any_level(mine: Margin, theirs: Margin, stricter: bool) -> None:
    assert mine.at_most(theirs) is stricter


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"relative": 0.0}, "makes promotion impossible"),
        ({"absolute": 0.01, "floor": 0.001}, "floor goes with a relative margin"),
        ({"absolute": 0.01, "relative": 0.1}, "exactly one of absolute, relative"),
        ({}, "exactly one of absolute, relative"),
        ({"absolute": MIN_MARGIN / 10}, "greater than or equal to 0.0001"),
    ],
)
def test_margins_that_make_promotion_impossible_are_refused(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Margin(**fields)


def test_a_zero_relative_part_with_a_floor_is_an_absolute_margin() -> None:
    m = Margin(relative=0.0, floor=0.001)
    assert m.allowed(0.5) == m.allowed(0.0) == 0.001


def _policy(spec: dict[str, Any]) -> RolloutPolicySpec:
    return RolloutPolicySpec.model_validate(spec)


HOLDOUT = {"uri": "http://store/h.csv", "sha256": "a" * 64, "label": "y"}


@pytest.mark.parametrize(
    "spec",
    [
        {"significance": {"margins": {"latency": {"absolute": 2.5}}}},  # seconds
        {"significance": {"margins": {"latency": {"relative": 0.1, "floor": 1.5}}}},
        {
            "analysis": {
                "metrics": {"quality": {"enabled": True, "metric": "mae", "errorBound": 10, "margin": {"absolute": 2}}}
            }
        },
        {"strategy": {"steps": [{"evaluate": {"dataset": HOLDOUT, "metric": "rmse", "margin": {"absolute": 250}}}]}},
        {"strategy": {"steps": [{"evaluate": {"dataset": HOLDOUT, "metric": "logLoss", "margin": {"absolute": 1.5}}}]}},
    ],
)
def test_a_margin_in_a_unit_of_its_own_may_exceed_one(spec: dict[str, Any]) -> None:
    """An MAE in dollars or a latency in seconds: an absolute margin above 1 is an ordinary choice."""
    _policy(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"significance": {"margins": {"errorRate": {"absolute": 1.5}}}},
        {"significance": {"margins": {"errorRate": {"relative": 0.3, "floor": 2}}}},
        {"analysis": {"metrics": {"quality": {"enabled": True, "margin": {"absolute": 2}}}}},
        {"strategy": {"steps": [{"evaluate": {"dataset": HOLDOUT, "margin": {"absolute": 1.01}}}]}},
        {
            "strategy": {
                "steps": [
                    {"evaluate": {"dataset": HOLDOUT, "metric": "rocAuc", "margin": {"relative": 0.1, "floor": 3}}}
                ]
            }
        },
    ],
)
def test_a_rate_or_fraction_margin_above_one_is_refused(spec: dict[str, Any]) -> None:
    """More than 1 on a score in [0, 1] would pass any candidate: refused with the reason, not clipped."""
    with pytest.raises(ValidationError, match=r"of a rate or fraction .* is at most 1"):
        _policy(spec)
