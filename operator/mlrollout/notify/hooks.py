"""Approval hooks on the wire: the JSON body the operator POSTs (`HookBody`, versioned like the notification
body) and one call, whose answer is a value. HTTP 200 approves; any other status refuses; a redirect is a
refusal and never followed (it would hand the rollout's state to a host the Secret never named); no answer
(timeout, refused connection, a bad URL) is no answer, asked again later. The whole call, connection to last
byte, ends within the hook's timeout (a `Deadline` inside the calling thread: a thread cannot be stopped from
outside, so a hook that trickles bytes must not be able to hold one).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import Field

from mlrollout.api.modeldeployment import ModelDeploymentStatus
from mlrollout.api.rolloutpolicy import Hook, HookType
from mlrollout.notify.http import OPENER, Deadline, DeadlineRequest, check_url, error_detail
from mlrollout.notify.messages import NotificationRevision, _Body, _revision
from mlrollout.rollout.facts import HookResult
from mlrollout.rollout.timefmt import fmt

SCHEMA_VERSION: Final = 1
USER_AGENT: Final = "mlrollout-operator (approval hooks)"
CallResult = Literal["approved", "refused", "redirect_refused", "timeout", "unreachable", "bad_url", "secret_error"]
"""How a call ended: the `result` label of `mlrollout_operator_hook_calls_total`."""


class HookStep(_Body):
    """Where the rollout is when the hook is asked."""

    index: int = Field(description="The step's index in the policy's strategy (0-based).")
    kind: str = Field(description="shadow, canary, pause or blueGreen.")
    steps: int = Field(description="How many steps the strategy has.")
    passed: bool = Field(description="Whether the step passed (confirmPromotion: the last step, passed).")


class HookVerdict(_Body):
    """The last analysis verdict on the candidate."""

    verdict: str = Field(description="promote, continue, inconclusive or rollback.")
    reason: str = Field(description="Why, in one line.")
    time: str = Field(description="When the look was taken (RFC 3339).")


class HookBody(_Body):
    """What an approval hook receives (JSON, camelCase keys). A receiver checks `version`: fields may be added
    within a version, never removed or changed in meaning. Answer HTTP 200 to approve."""

    version: Literal[1] = Field(default=SCHEMA_VERSION, description="Version of this schema.")
    hook: str = Field(description="The hook's name in the policy.")
    type: HookType = Field(description="confirmRollout, preRollout or confirmPromotion.")
    time: str = Field(description="When the operator asked (RFC 3339, UTC).")
    namespace: str = Field(description="The ModelDeployment's namespace.")
    model_deployment: str = Field(description="The ModelDeployment's name.")
    uid: str | None = Field(description="The ModelDeployment's uid.")
    phase: str | None = Field(description="Its phase (Progressing while it waits).")
    policy: str | None = Field(description="The governing RolloutPolicy and how it was chosen.")
    candidate: NotificationRevision = Field(description="The revision the approval is about.")
    stable: NotificationRevision | None = Field(description="The revision serving now.")
    traffic: str | None = Field(description="The split in force, e.g. `100/0` (no traffic before the first step).")
    step: HookStep | None = Field(description="The step (null before the first: confirmRollout, preRollout).")
    verdict: HookVerdict | None = Field(description="The last analysis verdict (null before any look).")


def hook_body(
    hook: Hook, meta: Mapping[str, Any], status: ModelDeploymentStatus, steps: int, now: datetime
) -> HookBody:
    """The body of one call about the status' candidate."""
    candidate = _revision(status.candidate)
    assert candidate is not None, "hooks are asked about a candidate"
    step, last = status.current_step, status.last_analysis
    return HookBody(
        hook=hook.name,
        type=hook.type,
        time=fmt(now),
        namespace=str(meta.get("namespace", "")),
        model_deployment=str(meta.get("name", "")),
        uid=str(meta["uid"]) if meta.get("uid") else None,
        phase=status.phase,
        policy=status.policy,
        candidate=candidate,
        stable=_revision(status.stable),
        traffic=status.traffic_split,
        step=None
        if step is None
        else HookStep(index=step.index, kind=step.kind, steps=steps, passed=step.passed is not None),
        verdict=None if last is None else HookVerdict(verdict=last.verdict, reason=last.reason, time=last.time),
    )


@dataclass(frozen=True)
class Answer:
    """How one call ended: the machine's word (`result`), the metric's (`call`), and what happened in words."""

    result: HookResult
    call: CallResult
    detail: str


def call_sync(url: str, body: bytes, timeout: float) -> Answer:
    """One POST, all of it within ``timeout``; no redirect is followed. Never raises."""
    bad = check_url(url)
    if bad is not None:
        return Answer("no_answer", "bad_url", bad)
    with Deadline(timeout) as deadline:
        answer = _exchange(url.strip(), body, timeout, deadline)
    if deadline.expired:  # whatever the cut read raised, or an answer cut short: not an answer
        return Answer("no_answer", "timeout", f"no answer within {timeout:g}s")
    return answer


def _exchange(url: str, body: bytes, timeout: float, deadline: Deadline) -> Answer:
    try:
        with OPENER.open(DeadlineRequest(url, body, USER_AGENT, deadline), timeout=timeout) as response:
            text = response.read(512).decode(errors="replace").strip()
            code = int(response.status)
    except urllib.error.HTTPError as exc:
        code, location = exc.code, exc.headers.get("Location") if exc.headers else None
        text = exc.read(512).decode(errors="replace").strip() if exc.fp is not None else ""
        exc.close()
        if 300 <= code < 400:
            host = urllib.parse.urlsplit(urllib.parse.urljoin(url, location)).hostname if location else None
            where = f" to {host}" if host else ""
            return Answer("refused", "redirect_refused", f"HTTP {code} redirect{where}, not followed")
        return Answer("refused", "refused", f"HTTP {code} {exc.reason}{_said(text)}")
    except TimeoutError:
        return Answer("no_answer", "timeout", f"no answer within {timeout:g}s")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return Answer("no_answer", "timeout", f"no answer within {timeout:g}s")
        return Answer("no_answer", "unreachable", f"cannot connect: {exc.reason}")
    except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, malformed answer, invalid URL
        return Answer("no_answer", "unreachable", error_detail(exc))
    if code != 200:
        return Answer("refused", "refused", f"HTTP {code}, not 200{_said(text)}")
    return Answer("approved", "approved", f"HTTP 200{_said(text)}")


def _said(text: str) -> str:
    """The first line of what the hook answered (its reason for a refusal), short."""
    line = text.splitlines()[0][:200] if text else ""
    return f": {line}" if line else ""
