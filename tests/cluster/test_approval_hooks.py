"""Approval hooks against the real control plane and the real operator (`kopf run` under the chart's RBAC):
hooks are real HTTP receivers on loopback started by the test, their URLs in a real Secret that the test
rotates to change what the hook does (docs/notifications.md, "Approval hooks").

A confirmRollout hook that refuses, then approves; a confirmPromotion hook that hangs, then redirects to
another host, then approves; a confirmRollout hook whose Secret is missing until it is created; a
preRollout hook whose refusal rolls the candidate back with its reason.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.cluster import test_operator
from tests.cluster.test_operator import Env, md_manifest, steps_policy, unique
from tests.support.httpd import Received, Reply, recorder, serving, silent_listener

pytestmark = pytest.mark.cluster
operator_env = test_operator.env  # the operator tests' world, under this module's name

ONE_CANARY = [{"canary": {"weight": 20, "minRequests": 10, "maxDuration": "10m"}}]
HOOK_WAIT = 60.0  # a hook not yet approved is asked again 10 s after its last call, then read on the next pass


def hook(name: str, kind: str, key: str) -> dict[str, Any]:
    return {"name": name, "type": kind, "secretRef": {"name": "rollout-hooks", "key": key}, "timeout": "1s"}


def put_secret(env: Env, **urls: str) -> None:
    data = {key: base64.b64encode(url.encode()).decode() for key, url in urls.items()}
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rollout-hooks"}, "data": data}
    env.apply(manifest)


def message(status: dict[str, Any]) -> str:
    return str(status.get("message") or "")


def progressing_reason(status: dict[str, Any]) -> str:
    return next((c.get("reason", "") for c in status.get("conditions") or [] if c["type"] == "Progressing"), "")


@pytest.fixture
def hooks() -> Iterator[tuple[str, Received, dict[str, int]]]:
    """A receiver whose /start and /board answer the status in ``codes`` (change it to change the answer) and
    /approve answers 200; yields its URL, what it received and the codes."""
    received = Received()
    codes = {"/start": 409, "/board": 409, "/acceptance": 500}
    reasons = {409: b"change freeze until Monday", 500: b"holdout accuracy 0.71 < 0.80", 200: b"ok"}

    def answer(path: str) -> Callable[[str], Reply]:
        return lambda _: (codes[path], {}, reasons[codes[path]])

    routes = {path: answer(path) for path in codes} | {"/approve": lambda _: (200, {}, b"approved")}
    with serving(recorder(received, routes)) as url:
        yield url, received, codes


def test_confirm_hooks_refuse_hang_redirect_and_approve(
    operator_env: Env, hooks: tuple[str, Received, dict[str, int]]
) -> None:
    env, (url, received, codes) = operator_env, hooks
    seen_elsewhere = Received()
    with silent_listener() as hang, serving(recorder(seen_elsewhere, {"/approve": lambda _: (200, {}, b"")})) as other:
        put_secret(env, start=f"{url}/start", board=hang)
        gates = [hook("start", "confirmRollout", "start"), hook("board", "confirmPromotion", "board")]
        policy = env.policy(steps_policy(unique("gated"), ONE_CANARY, hooks=gates))
        env.healthy_v1("wine", policy)
        env.verdict("wine", "continue", 0)
        env.apply(md_manifest("wine", "2", policy))

        # confirmRollout refuses: the ready candidate waits before its first step, visibly, without traffic
        st = env.wait_status("wine", "the refusal in status", lambda s: "change freeze" in message(s), HOOK_WAIT)
        assert "waiting for approval from confirmRollout hook start" in message(st)
        assert "refused: HTTP 409 Conflict: change freeze until Monday" in message(st)
        assert not st.get("currentStep") and st["phase"] == "Progressing" and st["trafficSplit"] == "100/0"
        assert progressing_reason(st) == "WaitingForApproval"
        assert {"AwaitingApproval", "HookNotApproved"} <= {e["reason"] for e in env.events("wine")}

        codes["/start"] = 200
        st = env.step("wine", 0)
        assert [a["state"] for a in st["approvals"]] == ["approved"] and st["trafficSplit"] == "80/20"
        asked = len(received.to("/start"))

        # the last step passes; confirmPromotion hangs: its timeout is the answer, the split stays
        env.verdict("wine", "promote", 50)
        st = env.wait_status("wine", "the hang in status", lambda s: "no answer within 1s" in message(s), HOOK_WAIT)
        assert "waiting for approval from confirmPromotion hook board" in message(st)
        assert st["currentStep"]["passed"] and st["trafficSplit"] == "80/20"

        # a redirect to another host: a refusal, not followed (the Secret is read at every call)
        elsewhere = other.replace("127.0.0.1", "localhost")
        away = {"/away": lambda _: (307, {"Location": f"{elsewhere}/approve"}, b"")}
        with serving(recorder(Received(), away)) as redirector:
            put_secret(env, start=f"{url}/start", board=f"{redirector}/away")
            env.wait_status(
                "wine", "the redirect refused", lambda s: "redirect to localhost, not followed" in message(s), HOOK_WAIT
            )
        assert seen_elsewhere.requests == []

        put_secret(env, start=f"{url}/start", board=f"{url}/approve")
        st = env.wait_status(
            "wine", "promoted", lambda s: s.get("phase") == "Healthy" and not s.get("candidate"), HOOK_WAIT
        )
    assert st["stable"]["modelVersion"] == "2"
    assert "confirmed by the confirmPromotion hooks" in st["history"][-1]["reason"]
    assert not st.get("approvals")
    assert len(received.to("/start")) == asked  # approved: never asked again
    reasons = {e["reason"] for e in env.events("wine")}
    assert {"HookApproved", "Promoted"} <= reasons
    exported = env.operator.metrics()
    for kind, result in [("confirmRollout", "refused"), ("confirmRollout", "approved"),
                         ("confirmPromotion", "timeout"), ("confirmPromotion", "redirect_refused"),
                         ("confirmPromotion", "approved")]:  # fmt: skip
        assert f'mlrollout_operator_hook_calls_total{{hook_type="{kind}",result="{result}"}}' in exported, kind


def test_a_missing_secret_waits_and_a_refused_pre_rollout_hook_rolls_back(
    operator_env: Env, hooks: tuple[str, Received, dict[str, int]]
) -> None:
    env, (url, received, _) = operator_env, hooks
    gates = [hook("start", "confirmRollout", "start"), hook("acceptance", "preRollout", "acceptance")]
    policy = env.policy(steps_policy(unique("pre"), ONE_CANARY, hooks=gates))
    env.healthy_v1("wine", policy)
    env.apply(md_manifest("wine", "2", policy))
    st = env.wait_status("wine", "the missing Secret in status", lambda s: "does not exist" in message(s), HOOK_WAIT)
    assert f"Secret 'rollout-hooks' in namespace '{env.namespace}' does not exist" in message(st)

    put_secret(env, start=f"{url}/approve", acceptance=f"{url}/acceptance")
    st = env.wait_status("wine", "rolled back", lambda s: s.get("phase") == "Degraded", HOOK_WAIT)
    assert "PreRolloutRefused" in st["heldBack"]["reason"]
    assert "holdout accuracy 0.71 < 0.80" in st["heldBack"]["reason"] and not st.get("candidate")
    assert st["trafficSplit"] == "100/0" and not st.get("approvals")
    assert len(received.to("/acceptance")) == 1
    assert "PreRolloutRefused" in {e["reason"] for e in env.events("wine")}
