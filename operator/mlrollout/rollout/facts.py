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
    crash_looping: bool = False
    digest_mismatch: bool = False  # the model server refused the file: sha256 differs
    detail: str = ""  # what the pods say, for the message (e.g. "server: CrashLoopBackOff, 5 restarts")


MISSING = TrackFacts()


@dataclass(frozen=True)
class Look:
    """One look of the analysis at the candidate: the judge's answer, when, and about which revision."""

    judgement: Judgement
    time: datetime
    candidate_revision: str


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
    name: str = ""  # the ModelDeployment's name (it names the evaluation Job)
    evaluation: EvaluationFact | None = None  # the Job of status.lastEvaluation while it runs

    def gateway_serves(self) -> bool:
        """Clients can reach the model: our gateway has a ready pod, or routing is not ours."""
        return self.gateway is None or self.gateway.available

    def track(self, revision: str) -> TrackFacts:
        """Facts about one revision; a revision without a Deployment has no facts."""
        return self.tracks.get(revision, MISSING)
