"""The connection limits' pure decisions: timeouts per phase, who goes first at the cap, the fd budget."""

from __future__ import annotations

import pytest

from mlrollout_serving.server.limits import (
    FD_MARGIN,
    LINGER_SECONDS,
    Limits,
    Phase,
    connection_cap,
    eviction_batch,
    eviction_rank,
    sweep_interval,
    timeout,
    victims,
)


def test_each_phase_has_its_timeout() -> None:
    limits = Limits(header_timeout=1, body_timeout=2, keepalive_timeout=3)
    assert [timeout(p, limits) for p in Phase] == [1, 1, 2, 0, 3, LINGER_SECONDS]


def test_the_sweep_runs_at_a_quarter_of_the_shortest_timeout_and_at_least_once_a_second() -> None:
    assert sweep_interval(Limits()) == 1.0
    assert sweep_interval(Limits(header_timeout=1)) == 0.25
    assert sweep_interval(Limits(header_timeout=0, body_timeout=0, keepalive_timeout=0)) == 1.0
    assert sweep_interval(Limits(body_timeout=0.01)) == 0.05


def test_at_the_cap_refused_then_never_proven_then_idle_then_other_incomplete_and_never_busy() -> None:
    rank = eviction_rank
    assert rank(Phase.LINGER, True) == 0
    assert rank(Phase.NEW, False) == rank(Phase.HEAD, False) == rank(Phase.BODY, False) == 1
    assert rank(Phase.IDLE, True) == 2
    assert rank(Phase.HEAD, True) == rank(Phase.BODY, True) == 3
    assert rank(Phase.BUSY, False) is None and rank(Phase.BUSY, True) is None


def test_eviction_batches_are_a_sixty_fourth_of_the_cap() -> None:
    assert [eviction_batch(c) for c in (1, 63, 64, 4096)] == [1, 1, 1, 64]


@pytest.mark.parametrize(
    ("requested", "soft", "hard", "in_use", "expected"),
    [
        (4096, 1024, 1 << 20, 20, (4096, 4096 + 20 + FD_MARGIN)),  # raised to fit
        (4096, 1 << 20, 1 << 20, 20, (4096, 1 << 20)),  # already fits: untouched
        (4096, 256, 256, 20, (256 - 20 - FD_MARGIN, 256)),  # cannot be raised: the cap shrinks
        (4096, 256, 1000, 20, (1000 - 20 - FD_MARGIN, 1000)),  # raised as far as it goes
        (10, 16, 16, 20, (1, 16)),  # nothing fits: one connection
    ],
)
def test_the_connection_cap_fits_the_open_files_limit(
    requested: int, soft: int, hard: int, in_use: int, expected: tuple[int, int]
) -> None:
    assert connection_cap(requested, soft, hard, in_use) == expected


def test_victims_are_the_longest_waiting_never_proven_ones_in_a_batch() -> None:
    cap = 128  # batches of two
    # (rank, age): idle proven connections, two slow clients, one refused connection
    candidates = [(2, 50.0), (2, 40.0), (1, 3.0), (1, 9.0), (0, 0.1), (1, 5.0)]
    assert victims(candidates, cap) == [4, 3]


def test_a_proven_clients_connection_goes_alone_and_only_when_nothing_else_makes_room() -> None:
    cap = 128
    assert victims([(2, 5.0), (3, 60.0), (2, 30.0)], cap) == [2]
    assert victims([(1, 1.0), (2, 30.0), (2, 40.0)], cap) == [0]  # not the idle ones beside it
    assert victims([], cap) == []
