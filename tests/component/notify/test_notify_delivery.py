"""Notifications delivered by the real notifier (queue, retries, urllib) to real HTTP receivers on loopback,
with the URL read from a Secret through the operator's Kubernetes adapter (KMock's emulator) and failures
posted there as Events (docs/notifications.md).

Bad sinks: one that never answers (timeout), one that answers 500 (retried, then counted), one that
redirects to another host (refused, not followed), a missing Secret; and a full queue (dropped, counted).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from tests.support.httpd import Received, Reply, recorder, serving, silent_listener, trickler
from tests.unit.controller.kmock_support import ApplyingEmulator

from mlrollout.api.modeldeployment import ModelDeploymentStatus
from mlrollout.api.rolloutpolicy import Notifications
from mlrollout.controller import metrics
from mlrollout.controller.kube import Kube
from mlrollout.controller.notifications import FAILED_REASON, Notifier
from mlrollout.notify.http import UrllibPoster, post_sync
from mlrollout.notify.messages import Delivery, NotificationBody, deliveries
from mlrollout.rollout import RecordEvent

pytestmark = [pytest.mark.component, pytest.mark.kmock(cls=ApplyingEmulator)]

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
OBJ = {"apiVersion": "mlrollout.io/v1alpha1", "kind": "ModelDeployment",
       "metadata": {"name": "wine", "namespace": "ml", "uid": "uid-1"}}  # fmt: skip
PROMOTED = RecordEvent("Normal", "Promoted", "revision 2 (v2) is stable: promote verdict", ("Promoted",))
ROLLED_BACK = RecordEvent("Warning", "AnalysisFailed", "revision 2 rolled back: errors", ("RolledBack",))


def ok(_: str) -> Reply:
    return 200, {}, b"ok"


def fails(_: str) -> Reply:
    return 500, {}, b"down"


@pytest.fixture
def received() -> Received:
    return Received()


@pytest.fixture
def receiver(received: Received) -> Iterator[str]:
    """A webhook receiver: /ok answers 200, /fail 500, /same 307 to /ok on itself."""
    routes: dict[str, Callable[[str], Reply]] = {
        "/ok": ok, "/fail": fails, "/same": lambda base: (307, {"Location": f"{base}/ok"}, b"")
    }  # fmt: skip
    with serving(recorder(received, routes)) as url:
        yield url


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, Received]]:
    """Another receiver, reached by another host name (localhost, where the first is 127.0.0.1)."""
    seen = Received()
    with serving(recorder(seen, {"/ok": ok})) as url:
        yield url.replace("127.0.0.1", "localhost"), seen


def secret(kmock: Any, name: str, **urls: str) -> None:
    data = {key: base64.b64encode(url.encode()).decode() for key, url in urls.items()}
    kmock.objects["v1/secrets", "ml", name] = {"apiVersion": "v1", "kind": "Secret",
                                               "metadata": {"name": name, "namespace": "ml"}, "data": data}  # fmt: skip


def notifier(kmock: Any, **options: Any) -> Notifier:
    api = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
    return Notifier(Kube(api), backoff_base=0.05, backoff_cap=0.1, **options).start()


def sinks(*items: tuple[str, str, str], timeout: str = "2s", retries: int = 2) -> Notifications:
    """(name, kind, secret key) sinks of the Secret `hooks`, each asking for Promoted and RolledBack."""
    return Notifications.model_validate({"sinks": [
        {"name": name, "kind": kind, "secretRef": {"name": "hooks", "key": key}, "events": ["Promoted", "RolledBack"],
         "timeout": timeout, "retries": retries} for name, kind, key in items]})  # fmt: skip


def count(kind: str, event: str, result: str) -> float:
    labels = {"sink_kind": kind, "event": event, "result": result}
    return metrics.REGISTRY.get_sample_value("mlrollout_operator_notifications_total", labels) or 0.0


async def send(n: Notifier, items: list[Delivery]) -> None:
    for item in items:
        n.submit(item)
    await asyncio.to_thread(n.join, 60)


def failure_events(kmock: Any) -> list[str]:
    return [e["message"] for e in getattr(kmock, "posted_events", []) if e["reason"] == FAILED_REASON]


async def test_webhook_and_slack_bodies_arrive_as_documented(kmock: Any, receiver: str, received: Received) -> None:
    secret(kmock, "hooks", hook=f"{receiver}/ok", slack=f"{receiver}/same")  # the Slack URL 307s on its own host
    n = notifier(kmock)
    before = count("webhook", "Promoted", "delivered"), count("slack", "Promoted", "delivered")
    try:
        items = deliveries(sinks(("team", "webhook", "hook"), ("chat", "slack", "slack")), [PROMOTED], OBJ,
                           ModelDeploymentStatus(phase="Healthy", traffic_split="100/0"), NOW)  # fmt: skip
        await send(n, items)
    finally:
        n.close()
    webhook, slack = received.to("/ok")[0], received.to("/ok")[1]
    if "blocks" in json.loads(webhook):
        webhook, slack = slack, webhook
    body = NotificationBody.model_validate_json(webhook)
    assert body.event == "Promoted" and body.model_deployment == "wine" and body.phase == "Healthy"
    assert body.version == 1 and body.message.startswith("revision 2 (v2) is stable")
    chat = json.loads(slack)
    assert chat["text"].startswith(":white_check_mark: *Promoted* ml/wine: revision 2") and chat["blocks"]
    assert all(h["Content-Type"] == "application/json" for m, p, h, _ in received.requests if m == "POST")
    assert (count("webhook", "Promoted", "delivered"), count("slack", "Promoted", "delivered")) == (
        before[0] + 1, before[1] + 1)  # fmt: skip
    assert not failure_events(kmock)


async def test_a_500_is_retried_then_counted_and_said_in_one_event(
    kmock: Any, receiver: str, received: Received
) -> None:
    secret(kmock, "hooks", hook=f"{receiver}/fail")
    n = notifier(kmock)
    before = count("webhook", "RolledBack", "http_error")
    try:
        items = deliveries(sinks(("team", "webhook", "hook"), retries=2), [ROLLED_BACK], OBJ, ModelDeploymentStatus(),
                           NOW)  # fmt: skip
        await send(n, items * 3)
    finally:
        n.close()
    assert len(received.to("/fail")) == 9  # 1 + 2 retries, three times
    assert count("webhook", "RolledBack", "http_error") == before + 3
    [event] = failure_events(kmock)  # three failures, one Event: a dead sink does not flood Events
    assert "sink team (webhook) failed after 3 attempts: http_error: HTTP 500" in event
    assert "/fail" not in event and "127.0.0.1" not in event  # the URL (it may carry a token) is never said


async def test_a_sink_that_never_answers_times_out_without_holding_the_caller(kmock: Any) -> None:
    with silent_listener() as hanging:
        secret(kmock, "hooks", hook=f"{hanging}/hook")
        n = notifier(kmock)
        before = count("webhook", "RolledBack", "timeout")
        try:
            items = deliveries(sinks(("team", "webhook", "hook"), timeout="300ms", retries=1), [ROLLED_BACK], OBJ,
                               ModelDeploymentStatus(), NOW)  # fmt: skip
            started = time.monotonic()
            n.submit(items[0])
            assert time.monotonic() - started < 0.05  # the reconcile pass only queues
            await asyncio.to_thread(n.join, 30)
        finally:
            n.close()
    assert count("webhook", "RolledBack", "timeout") == before + 1
    [event] = failure_events(kmock)
    assert "after 2 attempts: timeout: no answer within 0.3s" in event


async def test_a_redirect_to_another_host_is_refused_not_followed(
    kmock: Any, received: Received, elsewhere: tuple[str, Received]
) -> None:
    away, seen = elsewhere
    routes: dict[str, Callable[[str], Reply]] = {"/away": lambda _: (307, {"Location": f"{away}/ok"}, b"")}
    with serving(recorder(received, routes)) as url:
        secret(kmock, "hooks", hook=f"{url}/away")
        n = notifier(kmock)
        before = count("webhook", "Promoted", "redirect_refused")
        try:
            await send(n, deliveries(sinks(("team", "webhook", "hook")), [PROMOTED], OBJ, ModelDeploymentStatus(), NOW))
        finally:
            n.close()
    assert len(received.to("/away")) == 1  # not retried: another attempt cannot help
    assert seen.requests == []  # and the other host never saw the body
    assert count("webhook", "Promoted", "redirect_refused") == before + 1
    [event] = failure_events(kmock)
    assert "redirects to another host (localhost); cross-host redirects are not followed" in event


async def test_a_missing_secret_or_key_is_named_in_the_event(kmock: Any) -> None:
    n = notifier(kmock)
    before = count("webhook", "Promoted", "secret_error")
    try:
        await send(n, deliveries(sinks(("team", "webhook", "hook")), [PROMOTED], OBJ, ModelDeploymentStatus(), NOW))
        secret(kmock, "hooks", other="http://127.0.0.1:1/x")
        await send(n, deliveries(sinks(("crew", "webhook", "hook")), [PROMOTED], OBJ, ModelDeploymentStatus(), NOW))
    finally:
        n.close()
    assert count("webhook", "Promoted", "secret_error") == before + 2
    missing, no_key = failure_events(kmock)
    assert "Secret 'hooks' in namespace 'ml' does not exist" in missing
    assert "Secret 'hooks' in namespace 'ml' has no key 'hook'" in no_key


async def test_a_full_queue_drops_and_counts(kmock: Any) -> None:
    with silent_listener() as hanging:
        secret(kmock, "hooks", hook=f"{hanging}/hook")
        n = notifier(kmock, queue_size=1, workers=1)
        before = count("webhook", "Promoted", "dropped")
        try:
            [item] = deliveries(sinks(("team", "webhook", "hook"), timeout="200ms", retries=0), [PROMOTED], OBJ,
                                ModelDeploymentStatus(), NOW)  # fmt: skip
            started = time.monotonic()
            for _ in range(6):
                n.submit(item)
            assert time.monotonic() - started < 0.05
            await asyncio.to_thread(n.join, 30)
        finally:
            n.close()
    dropped = count("webhook", "Promoted", "dropped") - before
    assert 4 <= dropped <= 5  # one in the queue (and at most one already taken by the worker), the rest dropped


async def test_a_trickling_sink_is_cut_at_the_attempt_s_timeout() -> None:
    """A sink that sends one header line at a time (each read in time, never a whole answer): the attempt ends
    at its timeout, whole attempt, and its connection with it (no thread left reading)."""
    with trickler(every=0.1) as (url, seen):
        started = time.monotonic()
        attempt = await UrllibPoster().post(url, b"{}", 0.5)
        took = time.monotonic() - started
        await asyncio.sleep(0.4)  # the trickler notices the shut connection at its next line
        with seen.lock:
            closed = [c for _, c in seen.connections]
    assert (attempt.result, attempt.detail, attempt.retry) == ("timeout", "no answer within 0.5s", True)
    assert took < 0.5 + 0.3, took
    assert len(closed) == 1 and closed[0] is not None


def test_a_malformed_url_is_reported_without_quoting_it() -> None:
    """urllib's InvalidURL quotes the path, and the token it may carry: only the error's kind is reported."""
    attempt = post_sync("http://127.0.0.1:9/T0KEN/a\x01b", b"{}", 1.0)
    assert attempt.result == "unreachable" and attempt.detail.startswith("InvalidURL")
    assert "T0KEN" not in attempt.detail
