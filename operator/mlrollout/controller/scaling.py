"""Replica arithmetic and the HPA's words, as pure functions (the reconciler does the I/O).

With `spec.autoscaling` the stable track belongs to a HorizontalPodAutoscaler. The operator never fights
it: it applies the stable Deployment with the replica count the HPA last chose (read from the Deployment),
sizes the candidate from that count and the candidate's traffic share, and at promotion starts the new
stable at the old stable's count before the HPA is retargeted to it, so ready capacity never shrinks.
Without autoscaling every track runs `spec.replicas`, as before. The gateway's own HPA
(`spec.gateway.autoscaling`, or the operator's default) is handed its Deployment's replicas the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from mlrollout.api.modeldeployment import Autoscaling, AutoscalingStatus, TrafficStatus
from mlrollout.controller import naming
from mlrollout.rollout.actions import Role
from mlrollout_serving.contract.metrics import GATEWAY_DURATION, GATEWAY_REQUESTS, MODEL_DURATION, MODEL_REQUESTS

REQUESTS_PER_SECOND_METRIC: Final = MODEL_REQUESTS.name.removesuffix("_total") + "_per_second"
"""The Pods metric prometheus-adapter serves from the model servers' request counter (its rate per pod)."""
CONCURRENCY_METRIC: Final = MODEL_DURATION.name.removesuffix("_duration_seconds") + "_concurrency"
"""The Pods metric served from rate(duration_sum): seconds spent answering per second = requests in flight
(Little's law), so no new series is needed in the model server."""
GATEWAY_REQUESTS_PER_SECOND_METRIC: Final = GATEWAY_REQUESTS.name.removesuffix("_total") + "_per_second"
"""The gateway's Pods metric: the rate of its own request counter per pod (every track it answered for)."""
GATEWAY_CONCURRENCY_METRIC: Final = GATEWAY_DURATION.name.removesuffix("_request_duration_seconds") + "_concurrency"
"""The gateway's requests in flight per pod, from rate(its request duration's _sum), as for the model servers."""


def share_percent(step_kind: str | None, traffic: TrafficStatus | None, promoting: bool = False) -> int:
    """The share of the stable's load the candidate must carry: its live weight or its mirror, whichever is
    larger; a blue-green candidate takes all traffic at once when it switches, and so does a candidate whose
    promotion is decided (status.promoting), so both get a full fleet before the route switches."""
    if promoting or step_kind == "blueGreen":
        return 100
    if traffic is None:
        return 0
    return max(traffic.candidate, traffic.mirror)


def candidate_replicas(stable_current: int, share: int) -> int:
    """ceil(stable_current * share / 100), at least one pod (integers only: no float rounding at 1 %)."""
    return max(1, -(-max(stable_current, 0) * max(min(share, 100), 0) // 100))


def stable_replicas(own: int | None, previous_stable: int | None, scaling: Autoscaling) -> int:
    """The stable Deployment's replicas under the HPA: what the HPA last chose for it (`own`); at the promotion
    hand-over, no fewer than the old stable runs now (`previous_stable`), so the new stable starts where the
    old one is; a new Deployment starts at minReplicas. Always within the HPA's range."""
    counts = [n for n in (own, previous_stable) if n is not None]
    wanted = max(counts) if counts else scaling.min_replicas
    return min(max(wanted, scaling.min_replicas), scaling.max_replicas)


def held_replicas(own: int | None, scaling: Autoscaling) -> int:
    """The replicas of a Deployment an HPA scales outside any promotion (the gateway's): what the HPA last
    chose, clamped into its range; minReplicas for one that does not exist yet."""
    return stable_replicas(own, None, scaling)


@dataclass(frozen=True)
class Sizing:
    """What one pass needs to size each track."""

    spec_replicas: int
    autoscaling: Autoscaling | None
    current: Mapping[str, int]  # revision -> the replicas its Deployment asks for now (the HPA's choice)
    stable_before: str | None  # the stable revision at the start of the pass (differs after a promotion)
    stable_after: str | None
    share: int  # the candidate's share of the stable's load, percent

    def replicas(self, revision: str, role: Role) -> int:
        scaling = self.autoscaling
        if scaling is None:
            return self.spec_replicas
        if role == "stable":
            before = self.stable_before
            previous = self.current.get(before) if before is not None and before != revision else None
            return stable_replicas(self.current.get(revision), previous, scaling)
        stable_now = self.current.get(self.stable_after or "", scaling.min_replicas)
        return min(candidate_replicas(stable_now, self.share), scaling.max_replicas)

    def may_scale_out(self) -> bool:
        """Whether a track can have more than one pod (spread and the budget matter). Taken from the spec, not
        from the pods running now, so a candidate growing with its share never changes its pod template."""
        return (self.autoscaling.max_replicas if self.autoscaling is not None else self.spec_replicas) > 1


def owns_replicas(deployment: Mapping[str, Any], manager: str) -> bool:
    """Whether `manager` applied spec.replicas of this Deployment (its managedFields say so)."""
    for entry in (deployment.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            return True
    return False


def replicas_handover(deployment: Mapping[str, Any] | None, wanted: int) -> int | None:
    """For an autoscaled stable: the replicas to set through `naming.REPLICAS_FIELD_MANAGER` before the
    operator's own apply leaves the field out, or None when the HPA should keep it untouched.

    The operator's apply must not carry spec.replicas of a Deployment the HPA scales (it would undo the HPA,
    and a pass racing an HPA write would scale it back). Leaving the field out of an apply whose manager
    alone owns it would *remove* it (back to 1 pod), so a second manager sets it first: then the field is
    co-owned, survives, and the HPA's next write takes it. That second apply is sent only when the field is
    still the operator's (a promoted candidate, the first pass after autoscaling was switched on) or the count
    must change (the promotion hand-over, clamping into the HPA's range); never in a steady state."""
    if deployment is None:
        return None
    current = int((deployment.get("spec") or {}).get("replicas", 1))
    if wanted != current or owns_replicas(deployment, naming.FIELD_MANAGER):
        return wanted
    return None


def current_replicas(deployments: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """revision -> spec.replicas of each model-server Deployment (what the HPA or the operator last set)."""
    out: dict[str, int] = {}
    for dep in deployments:
        labels = (dep.get("metadata") or {}).get("labels") or {}
        rev = labels.get(naming.REVISION)
        if rev and labels.get(naming.COMPONENT) == naming.SERVER_COMPONENT:
            out[rev] = int((dep.get("spec") or {}).get("replicas", 1))
    return out


def hpa_status(hpa: Mapping[str, Any] | None, target: str) -> AutoscalingStatus:
    """The HPA's status in ours. ScalingActive=False (it cannot read its metric, a missing cpu request, an
    adapter that is not installed) means it holds the replicas where they are: said, never fatal."""
    status = (hpa or {}).get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "ScalingActive"), None)
    active: Literal["True", "False", "Unknown"] = "Unknown"
    message = ""
    if cond is not None and cond.get("status") in ("True", "False"):
        active = "True" if cond["status"] == "True" else "False"
        if active == "False":
            message = f"{cond.get('reason') or 'ScalingInactive'}: {cond.get('message') or ''}".strip()[:1000]
    return AutoscalingStatus(
        target=target,
        current_replicas=status.get("currentReplicas"),
        desired_replicas=status.get("desiredReplicas"),
        scaling_active=active,
        message=message,
    )
