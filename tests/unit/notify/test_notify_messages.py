"""Notifications as pure values: which transitions are which notification, the bodies, the Slack cut, the
sink matching, the backoff and the Event gate (docs/notifications.md)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from tests.unit.rollout.test_rollout_approval import rollout_waiting
from tests.unit.rollout.world import World, policy, spec

from mlrollout.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from mlrollout.api.rolloutpolicy import NOTIFICATION_EVENTS, Notifications, RolloutPolicy
from mlrollout.notify.hooks import HookBody
from mlrollout.notify.http import check_url
from mlrollout.notify.messages import (
    SLACK_TEXT_LIMIT,
    EventGate,
    NotificationBody,
    backoff,
    body_of,
    deliveries,
    slack_body,
)
from mlrollout.policy import resolve_rollout_policy
from mlrollout.rollout import Action, RecordEvent

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
OBJ = {"apiVersion": "mlrollout.io/v1alpha1", "kind": "ModelDeployment",
       "metadata": {"name": "wine", "namespace": "ml", "uid": "uid-1"}}  # fmt: skip


def tagged(actions: list[Action]) -> dict[str, tuple[str, ...]]:
    return {a.reason: a.notify for a in actions if isinstance(a, RecordEvent) and a.notify}


def notifications(*sinks: dict[str, Any]) -> Notifications:
    return Notifications.model_validate({"sinks": list(sinks)})


def sink(name: str, kind: str, *events: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "secretRef": {"name": "hooks", "key": name}, "events": list(events)}


# -- which transition is which notification (the state machine tags its own Events) ------------------------


def test_a_rollout_that_promotes_is_started_step_passed_and_promoted() -> None:
    w = World()
    w.deploy_healthy()
    w.md_spec = spec("2", "b")
    assert tagged(w.tick()) == {"RolloutStarted": ("RolloutStarted",)}
    w.make_ready()
    w.tick()
    assert tagged(w.give_verdict("promote", requests=50)) == {"StepPassed": ("StepPassed",)}
    w.give_verdict("promote", requests=50)
    assert tagged(w.give_verdict("promote", requests=50)) == {"StepPassed": ("StepPassed",), "Promoted": ("Promoted",)}


def test_a_rollout_waiting_for_an_approval_hook_says_so_once() -> None:
    w = rollout_waiting("confirmRollout")
    assert tagged(w.tick(1)) == {"AwaitingApproval": ("AwaitingApproval",)}
    assert tagged(w.tick(1)) == {}  # still waiting: not said again


def test_a_rollback_is_rolled_back_and_the_phase_it_leaves_degraded() -> None:
    w = World()
    w.start_rollout()
    assert tagged(w.give_verdict("rollback", requests=60)) == {
        "AnalysisFailed": ("RolledBack",),
        "PhaseDegraded": ("Degraded",),
    }


def test_a_step_out_of_time_is_inconclusive_and_what_the_policy_made_of_it() -> None:
    w = World()
    w.start_rollout()
    assert tagged(w.tick(301))["Inconclusive"] == ("RolledBack", "Inconclusive")
    w = World(pol=policy(onInconclusive={"action": "hold"}))
    w.start_rollout()
    assert tagged(w.tick(301)) == {"RolloutHeld": ("Held", "Inconclusive")}


def test_on_failure_pause_is_held() -> None:
    w = World(pol=policy(onFailure="pause"))
    w.start_rollout()
    assert tagged(w.give_verdict("rollback", requests=60)) == {"RolloutHeld": ("Held",)}


# -- bodies ---------------------------------------------------------------------------------------------------


def promoted_status() -> tuple[list[Action], ModelDeploymentStatus]:
    w = World(pol=policy(steps=[{"canary": {"weight": 10, "minRequests": 10, "maxDuration": "5m"}}]))
    w.start_rollout()
    actions = w.give_verdict("promote", requests=50)
    return actions, w.s


def test_the_webhook_body_is_the_documented_schema_at_version_1() -> None:
    actions, status = promoted_status()
    [promoted] = [a for a in actions if isinstance(a, RecordEvent) and a.reason == "Promoted"]
    body = body_of(promoted, OBJ["metadata"], status, NOW)  # type: ignore[arg-type]
    wire = json.loads(body.model_dump_json(by_alias=True))
    assert wire["version"] == 1 and wire["event"] == "Promoted" and wire["events"] == ["Promoted"]
    assert wire["namespace"] == "ml" and wire["modelDeployment"] == "wine" and wire["uid"] == "uid-1"
    assert wire["severity"] == "normal" and wire["time"] == "2026-12-04T21:00:00Z"
    assert wire["stable"]["number"] == 2 and wire["stable"]["modelVersion"] == "2" and wire["candidate"] is None
    assert wire["phase"] == status.phase and wire["traffic"] == status.traffic_split
    assert NotificationBody.model_validate(wire) == body  # a receiver can parse what it gets with the model


def test_slack_body_is_text_and_blocks_and_a_long_message_is_cut_with_a_note() -> None:
    record = RecordEvent("Warning", "AnalysisFailed", "x" * 10_000, ("RolledBack",))
    body = body_of(record, OBJ["metadata"], ModelDeploymentStatus(), NOW)  # type: ignore[arg-type]
    slack = slack_body(body)
    assert set(slack) == {"text", "blocks"}
    section = slack["blocks"][0]["text"]["text"]
    assert len(slack["text"]) <= SLACK_TEXT_LIMIT and len(section) <= SLACK_TEXT_LIMIT
    assert "truncated" in section and "kubectl describe modeldeployment -n ml wine" in section
    assert section.startswith(":warning: *RolledBack* ml/wine: xxx")
    short = slack_body(body.model_copy(update={"message": "fine"}))
    assert "truncated" not in short["text"] and short["text"].endswith("ml/wine: fine")


def test_each_sink_gets_the_transitions_it_asked_for_once() -> None:
    record = RecordEvent("Warning", "Inconclusive", "step 0 ran past maxDuration", ("RolledBack", "Inconclusive"))
    subs = notifications(
        sink("rollbacks", "webhook", "RolledBack"),
        sink("both", "slack", "Inconclusive", "RolledBack"),
        sink("stuck", "webhook", "Inconclusive"),
        sink("good-news", "slack", "Promoted"),
    )
    out = deliveries(subs, [record], OBJ, ModelDeploymentStatus(), NOW)
    assert [(d.sink, d.event) for d in out] == [
        ("rollbacks", "RolledBack"),
        ("both", "RolledBack"),
        ("stuck", "Inconclusive"),
    ]
    webhook = json.loads(out[2].body)
    assert webhook["event"] == "Inconclusive" and webhook["events"] == ["RolledBack", "Inconclusive"]
    assert set(json.loads(out[1].body)) == {"text", "blocks"}
    assert out[0].secret.key == "rollbacks" and out[0].timeout == 5.0 and out[0].retries == 3
    assert out[0].involved["metadata"]["uid"] == "uid-1"


def test_untagged_events_and_a_policy_without_notifications_send_nothing() -> None:
    plain = RecordEvent("Normal", "StepStarted", "step 1 started")
    assert deliveries(notifications(sink("all", "webhook", *NOTIFICATION_EVENTS)), [plain], OBJ,
                      ModelDeploymentStatus(), NOW) == []  # fmt: skip
    assert deliveries(None, [RecordEvent("Normal", "Promoted", "p", ("Promoted",))], OBJ,
                      ModelDeploymentStatus(), NOW) == []  # fmt: skip


# -- the policy field: the platform team's, inherited, not overridable ------------------------------------------


def test_a_model_deployment_inherits_notifications_and_its_overrides_keep_them() -> None:
    subs = {"notifications": {"sinks": [sink("team", "slack", "Promoted")]}}
    pol = RolloutPolicy.model_validate({"metadata": {"name": "platform"}, "spec": subs})
    md_spec = {**spec().to_dict(), "rolloutPolicyRef": {"name": "platform"}, "strategy": {"alpha": 0.01}}
    md = ModelDeployment.model_validate({"metadata": {"name": "wine", "namespace": "ml"}, "spec": md_spec})
    resolved = resolve_rollout_policy(md, {}, [pol])
    assert resolved.spec.significance.alpha == 0.01
    assert resolved.spec.notifications == pol.spec.notifications


def test_a_model_deployment_cannot_set_notifications() -> None:
    with pytest.raises(ValueError, match="notifications"):
        md_spec = {**spec().to_dict(), "strategy": {"notifications": {"sinks": []}}}
        ModelDeployment.model_validate({"metadata": {"name": "wine", "namespace": "ml"}, "spec": md_spec})


def test_sink_defaults() -> None:
    [only] = notifications(sink("team", "webhook", "Held")).sinks
    assert (only.timeout, only.retries) == ("5s", 3)


# -- delivery rules that are pure --------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n, 0.5, 3.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_event_gate_lets_one_failure_event_through_per_interval_and_counts_the_rest() -> None:
    gate = EventGate(300)
    key = ("ml", "wine", "team")
    assert gate.allow(key, 0) == 0
    assert [gate.allow(key, t) for t in (1, 2, 299)] == [None, None, None]
    assert gate.allow(("ml", "wine", "other"), 5) == 0  # each sink on its own
    assert gate.allow(key, 300) == 3
    assert gate.allow(key, 301) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example/x", "scheme is 'ftp'"),
        ("hooks.example/x", "scheme is 'missing'"),
        ("https:///x", "no host"),
        ("https://hooks.example/services/T0/B0/secret", None),
    ],
)
def test_sink_urls_are_http_or_https_and_never_echoed(url: str, why: str | None) -> None:
    said = check_url(url)
    assert (said is None) == (why is None)
    if why is not None:
        assert said is not None and why in said and "hooks.example" not in said


@pytest.mark.parametrize(
    ("section", "model"), [("## The webhook body", NotificationBody), ("### The hook body", HookBody)]
)
def test_the_documented_example_body_is_the_schema_with_every_field(section: str, model: type[BaseModel]) -> None:
    page = (Path(__file__).resolve().parents[3] / "docs" / "notifications.md").read_text()
    part = page.split(section)[1]
    [example] = re.findall(r"```json\n(.*?)```", part, re.DOTALL)[:1]
    wire = json.loads(example)
    body = model.model_validate(wire)
    assert set(wire) == {f.alias or name for name, f in model.model_fields.items()}
    assert json.loads(body.model_dump_json(by_alias=True)) == wire
    table = part.split("```json")[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", table, re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert documented == set(wire)
