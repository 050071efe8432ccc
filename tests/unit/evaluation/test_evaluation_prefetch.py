"""Chunks read in a thread ahead of the scoring: the same items in order, an error where the reader raised
it, at most ``depth`` ahead, and leaving early stops the thread and closes the reader."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from mlrollout_serving.evaluation.prefetch import prefetched


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "holdout-reader"}


@pytest.mark.parametrize("threaded", [True, False])
def test_the_items_in_order_and_the_thread_ends(threaded: bool) -> None:
    with prefetched(iter(range(1000)), threaded=threaded) as items:
        assert list(items) == list(range(1000))
    assert not _threads()


def test_an_error_is_raised_after_the_items_before_it() -> None:
    def reader() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("row 3 is bad")

    got: list[int] = []
    with pytest.raises(ValueError, match="row 3 is bad"), prefetched(reader()) as items:
        got.extend(items)
    assert got == [1, 2] and not _threads()


def test_the_reader_runs_at_most_depth_ahead() -> None:
    produced: list[int] = []

    def reader() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    with prefetched(reader(), depth=2) as items:
        first = next(items)
        time.sleep(0.3)  # time enough for the thread to run ahead as far as it may
        ahead = len(produced)
    # the one consumed, two waiting in the queue, one the thread holds while it waits to queue it
    assert first == 0 and ahead <= 4


@pytest.mark.parametrize("threaded", [True, False])
def test_leaving_early_stops_the_thread_and_closes_the_reader(threaded: bool) -> None:
    closed = threading.Event()

    def reader() -> Iterator[int]:
        try:
            yield from range(10**9)
        finally:
            closed.set()

    with prefetched(reader(), threaded=threaded) as items:
        assert next(items) == 0
    assert closed.is_set() and not _threads()


def test_the_consumers_error_stops_the_thread() -> None:
    """A bad chunk found by the scoring (not the reader) leaves the block with its error: the thread ends."""
    with pytest.raises(RuntimeError, match="scoring"), prefetched(iter(range(10**6))) as items:
        for i in items:
            if i == 5:
                raise RuntimeError("scoring refused chunk 5")
    assert not _threads()
