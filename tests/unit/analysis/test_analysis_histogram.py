"""Bucket parsing, monotone forcing, alignment and quantile interpolation."""

from __future__ import annotations

import math

import pytest

from mlrollout.analysis.histogram import align, interpolate_quantile, parse_buckets


def test_parse_sorts_bounds_and_reads_inf() -> None:
    h, forced = parse_buckets({"+Inf": 10, "0.1": 4, "0.05": 1})
    assert h.bounds == (0.05, 0.1, math.inf)
    assert h.cumulative == (1, 4, 10)
    assert h.total == 10 and not forced


def test_non_monotone_counts_are_forced_and_reported() -> None:
    h, forced = parse_buckets({"0.05": 5, "0.1": 4, "+Inf": 9})
    assert forced
    assert h.cumulative == (5, 5, 9)


@pytest.mark.parametrize("bad", [{"0.1": 3}, {"abc": 1, "+Inf": 2}, {"-1": 1, "+Inf": 2}, {}])
def test_invalid_bucket_maps_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        parse_buckets(bad)


def test_align_keeps_shared_bounds() -> None:
    a, _ = parse_buckets({"0.01": 1, "0.05": 3, "0.1": 6, "+Inf": 10})
    b, _ = parse_buckets({"0.05": 2, "0.1": 5, "+Inf": 8})
    a2, b2, dropped = align(a, b)
    assert dropped
    assert a2.bounds == b2.bounds == (0.05, 0.1, math.inf)
    assert a2.cumulative == (3, 6, 10)
    same_a, same_b, dropped_again = align(a2, b2)
    assert not dropped_again and same_a == a2 and same_b == b2


def test_interpolate_quantile_like_histogram_quantile() -> None:
    bounds = (0.1, 0.2, math.inf)
    assert interpolate_quantile(bounds, (0.5, 1.0, 1.0), 0.5) == pytest.approx(0.1)
    assert interpolate_quantile(bounds, (0.5, 1.0, 1.0), 0.75) == pytest.approx(0.15)
    assert interpolate_quantile(bounds, (0.2, 0.4, 1.0), 0.9) == math.inf
    assert interpolate_quantile(bounds, (0.5, 0.5, 1.0), 0.25) == pytest.approx(0.05)
