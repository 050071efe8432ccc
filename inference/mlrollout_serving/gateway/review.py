"""Human review off the client's path: a bounded queue, a few senders, a timeout, retries, drops counted.

The proxy only calls `offer()` (a non-blocking put) before it answers the client, so a webhook that
hangs or fails never delays an answer: its reviews wait in the queue, are retried with backoff, and are
counted as failed; when the queue is full (``queueSize`` reviews, or `MAX_QUEUED_BYTES` of bodies) a new
review is dropped and counted (docs/gateway.md). Reviews always go to the current webhook: those queued
before a URL change are sent to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..contract.routes import Review
from .budget import MAX_QUEUED_BYTES, ByteBudget
from .metrics import GatewayMetrics
from .review_body import retry_delay
from .upstream import UpstreamFailure, UpstreamPool, UpstreamTimeout

__all__ = ["MAX_QUEUED_BYTES", "ReviewJob", "Reviews", "Webhook"]

log = logging.getLogger("mlrollout.gateway.review")


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where and how reviews are delivered (from the table the request started with)."""

    pool: UpstreamPool
    head: bytes  # request line, host and content-type header lines
    timeout: float
    retries: int
    backoff: float


@dataclass(frozen=True, slots=True)
class ReviewJob:
    """One review: its body and the answer's track and revision (metrics labels)."""

    webhook: Webhook
    body: bytes
    track: str
    revision: str


class Reviews:
    """Senders draining a bounded queue of ReviewJobs; reconfigured when a route table changes it."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._queue: asyncio.Queue[ReviewJob] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._pools: dict[str, UpstreamPool] = {}
        self._current: Webhook | None = None
        self._bytes = ByteBudget()  # ``queueSize`` x ``maxBodyBytes`` could reach 1 TiB while the webhook is down
        self.in_flight = 0

    @property
    def queued_bytes(self) -> int:
        """Bytes of the bodies queued or being sent (released when a sender finishes with one)."""
        return self._bytes.used

    def webhook(self, review: Review | None) -> Webhook | None:
        """Apply a table's review settings (queue size, senders) and return its webhook (None: no review)."""
        if review is None:
            self._current = None
            self._resize(None, 0)
            for pool in self._pools.values():
                pool.close()
            self._pools = {}
            return None
        parts = urlsplit(review.url)
        assert parts.hostname is not None and parts.port is not None  # the contract checked it
        name = f"{parts.hostname}:{parts.port}"
        stale = [n for n in self._pools if n != name]
        for old in stale:
            self._pools.pop(old).close()
        if stale:  # a sender mid-delivery to the old host would wait out its timeout: restart them
            self._stop_workers()
        if name not in self._pools:
            self._pools[name] = UpstreamPool(parts.hostname, parts.port)
        pool = self._pools[name]
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = b"POST %s HTTP/1.1\r\n%scontent-type: application/json\r\n" % (path.encode(), pool.host_header)
        self._current = Webhook(pool, head, review.timeout_seconds, review.retries, review.backoff_seconds)
        self._resize(review.queue_size, review.concurrency)
        return self._current

    def _resize(self, size: int | None, senders: int) -> None:
        queue = self._queue
        if size is not None and (queue is None or queue.maxsize != size):
            self._queue = asyncio.Queue(maxsize=size)
            while queue is not None and not queue.empty():
                job = queue.get_nowait()
                self._bytes.release(len(job.body))
                self.offer(job)
            self._stop_workers()
        elif size is None:
            self._queue = None
            self._discard(queue)
            self._stop_workers()
        while len(self._workers) < senders:
            self._workers.append(asyncio.get_running_loop().create_task(self._work()))
        while len(self._workers) > senders:
            self._workers.pop().cancel()

    def _stop_workers(self) -> None:
        """Cancel the senders (each counts the review it was sending as failed, ``cancelled``)."""
        for task in self._workers:  # workers bind the queue at start: restart them
            task.cancel()
        self._workers = []

    def _discard(self, queue: asyncio.Queue[ReviewJob] | None) -> None:
        """Count the reviews left in a queue nobody will drain as dropped (``cancelled``)."""
        while queue is not None and not queue.empty():
            job = queue.get_nowait()
            self._bytes.release(len(job.body))
            self._metrics.review_dropped(job.track, job.revision, "cancelled")

    def offer(self, job: ReviewJob) -> bool:
        """Queue a review without waiting; False (counted as dropped, queue_full) when the queue is full, by
        count or by bytes (`MAX_QUEUED_BYTES`)."""
        queue = self._queue
        if queue is not None and self._bytes.take(len(job.body)):
            try:
                queue.put_nowait(job)
                return True
            except asyncio.QueueFull:
                self._bytes.release(len(job.body))
        self._metrics.review_dropped(job.track, job.revision, "queue_full")
        return False

    def dropped(self, track: str, revision: str, reason: str) -> None:
        """Count a review that could not be built (too_large, unencodable)."""
        self._metrics.review_dropped(track, revision, reason)

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            job = await queue.get()
            self.in_flight += 1
            try:
                await self._deliver(job)
            except asyncio.CancelledError:  # reconfigured or stopping: this review is not delivered
                self._metrics.review_failed(job.track, job.revision, "cancelled")
                raise
            except Exception:  # a bug here must never kill the sender
                log.exception("delivering a review failed")
                self._metrics.review_failed(job.track, job.revision, "error")
            finally:
                self.in_flight -= 1
                self._bytes.release(len(job.body))

    async def _deliver(self, job: ReviewJob) -> None:
        hook = self._current or job.webhook  # queued before a URL change: the old pool is closed
        data = b"%scontent-length: %d\r\n\r\n%s" % (hook.head, len(job.body), job.body)
        reason = "error"
        for attempt in range(hook.retries + 1):
            if attempt:
                await asyncio.sleep(retry_delay(attempt, hook.backoff))
            try:
                response = await hook.pool.request(data, hook.timeout)
            except UpstreamTimeout:
                reason = "timeout"
                continue
            except UpstreamFailure as exc:
                log.debug("review webhook %s: %s", hook.pool.name, exc)
                reason = "error"
                continue
            if 200 <= response.status < 300:
                self._metrics.review_sent(job.track, job.revision)
                return
            if 400 <= response.status < 500 and response.status not in (408, 429):
                log.warning("review webhook %s refused a review: %d", hook.pool.name, response.status)
                self._metrics.review_failed(job.track, job.revision, "refused")
                return
            reason = "error"
        log.warning("review webhook %s: review not delivered after %d attempts (%s)", hook.pool.name,
                    hook.retries + 1, reason)  # fmt: skip
        self._metrics.review_failed(job.track, job.revision, reason)

    async def close(self) -> None:
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._discard(self._queue)
        for pool in self._pools.values():
            pool.close()
