"""The Gateway API and Istio routers' objects, applied to a real API server with the official CRDs.

The CRDs come from the pinned upstream releases (e2e/cluster/fetch-traffic-crds, Go module proxy), so the
API server checks every generated object against the real OpenAPI schemas and CEL rules. Server-side dry
runs with strict field validation also catch pruning: a field the CRD does not know is an error, not a
silent drop. One test per router applies for real and lets the garbage collector prove the owner reference.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.cluster.kube import Kubectl

from mlrollout.traffic.base import Backend, Manifest, RouteIntent
from mlrollout.traffic.gatewayapi import CRD_NAME, GatewayApiRouter, mirror_style_of
from mlrollout.traffic.istio import IstioRouter

pytestmark = pytest.mark.cluster

MD = """
apiVersion: mlrollout.io/v1alpha1
kind: ModelDeployment
metadata: {name: wine}
spec:
  model:
    name: wine
    version: v1
    uri: file:///models/wine-v1.onnx
    sha256: 3b0d2c71a5b8a3f6e19a7c0b52f3ad0e4c11a9f2b6d7e8c9a0b1c2d3e4f5a6b7
"""


def intent(namespace: str, **changes: Any) -> RouteIntent:
    base = RouteIntent(
        namespace=namespace,
        name="wine",
        stable=Backend("wine-stable", 8080, "aaaa1111"),
        candidate=Backend("wine-candidate", 8080, "bbbb2222"),
        candidate_weight=0,
        mirror_percent=0,
        version=3,
        owner={"apiVersion": "mlrollout.io/v1alpha1", "kind": "ModelDeployment", "name": "wine",
               "uid": "0b6e1d55-3c1f-4d0e-9a7b-2f1e5d4c3b2a", "controller": True, "blockOwnerDeletion": True},
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def dry_run(kubectl: Kubectl, manifest: Manifest) -> subprocess.CompletedProcess[str]:
    """Server-side dry run with strict field validation; the answer is the object as it would be stored."""
    return kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "--field-manager=mlrollout",
        "-o", "json", "-f", "-", input=json.dumps(manifest), check=False,
    )  # fmt: skip


def assert_stored_as_sent(kubectl: Kubectl, manifest: Manifest) -> dict[str, Any]:
    proc = dry_run(kubectl, manifest)
    assert proc.returncode == 0, proc.stderr
    stored: dict[str, Any] = json.loads(proc.stdout)
    assert _subset(manifest["spec"], stored["spec"]), (manifest["spec"], stored["spec"])
    assert stored["metadata"]["ownerReferences"] == manifest["metadata"]["ownerReferences"]
    return stored


def _subset(sent: Any, stored: Any) -> bool:
    """Everything we sent is stored unchanged (the server may add defaults, never drop or alter)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(k in stored and _subset(v, stored[k]) for k, v in sent.items())
    if isinstance(sent, list):
        return isinstance(stored, list) and len(sent) == len(stored) and all(map(_subset, sent, stored))
    return bool(sent == stored)


INTENTS: dict[str, dict[str, Any]] = {
    "shadow-25": {"mirror_percent": 25},
    "shadow-100": {"mirror_percent": 100},
    "canary-5": {"candidate_weight": 5},
    "canary-50-with-mirror": {"candidate_weight": 50, "mirror_percent": 10},
    "switched": {"candidate_weight": 100},
    "stable-only": {"candidate": None},
}


def test_installed_httproute_crd_takes_a_mirror_percent(kubectl: Kubectl, traffic_crds: list[str]) -> None:
    assert mirror_style_of(kubectl.json("get", "crd", CRD_NAME)) == "percent"


@pytest.mark.parametrize("style", ["percent", "fraction"])
@pytest.mark.parametrize("case", INTENTS)
def test_httproute_accepted_by_official_crd(
    kubectl: Kubectl, traffic_crds: list[str], dry_run_namespace: str, case: str, style: str
) -> None:
    router = GatewayApiRouter("edge", "gateways", mirror_style=style)  # type: ignore[arg-type]
    [route] = router.manifests(intent(dry_run_namespace, **INTENTS[case]))
    stored = assert_stored_as_sent(kubectl, route)
    assert stored["kind"] == "HTTPRoute" and stored["apiVersion"] == "gateway.networking.k8s.io/v1"


@pytest.mark.parametrize("case", INTENTS)
def test_virtualservice_accepted_by_official_crd(
    kubectl: Kubectl, traffic_crds: list[str], dry_run_namespace: str, case: str
) -> None:
    [vs] = IstioRouter(gateways=("mesh",)).manifests(intent(dry_run_namespace, **INTENTS[case]))
    stored = assert_stored_as_sent(kubectl, vs)
    assert stored["kind"] == "VirtualService" and stored["apiVersion"] == "networking.istio.io/v1"


def test_the_dry_run_really_validates(kubectl: Kubectl, traffic_crds: list[str], dry_run_namespace: str) -> None:
    """Broken variants of our objects are refused, so the acceptance above means something."""
    [route] = GatewayApiRouter("edge").manifests(intent(dry_run_namespace, mirror_percent=25))
    route["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] = 101
    proc = dry_run(kubectl, route)
    assert proc.returncode != 0 and "percent" in proc.stderr, proc.stderr
    [vs] = IstioRouter().manifests(intent(dry_run_namespace, mirror_percent=25))
    vs["spec"]["http"][0]["mirrorPercent"] = {"value": 5}  # a field that does not exist in that shape
    vs["spec"]["http"][0]["mirrorPercentage"]["bogus"] = 1
    proc = dry_run(kubectl, vs)
    assert proc.returncode != 0, proc.stdout


@pytest.fixture
def model_deployment(kubectl: Kubectl, namespace: str) -> Iterator[dict[str, Any]]:
    kubectl("apply", "-n", namespace, "-f", "-", input=MD)
    yield kubectl.json("get", "modeldeployment", "wine", "-n", namespace)


@pytest.mark.parametrize("router", [GatewayApiRouter("edge"), IstioRouter()], ids=["gatewayAPI", "istio"])
def test_owned_route_is_garbage_collected_with_its_modeldeployment(
    kubectl: Kubectl,
    traffic_crds: list[str],
    namespace: str,
    model_deployment: dict[str, Any],
    router: GatewayApiRouter | IstioRouter,
) -> None:
    meta = model_deployment["metadata"]
    owner = {"apiVersion": model_deployment["apiVersion"], "kind": "ModelDeployment", "name": meta["name"],
             "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    [manifest] = router.manifests(intent(namespace, owner=owner, candidate_weight=25, mirror_percent=50))
    kubectl("apply", "--server-side", "--field-manager=mlrollout", "-f", "-", input=yaml.safe_dump(manifest))
    resource = f"{manifest['kind'].lower()}s.{manifest['apiVersion'].split('/')[0]}"
    stored = kubectl.json("get", resource, "wine", "-n", namespace)
    assert _subset(manifest["spec"], stored["spec"])
    kubectl("delete", "modeldeployment", "wine", "-n", namespace, "--wait=true", "--timeout=60s")
    deadline = time.monotonic() + 120
    while kubectl("get", resource, "wine", "-n", namespace, "--ignore-not-found", "-o", "name").stdout.strip():
        assert time.monotonic() < deadline, f"{resource}/wine outlived its owner: no garbage collection"
        time.sleep(0.5)
