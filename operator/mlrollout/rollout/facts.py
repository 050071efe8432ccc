"""What the controller observed, as plain values: the only input of the state machine besides status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mlrollout.api.modeldeployment import RevisionStatus

VerdictName = Literal["promote", "continue", "rollback", "inconclusive"]
Verb = Literal["promote", "promoteFull", "abort", "pause", "resume", "retry", "undo"]
VERBS: tuple[Verb, ...] = ("promote", "promoteFull", "abort", "pause", "resume", "retry", "undo")


@dataclass(frozen=True)
class TrackFacts:
    """One revision's Deployment and pods, as seen now."""

    exists: bool = False
    ready: bool = False  # fully rolled out: every desired replica updated and ready
    available: bool = False  # at least one ready replica: it can answer
    crash_looping: bool = False
    digest_mismatch: bool = False  # the model server refused the file: sha256 differs
    detail: str = ""  # what the pods say, for the message (e.g. "server: CrashLoopBackOff, 5 restarts")


MISSING = TrackFacts()


@dataclass(frozen=True)
class Verdict:
    """One look of the analysis at the candidate, with the evidence behind it."""

    verdict: VerdictName
    reason: str
    time: datetime
    candidate_revision: str
    candidate_requests: int = 0  # cumulative since the candidate started
    alpha: float | None = None  # the significance level the look was judged at (the rollout's whole alpha)
    metrics: tuple[Mapping[str, Any], ...] = ()
    # per e-value test, what the next analysed step would start from if this step ended at this look
    evidence: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """A human command from the `mlrollout.io/command` annotation."""

    id: str
    verb: str  # validated by the machine, so a typo is refused visibly rather than dropped
    to_revision: int | None = None


@dataclass(frozen=True)
class Facts:
    """Everything the machine may look at besides status, policy and the clock."""

    spec_revision: RevisionStatus  # what the spec asks for (number not yet assigned)
    generation: int = 1
    tracks: Mapping[str, TrackFacts] = field(default_factory=dict)  # by revision hash
    # The built-in gateway's Deployment and pods (the address clients call); None when the traffic
    # provider has no gateway of ours (Gateway API, Istio). Healthy needs it to answer.
    gateway: TrackFacts | None = None
    verdict: Verdict | None = None
    command: Command | None = None
    paused: bool = False  # spec.paused
    policy: str = "default"  # which policy governs, for status

    def gateway_serves(self) -> bool:
        """Clients can reach the model: our gateway has a ready pod, or routing is not ours."""
        return self.gateway is None or self.gateway.available

    def track(self, revision: str) -> TrackFacts:
        """Facts about one revision; a revision without a Deployment has no facts."""
        return self.tracks.get(revision, MISSING)
