"""The reconciler against KMock (as tests/unit/controller/test_controller_kmock.py) with notifications on:
a rollout that promotes is heard by a real webhook receiver, and a sink whose Secret is missing changes
nothing in the rollout but an Event."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.support.httpd import Received, recorder, serving
from tests.unit.controller.kmock_support import ApplyingEmulator, declare_operator_resources
from tests.unit.controller.test_controller_kmock import FAST_POLICY, MD, make_ready, md_body, run
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.controller.kube import Kube
from mlrollout.controller.notifications import FAILED_REASON, Notifier
from mlrollout.controller.reconcile import Reconciler
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.verdicts import RecordedVerdicts
from mlrollout.notify.messages import NotificationBody
from mlrollout.revision import revision_of

pytestmark = [pytest.mark.component, pytest.mark.kmock(cls=ApplyingEmulator)]


def policy_with_notifications() -> dict[str, Any]:
    sinks = [
        {"name": "team", "kind": "webhook", "secretRef": {"name": "hooks", "key": "team"},
         "events": ["RolloutStarted", "Promoted"]},
        {"name": "chat", "kind": "slack", "secretRef": {"name": "missing", "key": "url"}, "events": ["Promoted"]},
    ]  # fmt: skip
    return {**FAST_POLICY, "spec": {**FAST_POLICY["spec"], "notifications": {"sinks": sinks}}}


async def test_a_promotion_is_delivered_to_the_webhook_and_a_dead_sink_changes_nothing(
    kmock: Any, tmp_path: Path
) -> None:
    declare_operator_resources(kmock)
    kmock["get /api/v1/namespaces/ml"] << {"metadata": {"name": "ml", "labels": {}}}
    kmock.objects["mlrollout.io/v1alpha1/rolloutpolicies", None, "fast"] = policy_with_notifications()
    kmock.objects[MD, "ml", "wine"] = md_body()
    received = Received()
    with serving(recorder(received, {"/hook": lambda _: (204, {}, b"")})) as url:
        kmock.objects["v1/secrets", "ml", "hooks"] = {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hooks", "namespace": "ml"},
            "data": {"team": base64.b64encode(f"{url}/hook".encode()).decode()},
        }  # fmt: skip
        api = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
        notifier = Notifier(Kube(api)).start()
        settings = OperatorSettings(serving_image=IMAGE, gateway_image="gw:test")
        rec = Reconciler(Kube(api), RecordedVerdicts(str(tmp_path)), settings, notifier=notifier)
        try:
            t0 = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
            rev1, rev2 = revision_of(spec("1", "a"), IMAGE).revision, revision_of(spec("2", "b"), IMAGE).revision
            await run(rec, t0)
            make_ready(kmock, f"wine-{rev1}")
            make_ready(kmock, "wine")
            await run(rec, t0 + timedelta(seconds=1))
            kmock.objects[MD, "ml", "wine"].patch({"spec": md_body("2", "b")["spec"], "metadata": {"generation": 2}})
            out = await run(rec, t0 + timedelta(seconds=2))
            assert out is not None and "RolloutStarted" in out.events
            make_ready(kmock, f"wine-{rev2}")
            await run(rec, t0 + timedelta(seconds=3))
            (tmp_path / "ml.wine.json").write_text(
                json.dumps({"verdict": "promote", "reason": "recorded", "samples": {"stable": 500, "candidate": 50}})
            )
            out = await run(rec, t0 + timedelta(seconds=5))
            assert out is not None and "Promoted" in out.events and out.phase == "Healthy"
            await asyncio.to_thread(notifier.join, 30)
        finally:
            notifier.close()
    bodies = [NotificationBody.model_validate_json(b) for b in received.to("/hook")]
    assert [b.event for b in bodies] == ["RolloutStarted", "Promoted"]
    promoted = bodies[1]
    assert promoted.stable is not None and promoted.stable.revision == rev2 and promoted.candidate is None
    assert promoted.policy == "fast (reference)" and promoted.phase == "Healthy"
    assert kmock.objects[MD, "ml", "wine"]["status"]["stable"]["revision"] == rev2  # the rollout went on
    [failed] = [e for e in kmock.posted_events if e["reason"] == FAILED_REASON]
    assert failed["type"] == "Warning" and failed["involvedObject"]["uid"] == "uid-1"
    assert (
        "sink chat (slack)" in failed["message"]
        and "Secret 'missing' in namespace 'ml' does not exist" in (failed["message"])
    )
