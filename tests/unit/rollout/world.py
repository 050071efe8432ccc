"""A tiny simulated world for the state machine: a clock, the spec, the pods' readiness, verdicts, commands.

Each `tick` calls `decide` once with the facts the world holds, keeps the returned status (as the operator
does) and returns the actions, so tests read as Given / When / Then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from mlrollout.api.analysis import Forecast, Judgement, MetricResult, Samples, TrackPair
from mlrollout.api.commands import Command
from mlrollout.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, RevisionStatus
from mlrollout.api.rolloutpolicy import RolloutPolicySpec, Strategy
from mlrollout.revision import Resolved, revision_of
from mlrollout.rollout import (
    Action,
    Decision,
    EvaluationFact,
    Facts,
    Look,
    RecordEvent,
    RemoveTrack,
    Routing,
    SetRoutes,
    TrackFacts,
    Unresolved,
    decide,
)
from mlrollout.rollout.facts import HookAnswer, HookResult

T0 = datetime(2026, 11, 26, 6, 0, 0, tzinfo=UTC)
IMAGE = "mlrollout/serving:test"


def spec(version: str = "1", sha: str = "a", **extra: Any) -> ModelDeploymentSpec:
    """A ModelDeployment spec serving model `version` whose file digest is `sha` repeated."""
    return ModelDeploymentSpec.model_validate(
        {
            "model": {
                "name": "wine",
                "version": version,
                "uri": f"file:///models/wine-{version}.onnx",
                "sha256": sha * 64,
            },
            **extra,
        }
    )


def policy(steps: list[dict[str, Any]] | None = None, **extra: Any) -> RolloutPolicySpec:
    """A rollout policy; default steps: shadow 100% (10 req), canary 10% (10 req), canary 50% (10 req)."""
    steps = steps or [
        {"shadow": {"mirrorPercent": 100, "minRequests": 10, "maxDuration": "5m"}},
        {"canary": {"weight": 10, "minRequests": 10, "maxDuration": "5m"}},
        {"canary": {"weight": 50, "minRequests": 10, "maxDuration": "5m"}},
    ]
    return RolloutPolicySpec.model_validate({"strategy": Strategy.model_validate({"steps": steps}).to_dict(), **extra})


@dataclass
class World:
    """The facts the operator would observe, and the status it keeps."""

    pol: RolloutPolicySpec = field(default_factory=policy)
    md_spec: ModelDeploymentSpec = field(default_factory=spec)
    now: datetime = T0
    status: ModelDeploymentStatus | None = None
    ready: dict[str, TrackFacts] = field(default_factory=dict)
    gateway: TrackFacts | None = None  # None: a traffic provider without our gateway
    routing: Routing = field(default_factory=Routing)  # what the provider's implementation says
    look: Look | None = None
    command: Command | None = None
    paused: bool = False
    sticky: bool = False
    autoscaled: bool = False  # spec.autoscaling: the candidate runs a share of the stable's pods
    generation: int = 1
    last: Decision | None = None
    sent: int = 0
    registry: Resolved | Unresolved | None = None  # what the registry answers for a models:/ spec
    evaluation: EvaluationFact | None = None  # what the cluster says about the evaluate step's Job
    hooks: dict[str, HookAnswer] = field(default_factory=dict)  # approval hooks' latest answers

    @property
    def want(self) -> RevisionStatus:
        resolved = self.registry if isinstance(self.registry, Resolved) else None
        return revision_of(self.md_spec, IMAGE, resolved)

    @property
    def s(self) -> ModelDeploymentStatus:
        assert self.status is not None
        return self.status

    def facts(self) -> Facts:
        return Facts(
            spec_revision=self.want,
            unresolved=self.registry if isinstance(self.registry, Unresolved) else None,
            generation=self.generation,
            tracks=dict(self.ready),
            gateway=self.gateway,
            routing=self.routing,
            look=self.look,
            command=self.command,
            paused=self.paused,
            sticky=self.sticky,
            autoscaled=self.autoscaled,
            policy="test",
            name="wine",
            evaluation=self.evaluation,
            hooks=dict(self.hooks),
        )

    def tick(self, seconds: float = 0.0) -> list[Action]:
        self.now += timedelta(seconds=seconds)
        self.last = decide(self.status, self.facts(), self.pol, self.now)
        self.status = self.last.status
        return self.last.actions

    # -- changing the world ---------------------------------------------------------------------------

    def make_ready(self, revision: str | None = None, **flags: Any) -> None:
        rev = revision or self.want.revision
        self.ready[rev] = TrackFacts(exists=True, ready=True, available=True, **flags)

    def make_broken(self, revision: str | None = None, **flags: Any) -> None:
        rev = revision or self.want.revision
        self.ready[rev] = TrackFacts(exists=True, detail="server: CrashLoopBackOff", **flags)

    def give_verdict(
        self, verdict: str, requests: int, seconds: float = 1.0, evidence: dict[str, float] | None = None,
        source: Literal["gateway", "model"] | None = None, forecast: Forecast | None = None,
    ) -> list[Action]:  # fmt: skip
        """Advance the clock, take one look at the current candidate, decide."""
        self.now += timedelta(seconds=seconds)
        assert self.status is not None and self.status.candidate is not None
        judgement = Judgement(
            verdict=verdict,
            reason=f"test says {verdict}",
            alpha=self.pol.significance.alpha,
            samples=Samples(stable=100, candidate=requests),
            metrics=[
                MetricResult(name="errorRate", decision="pass", samples=TrackPair(stable=100, candidate=requests))
            ],
            evidence=evidence or {},
            forecast=forecast,
        )
        self.look = Look(judgement, self.now, self.status.candidate.revision, source)
        return self.tick()

    def answer(self, hook: str, result: HookResult, detail: str = "") -> None:
        """The hook ``hook`` answers about the current candidate now (the controller's fact for the next tick)."""
        assert self.status is not None and self.status.candidate is not None
        self.hooks[hook] = HookAnswer(hook, self.status.candidate.revision, result, detail or result, self.now)

    def send(self, verb: str, to_revision: int | None = None, cmd_id: str | None = None) -> list[Action]:
        self.sent += 1
        self.command = Command(id=cmd_id or f"{verb}-{self.sent}", verb=verb, to_revision=to_revision)
        return self.tick()

    def deploy_healthy(self) -> None:
        """First revision deployed and ready."""
        self.tick()
        self.make_ready()
        self.tick()
        assert self.s.phase == "Healthy"

    def start_rollout(self, version: str = "2", sha: str = "b") -> str:
        """A healthy stable, then a new spec revision whose candidate is ready: step 0 running."""
        if self.status is None:
            self.deploy_healthy()
        self.md_spec = spec(version, sha)
        self.tick()
        self.make_ready()
        self.tick()
        assert self.s.current_step is not None
        return self.want.revision


def events(actions: list[Action]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, RecordEvent)]


def routes(actions: list[Action]) -> SetRoutes:
    found = [a for a in actions if isinstance(a, SetRoutes)]
    assert len(found) == 1, actions
    return found[0]


def removed(actions: list[Action]) -> list[str]:
    return [a.revision for a in actions if isinstance(a, RemoveTrack)]
