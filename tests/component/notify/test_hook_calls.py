"""Approval hooks called by the real `HookCaller` and urllib, against real HTTP receivers on loopback, with the
URL read from a Secret through the operator's Kubernetes adapter (KMock's emulator); then the reconciler
walking a rollout through confirmRollout and confirmPromotion gates (docs/notifications.md, "Approval hooks").

Bad hooks: one that never answers (timeout), a 500, a redirect to another host (refused, not followed: the
other host sees nothing), a missing Secret, a URL that is not http. `ask` returns at once in every case.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.support.httpd import Received, Reply, recorder, serving, silent_listener, trickler
from tests.support.waiting import wait_for
from tests.unit.controller.kmock_support import ApplyingEmulator, declare_operator_resources
from tests.unit.controller.test_controller_kmock import FAST_POLICY, MD, make_ready, md_body, run
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.api.modeldeployment import ApprovalStatus, ModelDeploymentStatus, RevisionStatus
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.controller import metrics
from mlrollout.controller.hooks import HookCaller
from mlrollout.controller.kube import Kube
from mlrollout.controller.notifications import Notifier
from mlrollout.controller.reconcile import Reconciled, Reconciler
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.verdicts import RecordedVerdicts
from mlrollout.notify.hooks import USER_AGENT, HookBody
from mlrollout.revision import revision_of
from mlrollout.rollout.facts import HookAnswer

pytestmark = [pytest.mark.component, pytest.mark.kmock(cls=ApplyingEmulator)]

OBJ = {"apiVersion": "mlrollout.io/v1alpha1", "kind": "ModelDeployment",
       "metadata": {"name": "wine", "namespace": "ml", "uid": "uid-1"}}  # fmt: skip
CANDIDATE = RevisionStatus(revision="rev2", number=2, model_version="v2", model_uri="file:///m.onnx", sha256="b" * 64,
                           started_at="2026-12-05T00:00:00Z")  # fmt: skip


def routes() -> dict[str, Callable[[str], Reply]]:
    return {
        "/approve": lambda _: (200, {}, b"approved by ops\n"),
        "/refuse": lambda _: (403, {}, b"change freeze until Monday"),
        "/fail": lambda _: (500, {}, b"down"),
        "/created": lambda _: (201, {}, b""),
    }


@pytest.fixture
def received() -> Received:
    return Received()


@pytest.fixture
def receiver(received: Received) -> Iterator[str]:
    with serving(recorder(received, routes())) as url:
        yield url


def secret(kmock: Any, name: str, **urls: str) -> None:
    data = {key: base64.b64encode(url.encode()).decode() for key, url in urls.items()}
    kmock.objects["v1/secrets", "ml", name] = {"apiVersion": "v1", "kind": "Secret",
                                               "metadata": {"name": name, "namespace": "ml"}, "data": data}  # fmt: skip


def policy(*hooks: dict[str, Any]) -> RolloutPolicySpec:
    return RolloutPolicySpec.model_validate({"hooks": list(hooks)})


def hook(kind: str = "confirmPromotion", key: str = "url", secret_name: str = "hooks", **extra: Any) -> dict[str, Any]:
    return {"name": "ops", "type": kind, "secretRef": {"name": secret_name, "key": key}, "timeout": "1s", **extra}


def waiting_status() -> ModelDeploymentStatus:
    entry = ApprovalStatus(hook="ops", type="confirmPromotion", revision="rev2", state="waiting",
                           since="2026-12-05T00:00:00Z")  # fmt: skip
    return ModelDeploymentStatus(phase="Progressing", candidate=CANDIDATE, traffic_split="50/50", approvals=[entry])


def count(kind: str, result: str) -> float:
    labels = {"hook_type": kind, "result": result}
    return metrics.REGISTRY.get_sample_value("mlrollout_operator_hook_calls_total", labels) or 0.0


@pytest.fixture
def caller(kmock: Any) -> Iterator[HookCaller]:
    api = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
    notifier = Notifier(Kube(api)).start()
    try:
        yield HookCaller(Kube(api), notifier.loop, retry_after=60)
    finally:
        notifier.close()


async def ask_and_wait(caller: HookCaller, pol: RolloutPolicySpec, status: ModelDeploymentStatus) -> HookAnswer:
    """Ask once (it must return at once, whatever the hook does) and wait for the answer."""
    started = time.monotonic()
    caller.ask(OBJ, status, pol)
    assert time.monotonic() - started < 0.2, "ask() waited for the hook"
    answers = await asyncio.to_thread(wait_for, lambda: caller.answers("ml", "wine", status), 10.0, "the hook's answer")
    return answers["ops"]


@pytest.mark.parametrize(
    ("path", "result", "call", "detail"),
    [
        ("/approve", "approved", "approved", "HTTP 200: approved by ops"),
        ("/refuse", "refused", "refused", "HTTP 403 Forbidden: change freeze until Monday"),
        ("/fail", "refused", "refused", "HTTP 500 Internal Server Error: down"),
        ("/created", "refused", "refused", "HTTP 201, not 200"),
    ],
)
async def test_the_hook_s_status_decides(
    kmock: Any, caller: HookCaller, receiver: str, received: Received, path: str, result: str, call: str, detail: str
) -> None:
    secret(kmock, "hooks", url=f"{receiver}{path}")
    before = count("confirmPromotion", call)
    answer = await ask_and_wait(caller, policy(hook()), waiting_status())
    assert (answer.result, answer.detail, answer.revision) == (result, detail, "rev2")
    assert count("confirmPromotion", call) == before + 1
    [(method, _, headers, raw)] = received.requests
    assert method == "POST" and headers["Content-Type"] == "application/json" and headers["User-Agent"] == USER_AGENT
    body = HookBody.model_validate_json(raw)
    assert (body.version, body.hook, body.type, body.namespace, body.model_deployment) == (
        1, "ops", "confirmPromotion", "ml", "wine")  # fmt: skip
    assert body.candidate.number == 2 and body.candidate.revision == "rev2" and body.traffic == "50/50"
    assert set(json.loads(raw)) == {a for a in (f.alias for f in HookBody.model_fields.values()) if a}


async def test_an_approval_or_a_recent_call_is_not_asked_again(
    kmock: Any, caller: HookCaller, receiver: str, received: Received
) -> None:
    secret(kmock, "hooks", url=f"{receiver}/refuse")
    status = waiting_status()
    await ask_and_wait(caller, policy(hook()), status)
    caller.ask(OBJ, status, policy(hook()))  # within retry_after: not called
    await asyncio.sleep(0.3)
    assert len(received.requests) == 1


async def test_a_hook_that_hangs_times_out_without_holding_ask(kmock: Any, caller: HookCaller) -> None:
    with silent_listener() as url:
        secret(kmock, "hooks", url=url)
        before = count("confirmRollout", "timeout")
        answer = await ask_and_wait(caller, policy(hook("confirmRollout", timeout="500ms")), waiting_status())
    assert answer.result == "no_answer" and "no answer within 0.5s" in answer.detail
    assert count("confirmRollout", "timeout") == before + 1


async def test_a_trickling_hook_is_cut_at_its_timeout_and_never_called_twice_at_once(kmock: Any) -> None:
    """A hook that answers one header line at a time (each read in time, the answer never complete) is cut at
    its timeout, whole call; asked again and again meanwhile, it never has two calls (threads) at once."""
    api = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
    notifier = Notifier(Kube(api)).start()
    caller = HookCaller(Kube(api), notifier.loop, retry_after=0.0)
    status = waiting_status()
    try:
        with trickler(every=0.2) as (url, seen):
            secret(kmock, "hooks", url=url)
            until = time.monotonic() + 4.5
            while time.monotonic() < until:
                caller.ask(OBJ, status, policy(hook("confirmRollout")))
                await asyncio.sleep(0.1)
            most = seen.most_open_at_once()
            with seen.lock:
                spans = [c - o for o, c in seen.connections if o is not None and c is not None]
            answer = caller.answers("ml", "wine", status)["ops"]
    finally:
        notifier.close()
    assert most == 1, f"{most} calls to one hook at once"
    assert len(spans) >= 2 and max(spans) < 1.0 + 0.6, spans  # 1s, plus the trickler's noticing it
    assert answer.result == "no_answer" and answer.detail == "no answer within 1s"


async def test_a_malformed_url_is_reported_without_quoting_it(
    kmock: Any, caller: HookCaller, caplog: pytest.LogCaptureFixture
) -> None:
    """urllib's InvalidURL quotes the path (and the token in it): only the error's kind is reported."""
    secret(kmock, "hooks", url="http://127.0.0.1:9/T0KEN/a b")
    with caplog.at_level(logging.DEBUG, logger="mlrollout"):
        answer = await ask_and_wait(caller, policy(hook()), waiting_status())
    assert answer.result == "no_answer" and answer.detail.startswith("InvalidURL")
    assert "T0KEN" not in answer.detail and "T0KEN" not in caplog.text


async def test_a_redirect_to_another_host_is_a_refusal_and_not_followed(kmock: Any, caller: HookCaller) -> None:
    seen, mine = Received(), Received()
    with serving(recorder(seen, routes())) as other:
        elsewhere = other.replace("127.0.0.1", "localhost")
        away = {"/away": lambda _: (307, {"Location": f"{elsewhere}/approve"}, b"")}
        with serving(recorder(mine, away)) as url:
            secret(kmock, "hooks", url=f"{url}/away")
            before = count("confirmPromotion", "redirect_refused")
            answer = await ask_and_wait(caller, policy(hook()), waiting_status())
    assert answer.result == "refused" and answer.detail == "HTTP 307 redirect to localhost, not followed"
    assert seen.requests == [] and len(mine.requests) == 1
    assert count("confirmPromotion", "redirect_refused") == before + 1


async def test_a_missing_secret_or_a_bad_url_is_no_answer_with_the_reason(kmock: Any, caller: HookCaller) -> None:
    before = count("confirmPromotion", "secret_error")
    answer = await ask_and_wait(caller, policy(hook(secret_name="nowhere")), waiting_status())
    assert answer.result == "no_answer" and answer.detail == "Secret 'nowhere' in namespace 'ml' does not exist"
    assert count("confirmPromotion", "secret_error") == before + 1
    secret(kmock, "ftp", url="ftp://files.example/approve")
    answer = await ask_and_wait(caller, policy(hook(secret_name="ftp")), waiting_status().model_copy(
        update={"candidate": CANDIDATE.model_copy(update={"started_at": "2026-12-05T00:01:00Z"})}))  # fmt: skip
    assert answer.result == "no_answer" and "not http or https" in answer.detail


async def test_the_reconciler_waits_for_confirm_rollout_and_confirm_promotion(kmock: Any, tmp_path: Path) -> None:
    """A rollout walks past both gates on approvals; refusals and no answer keep it waiting, visibly."""
    declare_operator_resources(kmock)
    kmock["get /api/v1/namespaces/ml"] << {"metadata": {"name": "ml", "labels": {}}}
    gates = [hook("confirmRollout", key="start") | {"name": "start"}, hook(key="promote") | {"name": "promote"}]
    kmock.objects["mlrollout.io/v1alpha1/rolloutpolicies", None, "fast"] = {
        **FAST_POLICY, "spec": {**FAST_POLICY["spec"], "hooks": gates}}  # fmt: skip
    kmock.objects[MD, "ml", "wine"] = md_body()
    received = Received()
    answers = {"/start": 403, "/promote": 403}
    replies: dict[str, Callable[[str], Reply]] = {
        path: (lambda p: lambda _: (answers[p], {}, b"not yet"))(path) for path in answers
    }
    with serving(recorder(received, replies)) as url:
        secret(kmock, "hooks", start=f"{url}/start", promote=f"{url}/promote")
        api = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
        notifier = Notifier(Kube(api)).start()
        caller = HookCaller(Kube(api), notifier.loop, retry_after=0.0)
        settings = OperatorSettings(serving_image=IMAGE, gateway_image="gw:test")
        rec = Reconciler(Kube(api), RecordedVerdicts(str(tmp_path)), settings, notifier=notifier, hooks=caller)
        try:
            t0 = datetime.now(UTC) - timedelta(minutes=1)  # the passes' clock stays behind the answers' real one
            seen: set[str] = set()

            async def go(at: float) -> Reconciled:
                out = await run(rec, t0 + timedelta(seconds=at))
                assert out is not None
                seen.update(out.events)
                return out

            rev1, rev2 = revision_of(spec("1", "a"), IMAGE).revision, revision_of(spec("2", "b"), IMAGE).revision
            await run(rec, t0)
            make_ready(kmock, f"wine-{rev1}")
            make_ready(kmock, "wine")
            await go(1)
            kmock.objects[MD, "ml", "wine"].patch({"spec": md_body("2", "b")["spec"], "metadata": {"generation": 2}})
            await go(2)
            make_ready(kmock, f"wine-{rev2}")
            out = await go(3)
            assert "AwaitingApproval" in out.events
            await asyncio.to_thread(wait_for, lambda: received.to("/start"), 10.0, "the confirmRollout call")
            await asyncio.sleep(0.2)
            await go(4)
            status = kmock.objects[MD, "ml", "wine"]["status"]
            assert "currentStep" not in status
            assert "waiting for approval from confirmRollout hook start" in status["message"]
            assert "refused: HTTP 403 Forbidden: not yet" in status["message"]
            answers["/start"] = 200
            await asyncio.to_thread(wait_for, lambda: len(received.to("/start")) >= 2, 10.0, "a second call")
            await asyncio.sleep(0.2)
            out = await go(5)
            assert "HookApproved" in out.events and "StepStarted" in out.events
            (tmp_path / "ml.wine.json").write_text(
                json.dumps({"verdict": "promote", "reason": "recorded", "samples": {"stable": 500, "candidate": 50}})
            )
            out = await go(7)
            assert "StepPassed" in out.events and "Promoted" not in out.events
            answers["/promote"] = 200
            await asyncio.to_thread(wait_for, lambda: received.to("/promote"), 10.0, "the confirmPromotion call")
            await asyncio.sleep(0.2)
            for _ in range(50):
                if (await go(9)).phase == "Healthy":
                    break
                await asyncio.sleep(0.1)
        finally:
            notifier.close()
    status = kmock.objects[MD, "ml", "wine"]["status"]
    assert status["phase"] == "Healthy" and status["stable"]["revision"] == rev2
    assert status.get("approvals") is None  # approvals end with the rollout
    assert len(received.to("/start")) == 2  # approved once: never asked again
    assert {"AwaitingApproval", "HookNotApproved", "HookApproved", "Promoted"} <= seen
