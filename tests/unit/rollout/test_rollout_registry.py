"""models:/ specs in the state machine: the registry's answer enters as a fact; nothing half-resolved is
ever deployed; a final error is refused at once, a registry that is down is waited for until
progressDeadline, then the policy's onInconclusive decides."""

from __future__ import annotations

from typing import Any

from tests.unit.rollout.world import World, events, policy, spec

from mlrollout.api.modeldeployment import ModelDeploymentSpec
from mlrollout.revision import Resolved
from mlrollout.rollout import EnsureTrack, Unresolved

REGISTRY = {"uri": "http://mlflow.mlops.svc:5000"}
V1 = Resolved(uri="http://mlflow.mlops.svc:5000/api/2.0/mlflow-artifacts/artifacts/1/m/model.onnx",
              sha256="a" * 64, version="1", run_id="run1")  # fmt: skip
V2 = Resolved(uri="http://mlflow.mlops.svc:5000/api/2.0/mlflow-artifacts/artifacts/1/n/model.onnx",
              sha256="b" * 64, version="2", run_id="run2")  # fmt: skip


def registered(ref: str, **model: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": {"name": "wine", "uri": f"models:/{ref}", "registry": REGISTRY, **model}}
    )


def healthy_on_v1() -> World:
    w = World(md_spec=registered("wine/1"), registry=V1)
    w.deploy_healthy()
    return w


def ensured(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.role, a.revision.revision) for a in actions if isinstance(a, EnsureTrack)]


def test_the_resolution_is_recorded_in_the_revision_the_pods_and_history() -> None:
    w = healthy_on_v1()
    stable = w.s.stable
    assert stable is not None
    assert (stable.model_uri, stable.resolved_uri, stable.sha256, stable.run_id) == ("models:/wine/1", V1.uri,
                                                                                     V1.sha256, "run1")  # fmt: skip
    assert stable.model_version == "1"  # spec.model.version absent: the registry's version
    history = w.s.history or []
    assert history[-1].resolved_uri == V1.uri and history[-1].run_id == "run1" and history[-1].sha256 == V1.sha256


def test_editing_the_version_rolls_out_the_new_resolution_and_undo_keeps_the_old_bytes() -> None:
    w = healthy_on_v1()
    w.md_spec, w.registry = registered("wine/2"), V2
    w.tick()
    cand = w.s.candidate
    assert cand is not None and cand.resolved_uri == V2.uri and cand.sha256 == V2.sha256
    # the registry may change or vanish afterwards: the stored revisions keep what was resolved
    w.registry = Unresolved("connection refused", final=False)
    w.tick()
    assert w.s.candidate is not None and w.s.candidate.resolved_uri == V2.uri
    known = {r.number: r for r in w.s.revisions or []}
    assert known[1].resolved_uri == V1.uri and known[2].resolved_uri == V2.uri


def test_a_version_that_does_not_exist_is_refused_and_the_stable_keeps_serving() -> None:
    w = healthy_on_v1()
    w.md_spec, w.registry = registered("wine/9"), Unresolved("model version wine/9 does not exist", final=True)
    actions = w.tick()
    assert w.s.candidate is None and w.s.stable is not None and w.s.stable.resolved_uri == V1.uri
    assert "ResolutionFailed" in events(actions)
    assert all(role == "stable" for role, _ in ensured(actions))
    assert w.s.held_back is not None and w.s.held_back.outcome == "refused"
    assert w.s.phase == "Degraded" and "wine/9 does not exist" in (w.s.message or "")
    assert w.tick(60) == w.tick(60) and events(w.tick(60)) == []  # a fixed point: no event, no retry loop


def test_a_registry_that_is_down_is_waited_for_then_refused_after_the_progress_deadline() -> None:
    w = healthy_on_v1()
    w.pol = policy(progressDeadline="10m")
    w.md_spec, w.registry = registered("wine/2"), Unresolved("connection refused", final=False)
    assert "RegistryUnavailable" in events(w.tick())
    assert w.s.resolving is not None and w.s.candidate is None and w.s.phase == "Progressing"
    assert "resolving models:/wine/2" in (w.s.message or "")
    assert events(w.tick(300)) == []  # still waiting, quietly
    actions = w.tick(301)
    assert "RegistryUnavailable" in events(actions)
    assert w.s.held_back is not None and w.s.held_back.outcome == "refused" and w.s.resolving is None
    assert w.s.phase == "Degraded"


def test_with_on_inconclusive_hold_a_registry_that_is_down_is_waited_for_past_the_deadline() -> None:
    w = healthy_on_v1()
    w.pol = policy(progressDeadline="10m", onInconclusive={"action": "hold"})
    w.md_spec, w.registry = registered("wine/2"), Unresolved("HTTP 503", final=False)
    w.tick()
    w.tick(3600)
    assert w.s.held_back is None and w.s.resolving is not None
    w.registry = V2  # back: the rollout starts
    actions = w.tick(10)
    assert w.s.resolving is None and w.s.candidate is not None and w.s.candidate.resolved_uri == V2.uri
    assert "RolloutStarted" in events(actions)


def test_retry_releases_a_refused_revision_and_a_spec_change_moves_on() -> None:
    w = healthy_on_v1()
    w.md_spec, w.registry = registered("wine/2"), Unresolved("not an ONNX model (flavours: sklearn)", final=True)
    w.tick()
    assert w.s.held_back is not None
    w.registry = V2  # fixed in the registry: nothing happens by itself
    w.tick(60)
    assert w.s.candidate is None
    w.send("retry")
    assert w.s.candidate is not None and w.s.candidate.sha256 == V2.sha256


def test_first_revision_unresolved_deploys_nothing() -> None:
    w = World(md_spec=registered("wine/1"), registry=Unresolved("connection refused", final=False))
    actions = w.tick()
    assert w.s.stable is None and ensured(actions) == []
    w.registry = V1
    w.tick(10)
    assert w.s.stable is not None and w.s.stable.resolved_uri == V1.uri


def test_version_defaults_to_the_digest_for_other_sources() -> None:
    w = World(md_spec=spec("1", "c"))
    w.md_spec = ModelDeploymentSpec.model_validate(
        {"model": {"name": "wine", "uri": "s3://models/wine.onnx", "sha256": "c" * 64}}
    )
    w.tick()
    assert w.s.stable is not None and w.s.stable.model_version == "c" * 12
