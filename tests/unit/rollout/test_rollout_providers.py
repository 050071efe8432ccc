"""Rollouts without the built-in gateway (Gateway API, Istio): evidence every provider has.

The machine is the same for every provider; what differs is whose series a look reads
(`looks.evidence_source`) and that no gateway of ours has to be ready (`Facts.gateway` is None).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tests.unit.rollout.world import World, routes

from mlrollout.api.modeldeployment import ModelDeploymentSpec
from mlrollout.rollout.looks import evidence_source
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
    assert w.s.last_analysis is not None and w.s.last_analysis.source == "gateway"
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
