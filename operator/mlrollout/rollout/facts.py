"""What the controller observed, as plain values: the only input of the state machine besides status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from mlrollout.api.analysis import Judgement
from mlrollout.api.commands import Command
from mlrollout.api.modeldeployment import RevisionStatus


@dataclass(frozen=True)
class TrackFacts:
    """One revision's Deployment and pods, as seen now."""

    exists: bool = False
    ready: bool = False  # fully rolled out: every desired replica updated and ready
    available: bool = False  # at least one ready replica: it can answer
    crash_looping: bool = False
    digest_mismatch: bool = False  # the model server refused the file: sha256 differs
    config_error: bool = False  # the pods cannot be started as specified (e.g. the credentials Secret is missing)
    detail: str = ""  # what the pods say, for the message (e.g. "server: CrashLoopBackOff, 5 restarts")


MISSING = TrackFacts()


@dataclass(frozen=True)
class Look:
    """One look of the analysis at the candidate: the judge's answer, when, and about which revision."""

    judgement: Judgement
    time: datetime
    candidate_revision: str


@dataclass(frozen=True)
class Unresolved:
    """The registry could not say what the spec's models:/ URI is; ``final`` when asking again cannot help
    (no such version, not an ONNX model, digest mismatch), else it was down, slow or still registering."""

    reason: str
    final: bool


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
    look: Look | None = None
    command: Command | None = None
    paused: bool = False  # spec.paused
    sticky: bool = False  # spec.traffic.sticky: clients keep their track (A/B) instead of a weighted split
    policy: str = "default"  # which policy governs, for status

    def gateway_serves(self) -> bool:
        """Clients can reach the model: our gateway has a ready pod, or routing is not ours."""
        return self.gateway is None or self.gateway.available

    def track(self, revision: str) -> TrackFacts:
        """Facts about one revision; a revision without a Deployment has no facts."""
        return self.tracks.get(revision, MISSING)
