"""The pure connect-retry rule of the upstream pool: which errors, how many times, inside which budget."""

from __future__ import annotations

import errno
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.gateway.upstream import CONNECT_RETRY_DELAYS, connect_retry_delay

REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
PLENTY = 10.0  # seconds left in the request's budget


def test_the_schedule_is_short_and_growing() -> None:
    assert CONNECT_RETRY_DELAYS == (0.02, 0.05, 0.1)
    assert [connect_retry_delay(REFUSED, n, PLENTY) for n in range(4)] == [0.02, 0.05, 0.1, None]


@pytest.mark.parametrize(
    "error",
    [REFUSED, ConnectionResetError(errno.ECONNRESET, "reset"), ConnectionAbortedError(errno.ECONNABORTED, "aborted")],
)
def test_nobody_accepting_is_retried(error: OSError) -> None:
    assert connect_retry_delay(error, 0, PLENTY) == CONNECT_RETRY_DELAYS[0]


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError(errno.ETIMEDOUT, "Connection timed out"),  # the budget (or the kernel) gave up: never again
        OSError(errno.EHOSTUNREACH, "No route to host"),
        OSError(errno.ENETUNREACH, "Network is unreachable"),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        OSError("Multiple exceptions: [Errno 111] ..., [Errno 99] ..."),
        PermissionError(errno.EACCES, "Permission denied"),
    ],
)
def test_other_connect_errors_are_not_retried(error: OSError) -> None:
    assert connect_retry_delay(error, 0, PLENTY) is None


def test_the_wait_must_end_inside_the_budget() -> None:
    first = CONNECT_RETRY_DELAYS[0]
    assert connect_retry_delay(REFUSED, 0, first + 0.001) == first
    assert connect_retry_delay(REFUSED, 0, first) is None  # no time left for the attempt after the wait
    assert connect_retry_delay(REFUSED, 0, 0.0) is None
    assert connect_retry_delay(REFUSED, 0, -1.0) is None
    assert connect_retry_delay(REFUSED, 2, 0.09) is None  # the third wait (100 ms) would overrun


def test_a_custom_schedule_is_followed() -> None:
    assert [connect_retry_delay(REFUSED, n, PLENTY, (0.5,)) for n in range(2)] == [0.5, None]
    assert connect_retry_delay(REFUSED, 0, PLENTY, ()) is None


@given(
    retries_done=st.integers(min_value=0, max_value=10),
    remaining=st.floats(min_value=-1.0, max_value=5.0, allow_nan=False),
)
def test_never_more_than_the_schedule_nor_beyond_the_budget(retries_done: int, remaining: float) -> None:
    delay = connect_retry_delay(REFUSED, retries_done, remaining)
    if delay is None:
        assert retries_done >= len(CONNECT_RETRY_DELAYS) or remaining <= CONNECT_RETRY_DELAYS[retries_done]
    else:
        assert delay == CONNECT_RETRY_DELAYS[retries_done]
        assert delay < remaining


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=6))
def test_the_total_wait_is_bounded_by_the_schedule(delays: list[float]) -> None:
    """Following the rule until it says stop never waits longer in total than the schedule's sum."""
    waited, retries = 0.0, 0
    budget = 100.0
    while (delay := connect_retry_delay(REFUSED, retries, budget - waited, tuple(delays))) is not None:
        waited += delay
        retries += 1
    assert retries == len(delays)
    assert waited == pytest.approx(sum(delays))
