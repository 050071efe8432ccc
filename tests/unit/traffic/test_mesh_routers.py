"""The Gateway API and Istio routers: what each RouteIntent becomes."""

from __future__ import annotations

import dataclasses

import pytest

from mlrollout.traffic.base import Backend, RouteIntent, TrafficRouter
from mlrollout.traffic.gatewayapi import GatewayApiRouter, mirror_style_of
from mlrollout.traffic.istio import IstioRouter

OWNER = {
    "apiVersion": "mlrollout.io/v1alpha1",
    "kind": "ModelDeployment",
    "name": "wine",
    "uid": "6f1c1c3e-1b7e-4a4e-9c55-0d1f7d2b1a10",
    "controller": True,
    "blockOwnerDeletion": True,
}
STABLE = Backend(service="wine-stable", port=8080, revision="aaaa1111")
CANDIDATE = Backend(service="wine-candidate", port=8080, revision="bbbb2222")


def intent(**changes: object) -> RouteIntent:
    base = RouteIntent(
        namespace="ml",
        name="wine",
        stable=STABLE,
        candidate=CANDIDATE,
        candidate_weight=20,
        mirror_percent=0,
        version=7,
        owner=OWNER,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_both_routers_satisfy_the_protocol() -> None:
    routers: list[TrafficRouter] = [GatewayApiRouter("edge"), IstioRouter()]
    assert [r.name for r in routers] == ["gatewayAPI", "istio"]


# --- Gateway API ---------------------------------------------------------------------------------


def test_httproute_weights_owner_and_parent() -> None:
    [route] = GatewayApiRouter("edge", "gateways", section_name="http").manifests(intent())
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == "wine"
    assert route["metadata"]["namespace"] == "ml"
    assert route["metadata"]["ownerReferences"] == [OWNER]
    assert route["metadata"]["annotations"]["mlrollout.io/route-version"] == "7"
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge", "namespace": "gateways",
         "sectionName": "http"}
    ]  # fmt: skip
    [rule] = route["spec"]["rules"]
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "wine-stable", "port": 8080, "weight": 80},
        {"group": "", "kind": "Service", "name": "wine-candidate", "port": 8080, "weight": 20},
    ]
    assert "filters" not in rule


def test_httproute_parent_defaults_to_route_namespace() -> None:
    [route] = GatewayApiRouter("edge").manifests(intent())
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]


@pytest.mark.parametrize(
    ("style", "percent", "expected"),
    [
        ("percent", 10, {"backendRef": {"name": "wine-candidate", "port": 8080}, "percent": 10}),
        ("fraction", 10, {"backendRef": {"name": "wine-candidate", "port": 8080},
                          "fraction": {"numerator": 10, "denominator": 100}}),
        ("percent", 100, {"backendRef": {"name": "wine-candidate", "port": 8080}}),
        (None, 100, {"backendRef": {"name": "wine-candidate", "port": 8080}}),
    ],
)  # fmt: skip
def test_httproute_mirror_filter(style: object, percent: int, expected: dict[str, object]) -> None:
    router = GatewayApiRouter("edge", mirror_style=style)  # type: ignore[arg-type]
    [route] = router.manifests(intent(candidate_weight=0, mirror_percent=percent))
    [rule] = route["spec"]["rules"]
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": expected}]
    assert [b["weight"] for b in rule["backendRefs"]] == [100, 0]


@pytest.mark.parametrize(("style", "percent"), [(None, 25), ("full", 25), ("none", 25), ("none", 100)])
def test_httproute_never_carries_a_mirror_the_implementation_cannot_apply(style: object, percent: int) -> None:
    """An implementation without (percentage) mirroring may answer every request of a rule with such a filter
    with a 500 (Traefik 3.6): the route goes without it, and the machine holds the step instead."""
    router = GatewayApiRouter("edge", mirror_style=style)  # type: ignore[arg-type]
    [route] = router.manifests(intent(candidate_weight=0, mirror_percent=percent))
    [rule] = route["spec"]["rules"]
    assert "filters" not in rule
    assert [b["weight"] for b in rule["backendRefs"]] == [100, 0]


def test_httproute_full_mirror_where_only_full_mirroring_exists() -> None:
    [route] = GatewayApiRouter("edge", mirror_style="full").manifests(intent(mirror_percent=100))
    [rule] = route["spec"]["rules"]
    assert rule["filters"] == [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "wine-candidate", "port": 8080}}}
    ]


def test_httproute_without_candidate_sends_everything_to_stable() -> None:
    [route] = GatewayApiRouter("edge").manifests(intent(candidate=None, candidate_weight=30, mirror_percent=50))
    [rule] = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "wine-stable", "port": 8080, "weight": 100}]
    assert "filters" not in rule


def test_httproute_full_switch_and_no_owner() -> None:
    [route] = GatewayApiRouter("edge").manifests(intent(candidate_weight=100, owner=None))
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [0, 100]
    assert "ownerReferences" not in route["metadata"]


def test_nothing_to_route_before_a_stable_exists() -> None:
    assert GatewayApiRouter("edge").manifests(intent(stable=None)) == []
    assert IstioRouter().manifests(intent(stable=None)) == []


def test_routers_are_pure() -> None:
    for router in (GatewayApiRouter("edge"), IstioRouter()):
        assert router.manifests(intent(mirror_percent=5)) == router.manifests(intent(mirror_percent=5))


def _crd(mirror_props: dict[str, object], served: bool = True) -> dict[str, object]:
    mirror = {"properties": mirror_props}
    filters = {"items": {"properties": {"requestMirror": mirror}}}
    rules = {"items": {"properties": {"filters": filters}}}
    schema = {"openAPIV3Schema": {"properties": {"spec": {"properties": {"rules": rules}}}}}
    return {"spec": {"versions": [{"name": "v1", "served": served, "schema": schema}]}}


def test_mirror_style_read_from_the_crd_schema() -> None:
    assert mirror_style_of(_crd({"backendRef": {}, "percent": {}, "fraction": {}})) == "percent"
    assert mirror_style_of(_crd({"backendRef": {}, "fraction": {}})) == "fraction"
    assert mirror_style_of(_crd({"backendRef": {}})) is None
    assert mirror_style_of(_crd({"percent": {}}, served=False)) is None
    assert mirror_style_of({}) is None


# --- Istio ---------------------------------------------------------------------------------------


def test_virtualservice_weights_hosts_and_owner() -> None:
    [vs] = IstioRouter().manifests(intent())
    assert vs["apiVersion"] == "networking.istio.io/v1"
    assert vs["kind"] == "VirtualService"
    assert vs["metadata"]["name"] == "wine"
    assert vs["metadata"]["ownerReferences"] == [OWNER]
    assert vs["spec"]["hosts"] == ["wine.ml.svc.cluster.local"]
    assert "gateways" not in vs["spec"]
    [http] = vs["spec"]["http"]
    assert http["route"] == [
        {"destination": {"host": "wine-stable.ml.svc.cluster.local", "port": {"number": 8080}}, "weight": 80},
        {"destination": {"host": "wine-candidate.ml.svc.cluster.local", "port": {"number": 8080}}, "weight": 20},
    ]
    assert "mirror" not in http


def test_virtualservice_mirror_with_explicit_percentage() -> None:
    [vs] = IstioRouter(gateways=("mesh", "edge/public"), cluster_domain="corp.local").manifests(
        intent(candidate_weight=0, mirror_percent=35)
    )
    [http] = vs["spec"]["http"]
    assert http["mirror"] == {"host": "wine-candidate.ml.svc.corp.local", "port": {"number": 8080}}
    assert http["mirrorPercentage"] == {"value": 35.0}
    assert vs["spec"]["gateways"] == ["mesh", "edge/public"]


def test_virtualservice_without_candidate() -> None:
    [vs] = IstioRouter().manifests(intent(candidate=None, mirror_percent=100))
    [http] = vs["spec"]["http"]
    assert http["route"] == [
        {"destination": {"host": "wine-stable.ml.svc.cluster.local", "port": {"number": 8080}}, "weight": 100}
    ]
    assert "mirror" not in http and "mirrorPercentage" not in http
