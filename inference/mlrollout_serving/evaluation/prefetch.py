"""Read the next holdout chunk while the models score this one.

numpy's reader holds the GIL while it parses; onnxruntime lets it go while it runs. Pulling chunks in a
thread of their own lets the two overlap on a machine with a second core (and costs nothing without one):
the chunks, their order and their errors are the reader's, each raised where the reader raised it. At
most ``depth`` chunks wait ready, so memory stays bounded by the chunk size, as without the thread. On one
CPU (the Job's default ``limits.cpu: 1``; :func:`~mlrollout_serving.server.cpus.usable_cpus`) the thread
would only add GIL hand-overs, so the caller passes ``threaded=False`` there and the chunks are read in turn.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

T = TypeVar("T")
POLL_SECONDS: Final = 0.05  # how soon a producer waiting on a full queue notices the consumer left
_END: Final = object()


@contextmanager
def prefetched(items: Iterator[T], depth: int = 1, threaded: bool = True) -> Iterator[Iterator[T]]:
    """``items``, produced in a thread up to ``depth`` ahead (``threaded``); leaving the block stops the
    thread, then closes ``items`` (after the thread has ended: a generator never runs in two threads)."""
    if not threaded:
        try:
            yield items
        finally:
            _close(items)
        return
    ready: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as e:  # handed to the consumer, raised where it reads this item
            put((_END, e))
            return
        put((_END, None))

    def consume() -> Iterator[T]:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]  # anything but _END is one of the items

    thread = threading.Thread(target=produce, name="holdout-reader", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
        _close(items)


def _close(items: Iterator[object]) -> None:
    close = getattr(items, "close", None)  # a generator's: its ``finally`` (the file's ``with``) runs now
    if close is not None:
        close()
