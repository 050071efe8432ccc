"""The review queue's bounds and its bookkeeping on reconfiguration (gateway/review.py), on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.contract.routes import Review
from mlrollout_serving.gateway.metrics import GatewayMetrics
from mlrollout_serving.gateway.review import MAX_QUEUED_BYTES, ReviewJob, Reviews
from support.httpd import Received, recorder, serving, silent_listener


def _count(m: GatewayMetrics, series: str, **labels: str) -> float:
    want = {"namespace": "prod", "model_deployment": "iris", "track": "stable", "revision": "r1", **labels}
    return sum(
        s.value
        for family in text_string_to_metric_families(m.exposition().decode())
        for s in family.samples
        if s.name == series and s.labels == want
    )


def _review(url: str, **settings: object) -> Review:
    return Review.model_validate({"url": url, "highStakes": {"header": "x-stakes"}, **settings})


async def _eventually(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


async def test_the_queue_is_bounded_by_bytes_not_only_by_count() -> None:
    """65536 reviews of 16 MiB would be 1 TiB; the byte cap drops what would pass MAX_QUEUED_BYTES."""
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    with silent_listener() as url:  # the webhook hangs: nothing leaves the queue
        hook = reviews.webhook(_review(url + "/r", queueSize=65536, concurrency=1, maxBodyBytes=16 << 20))
        assert hook is not None
        body = b"x" * (16 << 20)
        fits = MAX_QUEUED_BYTES // len(body)
        taken = [reviews.offer(ReviewJob(hook, body, "stable", "r1")) for _ in range(fits + 3)]
        assert taken == [True] * fits + [False] * 3
        assert reviews.queued_bytes == fits * len(body) <= MAX_QUEUED_BYTES
        assert _count(m, contract.GATEWAY_REVIEWS_DROPPED.name, reason="queue_full") == 3
        await reviews.close()


async def test_bytes_are_released_when_a_review_is_delivered() -> None:
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    received = Received()
    with serving(recorder(received, {"/r": lambda _: (200, {}, b"{}")})) as url:
        hook = reviews.webhook(_review(url + "/r"))
        assert hook is not None
        for _ in range(5):
            assert reviews.offer(ReviewJob(hook, b"{}" * 1000, "stable", "r1"))
        sent = contract.GATEWAY_REVIEWS_SENT.name
        await _eventually(lambda: _count(m, sent) == 5)
        assert reviews.queued_bytes == 0
        await reviews.close()


async def test_a_sender_cancelled_mid_delivery_counts_its_review_as_failed_cancelled() -> None:
    """Lowering concurrency cancels a sender; the review it was sending is counted, not lost silently."""
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    failed = contract.GATEWAY_REVIEWS_FAILED.name
    with silent_listener() as url:
        hook = reviews.webhook(_review(url + "/r", concurrency=2, timeoutSeconds=60))
        assert hook is not None
        for _ in range(2):
            reviews.offer(ReviewJob(hook, b"{}", "stable", "r1"))
        await _eventually(lambda: reviews.in_flight == 2)
        reviews.webhook(_review(url + "/r", concurrency=1, timeoutSeconds=60))  # one sender cancelled
        await _eventually(lambda: _count(m, failed, reason="cancelled") == 1)
        await reviews.close()  # the gateway stops: the other one is counted too
        assert _count(m, failed, reason="cancelled") == 2
        assert reviews.queued_bytes == 0


async def test_queued_reviews_go_to_the_current_webhook_after_a_url_change() -> None:
    """Reviews queued before the URL changed are sent to the new webhook (the old one's pool is closed)."""
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    received = Received()
    sent = contract.GATEWAY_REVIEWS_SENT.name
    with silent_listener() as old, serving(recorder(received, {"/new": lambda _: (200, {}, b"{}")})) as new:
        hook = reviews.webhook(_review(old + "/old", concurrency=1, timeoutSeconds=60))
        assert hook is not None
        for n in range(4):
            reviews.offer(ReviewJob(hook, b'{"n": %d}' % n, "stable", "r1"))
        await _eventually(lambda: reviews.in_flight == 1)  # one hangs on the old host; three wait
        reviews.webhook(_review(new + "/new", concurrency=1))
        await _eventually(lambda: _count(m, sent) == 3)
        assert sorted(received.to("/new")) == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
        failed = contract.GATEWAY_REVIEWS_FAILED.name
        assert _count(m, failed, reason="cancelled") == 1  # the one the restarted sender was sending
        assert _count(m, failed, reason="error") == 0
        await reviews.close()


async def test_reviews_still_queued_when_review_is_turned_off_are_counted_as_dropped() -> None:
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    with silent_listener() as url:
        hook = reviews.webhook(_review(url + "/r", concurrency=1, timeoutSeconds=60))
        assert hook is not None
        for _ in range(3):
            reviews.offer(ReviewJob(hook, b"{}", "stable", "r1"))
        await _eventually(lambda: reviews.in_flight == 1)
        reviews.webhook(None)
        dropped = contract.GATEWAY_REVIEWS_DROPPED.name
        failed = contract.GATEWAY_REVIEWS_FAILED.name
        await _eventually(lambda: _count(m, failed, reason="cancelled") == 1)
        assert _count(m, dropped, reason="cancelled") == 2
        assert reviews.queued_bytes == 0
        await reviews.close()
