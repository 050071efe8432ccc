"""Gateway API end to end: a real implementation routes real client requests by the operator's HTTPRoute.

Traefik v3.6.12 (built from its Go module by e2e/traefik/build, one static binary that is both the Gateway
API controller and the proxy) runs as a pod with its own least-privilege RBAC, watching this namespace's
Gateway `mlrollout` (the operator's default `MLROLLOUT_GATEWAYAPI_GATEWAY`). The load generator calls
Traefik's Service; no gateway of ours exists. The operator writes the HTTPRoute's weights step by step,
Traefik accepts the route (`status.parents`) and reports its features on the GatewayClass (no
RequestMirror), and every look reads the model servers' own series (docs/traffic.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from typing import Any

import stack

from conftest import Platform, apply, history_entry, md_status, model_deployment, policy, report, wait_healthy

TRAEFIK_CONTROLLER = "traefik.io/gateway-controller"
WEB_PORT = 8000
Z_999 = 3.29  # two-sided 99.9% normal quantile
STEPS: list[dict[str, Any]] = [
    {"canary": {"weight": 20, "minRequests": 150, "maxDuration": "4m"}},
    {"canary": {"weight": 50, "minRequests": 150, "maxDuration": "4m"}},
]
GATEWAY_API_RULES = [  # what Traefik's Gateway provider watches and the status it writes (its client.go)
    {"apiGroups": [""], "resources": ["namespaces", "services", "configmaps", "secrets"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"],
     "resources": ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants", "backendtlspolicies"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"],
     "resources": ["gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status",
                   "backendtlspolicies/status"],
     "verbs": ["update"]},
]  # fmt: skip


def _gateway_api_crds(cluster: stack.Cluster) -> None:
    """The official standard-channel CRDs (the same pinned release the cluster tier tests against)."""
    files = subprocess.run(
        ["bash", str(stack.REPO / "e2e/cluster/fetch-traffic-crds")], capture_output=True, text=True, check=True,
        timeout=600,
    ).stdout.split()  # fmt: skip
    for path in files:
        if "gateway-api@" in path:
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", path, timeout=300)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                    "crd/httproutes.gateway.networking.k8s.io", "crd/gateways.gateway.networking.k8s.io")  # fmt: skip


def _traefik(cluster: stack.Cluster, namespace: str, cluster_objects: list[str]) -> str:
    """Traefik's image, RBAC, Deployment and Service, its GatewayClass and the Gateway; returns its address."""
    image = subprocess.run(  # builds Traefik on a cold cache (about 18 min); progress on stderr
        ["bash", str(stack.REPO / "e2e/traefik/image")], stdout=subprocess.PIPE, text=True, check=True, timeout=3600
    ).stdout.strip()
    name = f"traefik-{namespace}"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "traefik", "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": GATEWAY_API_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": "traefik", "namespace": namespace}]},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": name},
         "spec": {"controllerName": TRAEFIK_CONTROLLER}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "traefik", "namespace": namespace},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "traefik"}},
                  "template": {"metadata": {"labels": {"app": "traefik"}}, "spec": {
                      "serviceAccountName": "traefik",
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                          "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [{
                          "name": "traefik", "image": image, "imagePullPolicy": "IfNotPresent",
                          "args": [f"--entryPoints.web.address=:{WEB_PORT}", "--entryPoints.traefik.address=:9000",
                                   "--ping=true", "--ping.entryPoint=traefik", "--providers.kubernetesgateway=true",
                                   f"--providers.kubernetesgateway.namespaces={namespace}", "--log.level=INFO"],
                          "ports": [{"name": "web", "containerPort": WEB_PORT}],
                          "readinessProbe": {"httpGet": {"path": "/ping", "port": 9000}, "periodSeconds": 2},
                          "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                          "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                              "capabilities": {"drop": ["ALL"]}},
                      }]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "traefik", "namespace": namespace},
         "spec": {"selector": {"app": "traefik"},
                  "ports": [{"name": "web", "port": WEB_PORT, "targetPort": WEB_PORT}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "mlrollout", "namespace": namespace},
         "spec": {"gatewayClassName": name, "listeners": [{"name": "web", "port": WEB_PORT, "protocol": "HTTP"}]}},
    ]  # fmt: skip
    cluster_objects += [f"clusterrole/{name}", f"clusterrolebinding/{name}", f"gatewayclass/{name}"]
    for obj in objects:
        cluster.apply(json.dumps(obj))
    cluster.rollout_wait(namespace, "traefik")
    return f"http://traefik.{namespace}.svc:{WEB_PORT}"


def _share_of(analysis: dict[str, Any]) -> tuple[int, int]:
    """Stable's and the candidate's requests in the look's window (the errorRate test's samples)."""
    samples = next(m["samples"] for m in analysis["metrics"] if m["name"].startswith("errorRate"))
    return int(samples["stable"]), int(samples["candidate"])


def test_gateway_api_rollout_through_traefik_promotes_with_zero_failed_requests(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given Traefik serving Gateway `mlrollout` and v1 Healthy behind the operator's HTTPRoute under client
    load through Traefik, When v2 (a good model) is applied, Then Traefik routes the clients' requests by
    each canary weight (the model servers' counts within a 99.9% binomial interval of it), every look reads
    the model servers' series, v2 is promoted, and no client request fails."""
    cluster = platform.cluster
    _gateway_api_crds(cluster)
    stack.install_operator(cluster, platform.refs, platform.prometheus, extra_sets=["rbac.gatewayAPI=true"])
    target = _traefik(cluster, namespace, cluster_objects)
    name = f"{namespace}-p"
    # model-server latency is the model's own sub-millisecond time: an absolute margin (docs/traffic.md)
    apply(cluster, policy(name, STEPS, significance={"alpha": 0.05, "margins": {"latency": {"absolute": 0.005}}}))
    cluster_objects.append(f"rolloutpolicy/{name}")
    v1 = model_deployment(platform, namespace, "v1", "wine-v1.onnx", name)
    v1["spec"]["traffic"] = {"provider": "gatewayAPI"}
    apply(cluster, v1)
    healthy = wait_healthy(cluster, namespace, "v1")
    assert healthy["routing"]["accepted"] == "True", healthy["routing"]
    assert healthy["routing"]["mirror"] == "none", healthy["routing"]  # Traefik lists no RequestMirror
    assert cluster.get("deployment", "wine", namespace) is None  # no gateway of ours
    stack.start_loadgen(cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20, target=target)
    started = time.monotonic()
    v2 = model_deployment(platform, namespace, "v2", "wine-v2.onnx", name)
    v2["spec"]["traffic"] = {"provider": "gatewayAPI"}
    apply(cluster, v2)
    last_look: dict[int, dict[str, Any]] = {}  # weight -> the latest look taken during that canary step
    sources: set[str] = set()

    def done() -> dict[str, Any] | None:
        st = md_status(cluster, namespace)
        step, traffic, look = st.get("currentStep") or {}, st.get("traffic") or {}, st.get("lastAnalysis") or {}
        if step.get("kind") == "canary" and look.get("time", "") >= step.get("startedAt", "~") and look.get("metrics"):
            last_look[int(traffic.get("candidate", 0))] = look
            sources.add(look.get("source") or "?")
        return history_entry(cluster, namespace, "v2")

    entry = stack.wait_until("v2's rollout through Traefik to end", done, 900, 1)
    stack.wait_until(
        "the old stable's scale-down after the promotion",
        lambda: not md_status(cluster, namespace).get("scaleDowns"),
        180,
        1,
    )
    time.sleep(5)
    load = stack.stop_loadgen(cluster, namespace)
    route = json.loads(cluster.kubectl("get", "httproute", "wine", "-n", namespace, "-o", "json"))
    splits = {w: _share_of(look) for w, look in last_look.items()}
    report("gateway API (Traefik)",
           f"v2 {entry['outcome']} in {time.monotonic() - started:.0f}s; model-server counts per weight "
           f"(stable, candidate) {splits}; load {load}")  # fmt: skip
    assert entry["outcome"] == "promoted", entry
    assert sources == {"model"}, sources
    assert set(splits) == {20, 50}, last_look
    for weight, (stable, candidate) in splits.items():
        n, p = stable + candidate, weight / 100
        assert n >= 100, (weight, stable, candidate)
        assert abs(candidate / n - p) <= Z_999 * math.sqrt(p * (1 - p) / n), (weight, stable, candidate)
    assert load["failed"] == 0, load
    assert set(load["versions"]) == {"v1", "v2"}, load
    [rule] = route["spec"]["rules"]
    assert [b["weight"] for b in rule["backendRefs"]] == [100], rule  # all on the promoted revision
    parents = route["status"]["parents"]
    assert any(p["controllerName"] == TRAEFIK_CONTROLLER for p in parents), parents
