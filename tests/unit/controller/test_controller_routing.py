"""Reading a Gateway API implementation's word on our HTTPRoute, and what it can mirror (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from mlrollout.controller.routing import (
    ParentRef,
    acceptance,
    gateway_api_routing,
    mirror_support,
    not_applied,
)
from mlrollout.traffic.base import BUILTIN_GATEWAY, NO_GATEWAY

PARENT = ParentRef("edge", "gateways")
GATEWAY: dict[str, Any] = {
    "metadata": {"name": "edge", "namespace": "gateways"},
    "spec": {"gatewayClassName": "traefik"},
    "status": {"conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed"}]},
}


def route(*parents: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "wine", "namespace": "ml"}, "status": {"parents": list(parents)}}


def parent(accepted: str = "True", refs: str = "True", name: str = "edge", namespace: str | None = "gateways",
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name, **extra}
    if namespace:
        ref["namespace"] = namespace
    return {
        "parentRef": ref,
        "controllerName": "traefik.io/gateway-controller",
        "conditions": [
            {"type": "Accepted", "status": accepted,
             "reason": "Accepted" if accepted == "True" else "NotAllowedByListeners",
             "message": "" if accepted == "True" else "no listener of the Gateway allows routes from namespace ml"},
            {"type": "ResolvedRefs", "status": refs, "reason": "ResolvedRefs" if refs == "True" else "BackendNotFound",
             "message": "" if refs == "True" else "service ml/wine-abc not found"},
        ],
    }  # fmt: skip


def features(*names: str) -> dict[str, Any]:
    return {"metadata": {"name": "traefik"}, "status": {"supportedFeatures": [{"name": n} for n in names]}}


def test_accepted_by_our_gateway() -> None:
    state, words = acceptance(route(parent()), GATEWAY, PARENT)
    assert state == "True" and "Accepted=True" in words


def test_not_allowed_by_the_listeners_is_not_served_and_says_why() -> None:
    state, words = acceptance(route(parent(accepted="False")), GATEWAY, PARENT)
    assert state == "False" and "NotAllowedByListeners" in words and "namespace ml" in words


def test_unresolved_backend_is_not_served() -> None:
    state, words = acceptance(route(parent(refs="False")), GATEWAY, PARENT)
    assert state == "False" and "service ml/wine-abc not found" in words


def test_a_missing_gateway_serves_nothing() -> None:
    state, words = acceptance(route(), None, PARENT)
    assert state == "False" and words == "Gateway gateways/edge does not exist"


def test_a_gateway_that_is_not_programmed_serves_nothing() -> None:
    programmed = {"type": "Programmed", "status": "False", "reason": "AddressNotAssigned", "message": "no address"}
    broken = {**GATEWAY, "status": {"conditions": [programmed]}}
    state, words = acceptance(route(parent()), broken, PARENT)
    assert state == "False" and "AddressNotAssigned" in words


@pytest.mark.parametrize(
    "entries",
    [(), (parent(name="other"),), (parent(namespace="elsewhere"),), (parent(sectionName="https"),)],
    ids=["no-status", "other-gateway", "other-namespace", "other-listener"],
)
def test_only_our_parent_counts_and_silence_is_unknown(entries: tuple[dict[str, Any], ...]) -> None:
    state, words = acceptance(route(*entries), GATEWAY, ParentRef("edge", "gateways", "http"))
    assert state == "Unknown" and "no implementation has reported" in words


def test_parent_namespace_defaults_to_the_routes() -> None:
    state, _ = acceptance(route(parent(namespace=None)), GATEWAY, ParentRef("edge", "ml"))
    assert state == "True"


def test_a_route_not_yet_created_is_unknown() -> None:
    assert acceptance(None, GATEWAY, PARENT)[0] == "Unknown"


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (features("HTTPRouteRequestMirror", "HTTPRouteRequestPercentageMirror"), "percent"),
        (features("HTTPRouteRequestMirror"), "full"),
        (features("HTTPRouteQueryParamMatching"), "none"),  # Traefik 3.6: no mirror at all
        ({"status": {"supportedFeatures": ["HTTPRouteRequestMirror"]}}, "full"),  # names as plain strings
        ({"status": {}}, None),
        (None, None),
    ],
)
def test_mirror_support_from_the_class_features(cls: dict[str, Any] | None, expected: str | None) -> None:
    assert mirror_support(cls) == expected


def test_routing_says_what_the_class_cannot_mirror() -> None:
    r = gateway_api_routing(route(parent()), GATEWAY, features("HTTPRouteQueryParamMatching"), PARENT)
    assert (r.provider, r.accepted, r.mirror) == ("gatewayAPI", "True", "none")
    assert "GatewayClass traefik supports no RequestMirror" in r.detail
    assert r.cannot_mirror(10) is not None and r.cannot_mirror(0) is None


def test_what_only_the_builtin_gateway_does_is_listed() -> None:
    notes = not_applied(NO_GATEWAY, "gatewayAPI", "platform-default (selector)", quality=True, split=True)
    assert len(notes) == 3
    assert notes[0].startswith("FallbackPolicy platform-default (selector): only the built-in gateway")
    assert "quality" in notes[1] and "inconclusive" in notes[1]
    assert notes[2].startswith("traffic-split check (gatewayAPI routes): not checked")
    assert not_applied(NO_GATEWAY, "istio", None, quality=False, split=False) == ()
    assert not_applied(BUILTIN_GATEWAY, "builtin", "platform-default (selector)", quality=True, split=True) == ()
