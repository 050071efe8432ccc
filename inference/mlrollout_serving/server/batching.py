"""Adaptive micro-batching: merge concurrent requests into one onnxruntime run, split the results back.

There is no fixed timer on the hot path. Requests that arrive while the model is busy (or within the same
event-loop turn) wait in a queue; when the model is free, everything queued, up to ``max_rows`` rows, runs
as one batch. Under light load each request runs alone at once, on the caller's stack when nothing else
is queued (:meth:`Batcher.run_now`: no queue entry, no scheduled flush, no completion callback); under
heavy load batches grow by themselves. An optional ``max_wait`` lets a batch collect more requests, but
only once concurrency has been seen (the previous batch held more than one request), so a lone client
never waits.

Results are identical with and without batching. onnxruntime computes a row the same way in any batch of
two or more rows, but some kernels take a different path (different summation order) for a single row.
So a single-row run is padded to two rows by repeating the row, and every result comes from the same
kernels no matter how requests were merged.

Small batches run inline on the event loop (a thread hop costs more than the model); large ones run on a
worker thread so the loop keeps reading requests meanwhile. A large batch whose run is known to be short
(``inline_seconds``) runs inline too when there is nothing to overlap it with: a lone request, or any
batch when the process has a single CPU. The hop to the worker thread and back cost ~8 context switches
and 20-40% more CPU per 256-row request on one core.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Feed = dict[str, Array]
Runner = Callable[[Feed], list[Array]]
Observer = Callable[[Feed, list[Array]], None]

log = logging.getLogger(__name__)
_FIRST_ROW = operator.itemgetter(slice(None, 1))


# --- pure parts ---------------------------------------------------------------------------------------


def merge(feeds: Sequence[Feed]) -> Feed:
    """Stack the inputs of several requests along the batch dimension."""
    if len(feeds) == 1:
        return feeds[0]
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def split(outputs: Sequence[Array], rows: Sequence[int]) -> list[list[Array]]:
    """Cut batch outputs back into per-request outputs, ``rows[i]`` rows for request ``i``."""
    result: list[list[Array]] = []
    start = 0
    for n in rows:
        result.append([out[start : start + n] for out in outputs])
        start += n
    return result


def pad_single_row(feed: Feed) -> Feed:
    """Repeat the only row so onnxruntime takes its multi-row kernels (see the module docstring)."""
    if len(feed) == 1:  # the common case, without a comprehension's frame
        ((name, a),) = feed.items()
        return {name: a.repeat(2, axis=0)}
    return {name: a.repeat(2, axis=0) for name, a in feed.items()}


def feed_key(feed: Feed) -> tuple[tuple[int, ...], ...]:
    """Requests can share a batch only when their non-batch dimensions agree."""
    return tuple(a.shape[1:] for a in feed.values())


class Completion(Protocol):
    """Where a job's outputs go: an asyncio future, or a :class:`Callback` (no event-loop hop)."""

    def done(self) -> bool: ...
    def set_result(self, result: list[Array], /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class Callback:
    """A completion that calls ``fn`` at once with the outputs or the exception.

    An asyncio future schedules its callbacks for the next event-loop turn, and the server would pay that
    hop (and a future) per request; a callback answers in the same turn the batch ran.
    """

    __slots__ = ("_done", "_fn")

    def __init__(self, fn: Callable[[list[Array] | BaseException], None]) -> None:
        self._fn = fn
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: list[Array], /) -> None:
        self._done = True
        self._fn(result)

    def set_exception(self, exception: BaseException, /) -> None:
        self._done = True
        self._fn(exception)


@dataclass(slots=True)
class Job:
    feed: Feed
    rows: int
    future: Completion


def take_batch(pending: list[Job], max_rows: int) -> tuple[list[Job], list[Job]]:
    """Split the queue into the next batch and the rest, keeping arrival order.

    The first job always runs (even if larger than ``max_rows``); later jobs join while they fit and have
    the same non-batch shape.
    """
    first = pending[0]
    key = feed_key(first.feed)
    batch, rest = [first], []
    total = first.rows
    for job in pending[1:]:
        if total + job.rows <= max_rows and feed_key(job.feed) == key:
            batch.append(job)
            total += job.rows
        else:
            rest.append(job)
    return batch, rest


# --- the scheduler ------------------------------------------------------------------------------------


@dataclass
class BatchSettings:
    enabled: bool
    """Merge requests (needs a dynamic batch dimension on every input and output)."""
    pad_single_row: bool
    """Pad single-row runs to two rows (only for models with a batch dimension)."""
    max_rows: int = 64
    max_wait: float = 0.0
    inline_elements: int = 8192
    """Batches with at most this many input elements run on the event loop thread."""
    inline_seconds: float = 0.001
    """A lone request above ``inline_elements`` also runs on the loop when its run is expected to take at
    most this long (from the measured cost per element of earlier large runs)."""
    overlap: bool = True
    """A second CPU can run the loop while the worker thread runs a batch (see ``cpus``). Without one,
    every batch expected to take at most ``inline_seconds`` runs on the loop, merged ones too."""


@dataclass
class Batcher:
    runner: Runner
    settings: BatchSettings
    executor: concurrent.futures.Executor
    observe: Observer
    on_batch: Callable[[int], None] = field(default=lambda rows: None)

    def __post_init__(self) -> None:
        self._pending: list[Job] = []
        self._pending_rows = 0
        self._busy = False
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._last_jobs = 1
        self._ran_inline: list[bool] = []
        """Non-empty from an inline run (:meth:`run_now`) until the end of its event-loop turn."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop of the last inline run: ``asyncio.get_running_loop()`` costs a getpid() system call."""
        self._large_cost: float | None = None
        """Seconds per input element of runs above ``inline_elements`` (moving average); None until one ran."""

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(self, feed: Feed, rows: int) -> asyncio.Future[list[Array]]:
        """Queue one request's inputs; the future resolves to its outputs in model order."""
        future: asyncio.Future[list[Array]] = asyncio.get_running_loop().create_future()
        self.enqueue(feed, rows, future)
        return future

    def run_now(self, feed: Feed, rows: int) -> list[Array] | None:
        """Run a lone request at once, on the caller's stack, and return its outputs; None when it must
        queue instead (the caller then uses :meth:`enqueue`). Raises what the model raises.

        Only when nothing is queued or running, the previous batch held a single request (no concurrency
        seen), the run is short (at most ``inline_elements`` values, or expected to take at most
        ``inline_seconds``), and no other request ran inline in this event-loop turn: a second request
        arriving in the same turn queues, so concurrent requests still merge exactly as before, while a
        lone client skips the queue, the scheduled flush, the completion callbacks and, for large inputs,
        the hop to the worker thread and back.
        """
        if self._pending or self._busy or self._scheduled is not None or self._last_jobs != 1 or self._ran_inline:
            return None
        elements = 0
        for a in feed.values():
            elements += a.size
        large = elements > self.settings.inline_elements
        if large and not self._short(elements):
            return None
        ran = self._ran_inline
        ran.append(True)
        loop = self._loop
        if loop is None or not loop.is_running():  # first use, or a new loop (tests run one per case)
            loop = self._loop = asyncio.get_running_loop()
        loop.call_soon(ran.clear)  # a builtin: no Python frame at the end of the turn
        if large:
            outputs = self._execute_large(feed, rows, elements)
        elif rows == 1 and self.settings.pad_single_row:  # _execute, inline
            outputs = list(map(_FIRST_ROW, self.runner(pad_single_row(feed))))
        else:
            outputs = self.runner(feed)
        self.on_batch(rows)
        try:
            self.observe(feed, outputs)
        except Exception:  # metrics must never fail a request
            log.exception("recording prediction metrics failed")
        return outputs

    def enqueue(self, feed: Feed, rows: int, completion: Completion) -> None:
        """Queue one request's inputs; ``completion`` gets its outputs (or the exception) exactly once."""
        self._pending.append(Job(feed, rows, completion))
        self._pending_rows += rows
        if self._busy:
            return
        scheduled = self._scheduled
        if scheduled is None:
            loop = asyncio.get_running_loop()
            if self.settings.max_wait > 0 and self._last_jobs > 1 and not self._full():
                self._scheduled = loop.call_later(self.settings.max_wait, self._flush)
            else:
                # Not a timer: the batch runs after the callbacks of this event-loop turn, so requests that
                # arrived together share it, and a lone request runs at once.
                self._scheduled = loop.call_soon(self._flush)
        elif isinstance(scheduled, asyncio.TimerHandle) and self._full():
            scheduled.cancel()
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def _full(self) -> bool:
        return not self.settings.enabled or self._pending_rows >= self.settings.max_rows

    def _flush(self) -> None:
        self._scheduled = None
        pending = self._pending
        if self._busy or not pending:
            return
        if len(pending) == 1:  # the common case under light load, without the bookkeeping below
            batch, self._pending = pending, []
            feed, rows = pending[0].feed, pending[0].rows
        else:
            if self.settings.enabled:
                batch, self._pending = take_batch(pending, self.settings.max_rows)
            else:
                batch, self._pending = pending[:1], pending[1:]
            feed = merge([j.feed for j in batch])
            rows = sum(j.rows for j in batch)
        self._pending_rows -= rows
        self._last_jobs = len(batch)
        elements = 0
        for a in feed.values():
            elements += a.size
        large = elements > self.settings.inline_elements
        if not large or (not self.settings.overlap and self._short(elements)):
            try:
                outputs = self._execute_large(feed, rows, elements) if large else self._execute(feed, rows)
            except Exception as e:
                self._failed(batch, e)
            else:
                self._done(batch, feed, outputs, rows)
            self._reschedule()
            return
        self._busy = True
        loop = asyncio.get_running_loop()

        def back_on_the_loop(done: concurrent.futures.Future[list[Array]]) -> None:  # on the worker thread
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown: nobody is waiting
                loop.call_soon_threadsafe(self._threaded_done, done, batch, feed, rows)

        # Not run_in_executor: its asyncio future chained to the concurrent one costs about a hundred Python
        # calls per batch; one thread-safe callback does the same job.
        self.executor.submit(self._execute_large, feed, rows, elements).add_done_callback(back_on_the_loop)

    def _short(self, elements: int) -> bool:
        """A run of this many input values is known to take at most ``inline_seconds``."""
        cost = self._large_cost
        return cost is not None and elements * cost <= self.settings.inline_seconds

    def _execute(self, feed: Feed, rows: int) -> list[Array]:
        if rows == 1 and self.settings.pad_single_row:
            return list(map(_FIRST_ROW, self.runner(pad_single_row(feed))))
        return self.runner(feed)

    def _execute_large(self, feed: Feed, rows: int, elements: int) -> list[Array]:
        """Run a batch above ``inline_elements`` and learn what such runs cost per element."""
        start = time.perf_counter()
        outputs = self._execute(feed, rows)
        cost = (time.perf_counter() - start) / elements
        last = self._large_cost
        self._large_cost = cost if last is None else last + 0.25 * (cost - last)
        return outputs

    def _threaded_done(
        self, fut: concurrent.futures.Future[list[Array]], batch: list[Job], feed: Feed, rows: int
    ) -> None:
        self._busy = False
        exc = fut.exception()
        if exc is not None:
            self._failed(batch, exc)
        else:
            self._done(batch, feed, fut.result(), rows)
        self._reschedule()

    def _reschedule(self) -> None:
        if self._pending and self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def _done(self, batch: list[Job], feed: Feed, outputs: list[Array], rows: int) -> None:
        self.on_batch(rows)
        try:
            self.observe(feed, outputs)
        except Exception:  # metrics must never fail a request
            log.exception("recording prediction metrics failed")
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        for job, part in zip(batch, split(outputs, [j.rows for j in batch]), strict=True):
            if not job.future.done():
                job.future.set_result(part)

    def _failed(self, batch: list[Job], exc: BaseException) -> None:
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        # One bad request must not fail its neighbours: run each request of the batch on its own.
        for job in batch:
            try:
                outputs = self._execute(job.feed, job.rows)
            except Exception as e:
                if not job.future.done():
                    job.future.set_exception(e)
            else:
                self._done([job], job.feed, outputs, job.rows)
