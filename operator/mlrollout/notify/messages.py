"""Pure message building: a transition (the state machine's `RecordEvent`) and the ModelDeployment as the
pass left it in, to one delivery per sink that asked for it. No I/O, no clock of its own.

The generic webhook body is `NotificationBody` (its JSON schema is the contract, versioned by `version`);
the Slack body is Slack's incoming-webhook format, `{"text": ..., "blocks": [...]}`, cut to Slack's limits
with a note saying so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mlrollout.api.common import parse_duration
from mlrollout.api.modeldeployment import ModelDeploymentStatus, RevisionStatus
from mlrollout.api.rolloutpolicy import NotificationEvent, Notifications, NotificationSink, SecretKeyRef
from mlrollout.rollout.actions import RecordEvent
from mlrollout.rollout.timefmt import fmt

SCHEMA_VERSION: Final = 1
SLACK_TEXT_LIMIT: Final = 3000
"""Slack refuses a section block whose text is longer (and shows no more of the fallback text)."""

SinkKind = Literal["webhook", "slack"]


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


class NotificationRevision(_Body):
    """A revision as a notification names it."""

    number: int = Field(description="The revision's sequence number (`kubectl mlrollout undo --to-revision`).")
    revision: str = Field(description="Hash of the pod-affecting spec.")
    model_version: str = Field(description="The model's version label.")
    sha256: str = Field(description="The model file's digest.")


class NotificationBody(_Body):
    """The generic webhook body (`kind: webhook`), sent as JSON with camelCase keys. A receiver checks
    `version`: fields may be added within a version, never removed or changed in meaning."""

    version: Literal[1] = Field(default=SCHEMA_VERSION, description="Version of this schema.")
    event: NotificationEvent = Field(description="The notification this is (the first of `events`).")
    events: list[NotificationEvent] = Field(
        description="Every notification the transition is, e.g. RolledBack and Inconclusive for a step that "
        "ran out of time and was rolled back; a sink gets one message if it asked for any of them."
    )
    reason: str = Field(description="The reason of the Kubernetes Event posted for the same transition.")
    message: str = Field(description="The Event's message: what happened and why.")
    severity: Literal["normal", "warning"] = Field(description="warning for rollbacks, holds and Degraded.")
    time: str = Field(description="When the operator decided it (RFC 3339, UTC).")
    namespace: str = Field(description="The ModelDeployment's namespace.")
    model_deployment: str = Field(description="The ModelDeployment's name.")
    uid: str | None = Field(description="The ModelDeployment's uid.")
    phase: str | None = Field(description="Its phase after the transition (Healthy, Progressing, Degraded, ...).")
    policy: str | None = Field(description="The governing RolloutPolicy and how it was chosen.")
    traffic: str | None = Field(
        description="The traffic split after the transition, e.g. `75/25` or `100/0 mirror 50%`."
    )
    stable: NotificationRevision | None = Field(description="The stable revision after the transition.")
    candidate: NotificationRevision | None = Field(description="The candidate in rollout after it, if any.")


@dataclass(frozen=True)
class Delivery:
    """One body for one sink, with what the delivery needs to find the URL and to report on it."""

    sink: str
    kind: SinkKind
    event: NotificationEvent
    namespace: str
    model_deployment: str
    secret: SecretKeyRef
    body: bytes
    timeout: float
    retries: int
    involved: Mapping[str, Any]  # the ModelDeployment's apiVersion, kind and metadata, for a failure Event


def _revision(rev: RevisionStatus | None) -> NotificationRevision | None:
    if rev is None:
        return None
    return NotificationRevision(
        number=rev.number, revision=rev.revision, model_version=rev.model_version, sha256=rev.sha256
    )


def body_of(
    record: RecordEvent, meta: Mapping[str, Any], status: ModelDeploymentStatus, now: datetime
) -> NotificationBody:
    """The generic body of a transition that is at least one notification."""
    assert record.notify, "only transitions the state machine tagged are notifications"
    return NotificationBody(
        event=record.notify[0],
        events=list(record.notify),
        reason=record.reason,
        message=record.message,
        severity="warning" if record.type == "Warning" else "normal",
        time=fmt(now),
        namespace=str(meta.get("namespace", "")),
        model_deployment=str(meta.get("name", "")),
        uid=str(meta["uid"]) if meta.get("uid") else None,
        phase=status.phase,
        policy=status.policy,
        traffic=status.traffic_split,
        stable=_revision(status.stable),
        candidate=_revision(status.candidate),
    )


def _cut(text: str, limit: int, where: str) -> str:
    """``text`` within ``limit`` characters, ending in a note that says what was cut and where the rest is."""
    if len(text) <= limit:
        return text
    note = f"… [truncated: {len(text) - limit} more characters; `{where}` shows all]"
    return text[: max(limit - len(note), 0)] + note


def slack_body(body: NotificationBody) -> dict[str, Any]:
    """Slack's incoming-webhook JSON: `text` (notifications, screen readers) and blocks (the message)."""
    icon = ":warning:" if body.severity == "warning" else ":white_check_mark:"
    where = f"kubectl describe modeldeployment -n {body.namespace} {body.model_deployment}"
    headline = f"{icon} *{body.event}* {body.namespace}/{body.model_deployment}"
    text = _cut(f"{headline}: {body.message}", SLACK_TEXT_LIMIT, where)
    facts = [
        f"*phase* {body.phase or '-'}",
        f"*traffic* {body.traffic or '-'}",
        f"*stable* {_slack_revision(body.stable)}",
        f"*candidate* {_slack_revision(body.candidate)}",
        f"*policy* {body.policy or '-'}",
    ]
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(f, 300, where)} for f in facts]},
        ],
    }


def _slack_revision(rev: NotificationRevision | None) -> str:
    return f"{rev.number} ({rev.model_version})" if rev is not None else "-"


def payload(kind: SinkKind, body: NotificationBody) -> bytes:
    """The bytes a sink of ``kind`` receives (UTF-8 JSON)."""
    if kind == "slack":
        return json.dumps(slack_body(body), ensure_ascii=False).encode()
    return body.model_dump_json(by_alias=True).encode()


def wanted(sink: NotificationSink, record: RecordEvent) -> NotificationEvent | None:
    """The first of the transition's notifications the sink asked for (None: the sink gets nothing)."""
    return next((e for e in record.notify if e in sink.events), None)


def deliveries(
    notifications: Notifications | None,
    actions: Sequence[object],
    obj: Mapping[str, Any],
    status: ModelDeploymentStatus,
    now: datetime,
) -> list[Delivery]:
    """Every delivery a pass's actions call for under the effective policy's notifications."""
    if notifications is None:
        return []
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    involved = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": dict(meta)}
    out: list[Delivery] = []
    for record in actions:
        if not isinstance(record, RecordEvent) or not record.notify:
            continue
        body = body_of(record, meta, status, now)
        for sink in notifications.sinks:
            event = wanted(sink, record)
            if event is None:
                continue
            out.append(
                Delivery(
                    sink=sink.name,
                    kind=sink.kind,
                    event=event,
                    namespace=body.namespace,
                    model_deployment=body.model_deployment,
                    secret=sink.secret_ref,
                    body=payload(sink.kind, body.model_copy(update={"event": event})),
                    timeout=parse_duration(sink.timeout),
                    retries=sink.retries,
                    involved=involved,
                )
            )
    return out


def backoff(attempt: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): doubling from ``base``, at most ``cap``."""
    return float(min(base * 2 ** (attempt - 1), cap))


class EventGate:
    """At most one failure Event per key in ``interval`` seconds, so a dead sink cannot flood Events; the
    failures held back in between are counted and said in the next one."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[tuple[str, ...], float] = {}
        self._held: dict[tuple[str, ...], int] = {}

    def allow(self, key: tuple[str, ...], now: float) -> int | None:
        """The number of failures held back since the last Event when one may be posted now, else None."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
