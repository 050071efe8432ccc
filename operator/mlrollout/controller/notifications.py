"""The notification queue: deliveries leave the reconcile pass at once and are sent by asyncio tasks on a
loop of their own (a daemon thread), so a sink that hangs or fails never slows or fails a reconciliation.

Bounded: a full queue drops the delivery and counts it (`result="dropped"`). Each delivery reads its URL
from the Secret at send time (a rotated URL is used at once), then tries ``1 + retries`` times with doubling
backoff on timeouts, 5xx, 429 and refused connections. Every delivery ends in exactly one count of
`mlrollout_operator_notifications_total{sink_kind, event, result}`; a failure also posts a Warning Event
`NotificationFailed` on the ModelDeployment, at most one per sink every `event_interval` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Final

from kubernetes.client.exceptions import ApiException

from mlrollout.api.rolloutpolicy import SecretKeyRef
from mlrollout.controller import metrics
from mlrollout.controller.kube import KubeApi, api_error_message
from mlrollout.notify.http import Attempt, Poster, UrllibPoster
from mlrollout.notify.messages import Delivery, EventGate, backoff

LOG = logging.getLogger("mlrollout.notifications")
QUEUE_SIZE: Final = 256
WORKERS: Final = 4
EVENT_INTERVAL: Final = 300.0
FAILED_REASON: Final = "NotificationFailed"


class Notifier:
    """Accepts deliveries from any thread (`submit`, never blocks) and sends them on its own loop."""

    def __init__(
        self,
        kube: KubeApi,
        poster: Poster | None = None,
        queue_size: int = QUEUE_SIZE,
        workers: int = WORKERS,
        event_interval: float = EVENT_INTERVAL,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
    ) -> None:
        self.kube = kube
        self.poster: Poster = poster or UrllibPoster()
        self.queue_size = queue_size
        self.workers = workers
        self.gate = EventGate(event_interval)
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[Delivery] | None = None
        self._thread = threading.Thread(target=self._run, name="mlrollout-notifications", daemon=True)
        self._ready = threading.Event()

    def start(self) -> Notifier:
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        for index in range(self.workers):
            self.loop.create_task(self._worker(), name=f"notify-{index}")
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()

    def submit(self, delivery: Delivery) -> None:
        """Queue ``delivery`` (thread-safe, returns at once); a full queue drops it, counted."""
        self.loop.call_soon_threadsafe(self._offer, delivery)

    def _offer(self, delivery: Delivery) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            metrics.NOTIFICATIONS.labels(delivery.kind, delivery.event, "dropped").inc()
            LOG.warning("notification %s to sink %s dropped: the queue is full (%d)", delivery.event, delivery.sink,
                        self.queue_size)  # fmt: skip

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            delivery = await self._queue.get()
            try:
                await self.deliver(delivery)
            except Exception:  # a bug here must not stop the worker: the next delivery still goes out
                LOG.exception("notification %s to sink %s failed unexpectedly", delivery.event, delivery.sink)
            finally:
                self._queue.task_done()

    async def deliver(self, delivery: Delivery) -> Attempt:
        """Send one delivery with its retries; count and report the outcome."""
        url, why = await asyncio.to_thread(self._url, delivery)
        attempts = 0
        if url is None:
            outcome = Attempt("secret_error", why, retry=False)
        else:
            while True:
                attempts += 1
                outcome = await self.poster.post(url, delivery.body, delivery.timeout)
                if outcome.result == "delivered" or not outcome.retry or attempts > delivery.retries:
                    break
                await asyncio.sleep(backoff(attempts, self.backoff_base, self.backoff_cap))
        metrics.NOTIFICATIONS.labels(delivery.kind, delivery.event, outcome.result).inc()
        if outcome.result == "delivered":
            LOG.info("notification %s delivered to sink %s (%s)", delivery.event, delivery.sink, outcome.detail)
        else:
            tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
            message = f"notification {delivery.event} to sink {delivery.sink} ({delivery.kind}) failed{tries}: " \
                      f"{outcome.result}: {outcome.detail}"  # fmt: skip
            LOG.warning("%s/%s: %s", delivery.namespace, delivery.model_deployment, message)
            # the gate is asked here, on the loop's one thread; only the Event's POST goes to a worker thread
            held = self.gate.allow((delivery.namespace, delivery.model_deployment, delivery.sink), time.monotonic())
            if held is not None:
                await asyncio.to_thread(self._warn, delivery, message, held)
        return outcome

    def _url(self, delivery: Delivery) -> tuple[str | None, str]:
        return secret_url(self.kube, delivery.namespace, delivery.secret)

    def _warn(self, delivery: Delivery, message: str, held: int) -> None:
        """The failure as a Warning Event, with the failures the gate held back since the last one."""
        if held:
            message += f" ({held} more failure{'s' if held != 1 else ''} of this sink since the last such Event)"
        try:
            self.kube.post_event(dict(delivery.involved), "Warning", FAILED_REASON, message)
        except Exception as exc:  # an Event is an explanation; the metric has already counted the failure
            LOG.warning("could not post event %s: %s", FAILED_REASON, api_error_message(exc))

    def join(self, timeout: float = 30.0) -> None:
        """Wait until every queued delivery has ended (tests; an orderly shutdown)."""
        assert self._queue is not None
        future: Future[None] = asyncio.run_coroutine_threadsafe(self._queue.join(), self.loop)
        future.result(timeout)

    def close(self) -> None:
        """Stop the loop (deliveries still queued are dropped: notifications are best effort)."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


def secret_url(kube: KubeApi, namespace: str, ref: SecretKeyRef) -> tuple[str | None, str]:
    """A URL from a key of a Secret in ``namespace`` (sinks and approval hooks), or None and why not (never the
    URL itself in a message: it may carry a token)."""
    where = f"Secret {ref.name!r} in namespace {namespace!r}"
    try:
        secret = kube.get("v1", "Secret", namespace, ref.name)
    except ApiException as exc:
        if exc.status == 403:
            return None, f"cannot read {where}: the RBAC lacks get secrets (docs/operator.md, RBAC)"
        return None, f"cannot read {where}: {api_error_message(exc)}"
    except Exception as exc:
        return None, f"cannot read {where}: {type(exc).__name__}: {exc}"
    if secret is None:
        return None, f"{where} does not exist"
    data: dict[str, Any] = secret.get("data") or {}
    if ref.key not in data:
        return None, f"{where} has no key {ref.key!r}"
    try:
        url = base64.b64decode(str(data[ref.key]), validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        return None, f"{where}: key {ref.key!r} is not a UTF-8 URL"
    if not url:
        return None, f"{where}: key {ref.key!r} is empty"
    return url, ""
