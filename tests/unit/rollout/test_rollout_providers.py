"""Rollouts without the built-in gateway (Gateway API, Istio): evidence every provider has.

The machine is the same for every provider; what differs is whose series a look reads
(`looks.evidence_source`) and that no gateway of ours has to be ready (`Facts.gateway` is None).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tests.unit.rollout.world import World, events, policy, routes

from mlrollout.api.modeldeployment import ModelDeploymentSpec
from mlrollout.rollout import RemoveRoutes, Routing
from mlrollout.rollout.looks import evidence_source, quality_design
from mlrollout.traffic.registry import PROVIDERS, router_for

MODEL = {"name": "wine", "version": "1", "uri": "file:///models/wine.onnx", "sha256": "a" * 64}


@pytest.mark.parametrize(
    ("kind", "gateway_in_path", "expected"),
    [
        ("shadow", True, "model"),
        ("canary", True, "gateway"),
        ("blueGreen", True, "model"),
        ("shadow", False, "model"),
        ("canary", False, "model"),
        ("blueGreen", False, "model"),
    ],
)
def test_evidence_source_per_step_kind_and_provider(kind: str, gateway_in_path: bool, expected: str) -> None:
    assert evidence_source(kind, gateway_in_path) == expected


@pytest.mark.parametrize(("kind", "expected"), [("shadow", "paired"), ("blueGreen", "paired"), ("canary", "unpaired")])
def test_the_quality_design_is_the_step_kinds_alone(kind: str, expected: str) -> None:
    """Paired where the step mirrors, whoever routes: fixed before any label, never chosen by the counts."""
    assert quality_design(kind) == expected


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "null"])
def test_gateway_series_are_read_only_where_the_builtin_gateway_routes(provider: str) -> None:
    caps = router_for(provider, env={}).capabilities
    assert evidence_source("canary", caps.gateway_series) == ("gateway" if provider == "builtin" else "model")


def test_a_rollout_without_our_gateway_steps_and_promotes_on_model_server_evidence() -> None:
    w = World(gateway=None)  # Gateway API or Istio: no gateway Deployment of ours to wait for
    w.start_rollout()
    weights = []
    for _ in range(3):
        assert w.s.current_step is not None
        weights.append((w.s.traffic.candidate, w.s.traffic.mirror) if w.s.traffic else None)
        actions = w.give_verdict("promote", requests=50, source="model")
        assert w.s.last_analysis is not None and w.s.last_analysis.source == "model"
    assert weights == [(0, 100), (10, 0), (50, 0)]
    assert w.s.phase == "Healthy" and w.s.candidate is None
    assert w.s.history is not None and w.s.history[-1].outcome == "promoted"
    assert routes(actions).candidate is None and routes(actions).candidate_weight == 0


def test_the_status_says_whose_series_each_look_read() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("continue", requests=5, source="model")
    assert w.s.last_analysis is not None and w.s.last_analysis.source == "model"
    w.give_verdict("promote", requests=50, source="model")  # shadow passed; the canary reads the gateway
    w.give_verdict("continue", requests=5, source="gateway")
    assert w.s.last_analysis is not None and str(w.s.last_analysis.source) == "gateway"
    w.give_verdict("continue", requests=5)  # a recorded judgement says nothing about its source
    assert w.s.last_analysis is not None and w.s.last_analysis.source is None


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "null"])
def test_the_api_refuses_what_the_provider_cannot_do(provider: str) -> None:
    """Sticky keys and a referenced FallbackPolicy are refused exactly where the router lacks them."""
    caps = router_for(provider, env={}).capabilities
    sticky = {"model": MODEL, "traffic": {"provider": provider, "sticky": {"header": "x-user"}}}
    fallback = {"model": MODEL, "traffic": {"provider": provider}, "fallbackPolicyRef": {"name": "safe"}}
    for doc, can, says in ((sticky, caps.sticky, "sticky needs"), (fallback, caps.fallback, "fallbackPolicyRef needs")):
        if can:
            ModelDeploymentSpec.model_validate(doc)
        else:
            with pytest.raises(ValidationError, match=says):
                ModelDeploymentSpec.model_validate(doc)


def test_no_step_passes_while_the_implementation_does_not_serve_the_route() -> None:
    """A Gateway that is missing or refuses the route: hold (visibly), never promote on a route no one serves."""
    w = World(gateway=None)
    w.start_rollout()
    w.routing = Routing("gatewayAPI", "False", "Gateway gateways/edge does not exist")  # deleted mid-rollout
    w.give_verdict("promote", requests=500, source="model")
    assert w.s.current_step is not None and w.s.current_step.index == 0
    assert "not advancing: the route is not served (gatewayAPI): Gateway gateways/edge does not exist" in (
        w.s.message or ""
    )
    assert w.s.routing is not None and w.s.routing.accepted == "False"
    w.routing = Routing("gatewayAPI", "True", "Accepted=True (Accepted)")
    w.give_verdict("promote", requests=500, source="model")
    assert w.s.current_step is not None and w.s.current_step.index == 1


def test_a_stable_behind_an_unaccepted_route_is_pending_then_degraded() -> None:
    w = World(gateway=None)
    w.routing = Routing("gatewayAPI", "Unknown", "no implementation has reported on the HTTPRoute yet")
    w.tick()
    w.make_ready()
    w.tick()
    assert w.s.phase == "Pending" and "waiting: the route is not yet accepted" in (w.s.message or "")
    available = next(c for c in w.s.conditions or [] if c.type == "Available")
    assert (available.status, available.reason) == ("False", "RouteNotServed")
    w.tick(3600)
    assert str(w.s.phase) == "Degraded"
    w.routing = Routing("gatewayAPI", "True", "")
    w.tick()
    assert str(w.s.phase) == "Healthy"


@pytest.mark.parametrize(("mirror", "held"), [("none", True), ("full", False), ("percent", False), (None, False)])
def test_a_shadow_step_the_implementation_cannot_mirror_holds_for_a_human(mirror: str | None, held: bool) -> None:
    w = World(gateway=None)  # the default policy's shadow step mirrors 100%
    w.routing = Routing("gatewayAPI", "True", "", mirror)  # type: ignore[arg-type]
    w.start_rollout()
    assert (w.s.hold is not None) == held
    if held:
        assert w.last is not None and "RolloutHeld" in events(list(w.last.actions))
        assert w.s.phase == "Paused" and "does not support RequestMirror" in (w.s.hold or "")
        assert w.s.traffic is not None and w.s.traffic.mirror == 0 and routes(w.tick()).mirror_percent == 0
        w.send("promote")  # a human skips the step: the canary needs no mirror
        assert w.s.hold is None and w.s.current_step is not None and w.s.current_step.kind == "canary"


def test_a_share_cannot_be_mirrored_where_only_every_request_can() -> None:
    w = World(gateway=None, pol=policy([
        {"shadow": {"mirrorPercent": 20, "minRequests": 10, "maxDuration": "5m"}},
        {"canary": {"weight": 10, "minRequests": 10, "maxDuration": "5m"}},
    ]))  # fmt: skip
    w.routing = Routing("gatewayAPI", "True", "", "full")
    w.start_rollout()
    assert w.s.hold is not None and "mirroring a share (20%; only 100% here)" in w.s.hold


def test_a_provider_switched_mid_rollout_removes_the_old_route_and_restarts_the_step_window() -> None:
    w = World(gateway=None)
    w.routing = Routing("istio")
    w.start_rollout()
    w.give_verdict("continue", requests=5, source="model", evidence={"errorRate.harm": 2.0})
    step = w.s.current_step
    assert step is not None and step.carried_out == {"errorRate.harm": 2.0}
    w.routing = Routing("gatewayAPI", "True", "")
    actions = w.tick(10)
    assert [a.provider for a in actions if isinstance(a, RemoveRoutes)] == ["istio"]
    assert "ProviderChanged" in events(actions)
    moved = w.s.current_step
    assert moved is not None and moved.index == step.index and moved.started_at > step.started_at
    assert moved.carried_out is None and moved.carried_in == step.carried_in
    assert w.s.routing is not None and w.s.routing.provider == "gatewayAPI"
    again = w.tick(1)  # a fixed point: the switch is acted on once
    assert not [a for a in again if isinstance(a, RemoveRoutes)] and "ProviderChanged" not in events(again)


def test_a_provider_switched_between_rollouts_only_removes_the_old_route() -> None:
    w = World(gateway=None)
    w.routing = Routing("gatewayAPI", "True", "")
    w.deploy_healthy()
    w.routing = Routing("istio")
    actions = w.tick(1)
    assert [a.provider for a in actions if isinstance(a, RemoveRoutes)] == ["gatewayAPI"]
    assert w.s.phase == "Healthy" and w.s.current_step is None
