"""Pod Security "restricted" and the NetworkPolicies, judged by the real API server.

Given a namespace labelled `pod-security.kubernetes.io/enforce: restricted` (version `latest`), When the pods
the operator's builders and the chart describe are created there (server-side dry runs: admission runs,
nothing is stored), Then the PodSecurity admission plugin admits every one of them, while it refuses a pod
that breaks the profile (so enforcement is on) and the model-server pod as it was before the fix (no seccomp
profile). The NetworkPolicies the builders render pass the API server's validation. This tier has no
kubelet and no network plugin: whether a CNI enforces the policies is not observed here (docs/testing.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.cluster.kube import RESTRICTED, Helm, Kubectl
from tests.cluster.operator_support import wait_for
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.api.modeldeployment import NetworkIsolation
from mlrollout.controller import children
from mlrollout.controller.settings import OperatorSettings
from mlrollout.revision import revision_of

pytestmark = pytest.mark.cluster


@pytest.fixture
def restricted(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """The test's namespace, enforcing Pod Security "restricted"; its default ServiceAccount exists."""
    kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    wait_for(lambda: kubectl("-n", namespace, "get", "serviceaccount", "default", check=False).returncode == 0,
             60, "the namespace's default ServiceAccount")  # fmt: skip
    yield namespace


def md(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "wine", "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000001"},
    }


def pod_of(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The pod a Deployment's ReplicaSet would create from its template."""
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{deployment['metadata']['name']}-x", "namespace": namespace, **template["metadata"]},
        "spec": template["spec"],
    }


def operator_deployments(namespace: str) -> list[dict[str, Any]]:
    """Model servers (an http:// model, and a pvc:// one with a reference profile) and the gateway."""
    pvc = spec("2", "b")
    pvc.model.uri = "pvc://models/wine/v2.onnx"
    pvc.model.reference_profile = "pvc://models/wine/profile.json"
    http = spec("1", "a")
    http.model.uri = "http://store.example/wine-v1.onnx"
    owner = md(namespace)
    gateway = next(o for o in children.gateway_children(owner, OperatorSettings()) if o["kind"] == "Deployment")
    return [
        children.track_deployment(owner, revision_of(http, IMAGE), "stable", 1),
        children.track_deployment(owner, revision_of(pvc, IMAGE), "candidate", 1),
        gateway,
    ]


def dry_run_create(kubectl: Kubectl, obj: dict[str, Any]) -> Any:
    return kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False)


def test_the_api_server_enforces_restricted(kubectl: Kubectl, restricted: str) -> None:
    """Without this, the admissions below would prove nothing: a root pod with no seccomp profile is refused."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rootish", "namespace": restricted},
           "spec": {"containers": [{"name": "c", "image": IMAGE}]}}  # fmt: skip
    proc = dry_run_create(kubectl, pod)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    for check in ("allowPrivilegeEscalation", "runAsNonRoot", "seccompProfile"):
        assert check in proc.stderr, proc.stderr
    # a Deployment with that template is stored, with a warning (its ReplicaSet's pods are what is refused)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "rootish", "namespace": restricted},
                  "spec": {"selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"]}}}  # fmt: skip
    applied = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(deployment))
    assert 'would violate PodSecurity "restricted:latest"' in applied.stderr, applied.stderr


def test_pods_of_the_model_servers_and_the_gateway_are_admitted(kubectl: Kubectl, restricted: str) -> None:
    kubectl("-n", restricted, "create", "serviceaccount", "wine-gateway")  # the gateway pod's identity
    for deployment in operator_deployments(restricted):
        proc = dry_run_create(kubectl, pod_of(deployment, restricted))
        assert proc.returncode == 0, f"{deployment['metadata']['name']}: {proc.stderr}"
        created = json.loads(proc.stdout)
        assert created["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        # a Deployment's template is checked too, as a warning (the pods are what enforcement refuses)
        applied = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(deployment))
        assert "PodSecurity" not in applied.stderr, applied.stderr


def test_the_model_server_pod_without_a_seccomp_profile_is_refused(kubectl: Kubectl, restricted: str) -> None:
    """The defect of issue #17: the pod as the operator built it before (no seccompProfile) is refused."""
    pod = pod_of(operator_deployments(restricted)[0], restricted)
    del pod["spec"]["securityContext"]["seccompProfile"]
    proc = dry_run_create(kubectl, pod)
    assert proc.returncode != 0 and "seccompProfile" in proc.stderr, proc.stderr


def test_the_operator_pod_from_the_chart_is_admitted(helm: Helm, kubectl: Kubectl, restricted: str) -> None:
    docs = helm.template("watchNamespaces={ml}", namespace=restricted)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod = pod_of(deployment, restricted)
    pod["spec"]["serviceAccountName"] = "default"  # the chart's ServiceAccount is not installed here
    proc = dry_run_create(kubectl, pod)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("provider", ["builtin", "istio"])
def test_network_policies_pass_the_api_servers_validation(
    kubectl: Kubectl, dry_run_namespace: str, provider: str
) -> None:
    isolation = NetworkIsolation.model_validate(
        {
            "enabled": True,
            "clients": [
                {"namespaceSelector": {"matchLabels": {"team": "shop"}}},
                {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}},
                {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "ingress"}}},
            ],
        }
    )
    for open_ in (False, True):
        settings = OperatorSettings.from_env({"MLROLLOUT_PROMETHEUS_POD_LABELS": ""} if open_ else {})
        iso = NetworkIsolation(enabled=True) if open_ else isolation
        for policy in children.network_policies(md(dry_run_namespace), iso, provider, settings):
            proc = kubectl("apply", "--server-side", "--dry-run=server", "-o", "json", "-f", "-",
                           input=json.dumps(children.strip_none(policy)), check=False)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            stored = json.loads(proc.stdout)
            assert stored["spec"]["ingress"] == policy["spec"]["ingress"]  # nothing dropped or defaulted away
            assert stored["spec"]["podSelector"] == policy["spec"]["podSelector"]
