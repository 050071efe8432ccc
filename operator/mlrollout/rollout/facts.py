"""What the controller observed, as plain values: the only input of the state machine besides status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from mlrollout.api.analysis import Judgement
from mlrollout.api.commands import Command
from mlrollout.api.modeldeployment import RevisionStatus
from mlrollout_serving.contract.evaluation import EvaluationReport


@dataclass(frozen=True)
class TrackFacts:
    """One revision's Deployment and pods, as seen now."""

    exists: bool = False
    ready: bool = False  # fully rolled out: every desired replica updated and ready
    available: bool = False  # at least one ready replica: it can answer
    replicas: int = 0  # spec.replicas: what the Deployment asks for now (the HPA's choice for an autoscaled stable)
    ready_replicas: int = 0
    crash_looping: bool = False
    digest_mismatch: bool = False  # the model server refused the file: sha256 differs
    config_error: bool = False  # the pods cannot be started as specified (e.g. the credentials Secret is missing)
    detail: str = ""  # what the pods say, for the message (e.g. "server: CrashLoopBackOff, 5 restarts")
    # how far a starting pod is with its model, from its log (e.g. "downloading the model: 412.0 of 900.0 MiB
    # (45%)"); empty when no pod is starting or its log says nothing (contract.startup)
    startup: str = ""


MISSING = TrackFacts()


Acceptance = Literal["True", "False", "Unknown"]
"""Whether the implementation serves the route object: its own word (Gateway API: the HTTPRoute's
``status.parents`` conditions for our Gateway); Unknown until it says."""

MirrorSupport = Literal["percent", "full", "none"]
"""What the implementation can mirror: any share, only every request, or nothing."""


@dataclass(frozen=True)
class Routing:
    """The traffic provider and what its implementation reports; the built-in gateway reports through
    ``Facts.gateway`` instead, Istio reports nothing (``accepted`` None: not checked)."""

    provider: str = "builtin"
    accepted: Acceptance | None = None
    detail: str = ""  # the implementation's conditions, or why nothing is known (the Gateway is missing)
    mirror: MirrorSupport | None = None  # None: the implementation does not say (assumed able)
    not_applied: tuple[str, ...] = ()  # what this ModelDeployment asks of a provider that cannot do it

    def served(self) -> bool:
        """No implementation has refused the route, and one has accepted it where acceptance is reported."""
        return self.accepted is None or self.accepted == "True"

    def cannot_mirror(self, percent: int) -> str | None:
        """Why mirroring ``percent`` of requests cannot happen here, or None when it can."""
        if percent <= 0 or self.mirror is None or self.mirror == "percent":
            return None
        if self.mirror == "full" and percent >= 100:
            return None
        what = "RequestMirror" if self.mirror == "none" else f"mirroring a share ({percent}%; only 100% here)"
        return f"the {self.provider} implementation does not support {what} (its GatewayClass says so)"


@dataclass(frozen=True)
class Look:
    """One look of the analysis at the candidate: the judge's answer, when, and about which revision."""

    judgement: Judgement
    time: datetime
    candidate_revision: str
    source: Literal["gateway", "model"] | None = None  # whose series it read (None: a recorded judgement)


@dataclass(frozen=True)
class Unresolved:
    """The registry could not say what the spec's models:/ URI is; ``final`` when asking again cannot help
    (no such version, not an ONNX model, digest mismatch), else it was down, slow or still registering."""

    reason: str
    final: bool


HookResult = Literal["approved", "refused", "no_answer"]
"""An approval hook's answer: HTTP 200, another HTTP status (a redirect too: never followed), or none (timeout,
unreachable, the Secret or its URL missing)."""


@dataclass(frozen=True)
class HookAnswer:
    """The latest answer of one approval hook about one candidate revision (the controller calls it off the
    reconcile pass; the machine only reads the answer)."""

    hook: str
    revision: str
    result: HookResult
    detail: str  # in words for status and Events; never the URL
    time: datetime


@dataclass(frozen=True)
class EvaluationFact:
    """The evaluation Job status names, as seen now: missing, running, or finished with its report (or why
    it has none: ``detail`` says what the Job and its pod said)."""

    job: str
    state: Literal["missing", "running", "succeeded", "failed"]
    report: EvaluationReport | None = None
    detail: str = ""


@dataclass(frozen=True)
class Facts:
    """Everything the machine may look at besides status, policy and the clock."""

    spec_revision: RevisionStatus  # what the spec asks for (number not yet assigned)
    # the spec's models:/ URI could not be resolved this pass: nothing is deployed from spec_revision
    unresolved: Unresolved | None = None
    generation: int = 1
    tracks: Mapping[str, TrackFacts] = field(default_factory=dict)  # by revision hash
    # The built-in gateway's Deployment and pods (the address clients call); None when the traffic
    # provider has no gateway of ours (Gateway API, Istio). Healthy needs it to answer.
    gateway: TrackFacts | None = None
    routing: Routing = field(default_factory=Routing)  # the provider's own word on the route (not ours)
    look: Look | None = None
    command: Command | None = None
    paused: bool = False  # spec.paused
    sticky: bool = False  # spec.traffic.sticky: clients keep their track (A/B) instead of a weighted split
    autoscaled: bool = False  # spec.autoscaling: the candidate runs a share of the stable's pods until promoted
    policy: str = "default"  # which policy governs, for status
    name: str = ""  # the ModelDeployment's name (it names the evaluation Job)
    evaluation: EvaluationFact | None = None  # the Job of status.lastEvaluation while it runs
    hooks: Mapping[str, HookAnswer] = field(default_factory=dict)  # latest answer by hook name, this candidate

    def gateway_serves(self) -> bool:
        """Clients can reach the model: our gateway has a ready pod, or routing is not ours and the
        implementation has not refused (or not yet accepted) the route."""
        return (self.gateway is None or self.gateway.available) and self.routing.served()

    def front_door_problem(self) -> str:
        """Why clients cannot reach the model through the routing (empty when they can)."""
        if self.gateway is not None and not self.gateway.available:
            detail = f" ({self.gateway.detail})" if self.gateway.detail else ""
            return f"the gateway has no ready pods{detail}"
        if not self.routing.served():
            state = "not served" if self.routing.accepted == "False" else "not yet accepted"
            return f"the route is {state} ({self.routing.provider}): {self.routing.detail}"
        return ""

    def track(self, revision: str) -> TrackFacts:
        """Facts about one revision; a revision without a Deployment has no facts."""
        return self.tracks.get(revision, MISSING)
