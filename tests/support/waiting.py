"""Polling for a condition, the one way every tier waits (real processes take their time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition", interval: float = 0.05
) -> T:
    """Call ``check`` until it returns something truthy and return that; fail naming ``what`` and the last
    value once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
