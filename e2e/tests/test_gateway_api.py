"""Gateway API end to end: a real implementation routes real client requests by the operator's HTTPRoute.

Traefik v3.6.12 (built from its Go module by e2e/traefik/build, one static binary that is both the Gateway
API controller and the proxy) runs as a pod with its own least-privilege RBAC, serving a Gateway this
scenario creates (named to the operator by `MLROLLOUT_GATEWAYAPI_*`). The load generator calls Traefik's
Service; no gateway of ours exists. The operator writes the HTTPRoute's weights step by step, Traefik
accepts the route (`status.parents`) and lists its features on the GatewayClass (no RequestMirror, so
the policy has canary steps only), and every look reads the model servers' own series (docs/traffic.md).

The split is measured on Traefik's side, which is the router's own count: its per-service request
counters (`traefik_service_requests_total`, one series per backend Service) as deltas over each interval
in which its API showed one set of loaded weights, so requests routed before Traefik applied a new
weight are never counted against it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import stack

from conftest import Platform, apply, entry_in, md_status, model_deployment, policy, report, wait_healthy

TRAEFIK_CONTROLLER = "traefik.io/gateway-controller"
GATEWAY = "e2e-traefik"  # not the operator's default name: the MLROLLOUT_GATEWAYAPI_* settings are used
LISTENER = "web"
WEB_PORT = 8000
ADMIN_PORT = 9000  # Traefik's own entry point: ping, API (its loaded routing) and Prometheus metrics
MODEL_PORT = 8080  # the revision Services' port (the HTTPRoute's backendRefs)
RATE = 40  # requests/s: enough for each 25 % step's candidate share to pass in well under a minute
Z_999 = 3.29  # two-sided 99.9 % normal quantile
STEPS: list[dict[str, Any]] = [  # no shadow step: Traefik 3.6 has no RequestMirror (the step would hold)
    # minRequests long enough (about 40 s at 40 requests/s) for looks past SPLIT_SETTLE_SECONDS (30 s), where
    # the operator counts the split from Traefik's own counters
    {"canary": {"weight": 25, "minRequests": 400, "maxDuration": "3m"}},
    {"canary": {"weight": 50, "minRequests": 800, "maxDuration": "3m"}},
]
NAMESPACED_RULES = [  # what Traefik's Gateway provider watches in its namespaces and the status it writes
    {"apiGroups": [""], "resources": ["services", "configmaps", "secrets"], "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"],
     "resources": ["gateways", "httproutes", "grpcroutes", "referencegrants", "backendtlspolicies"],
     "verbs": ["list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"],
     "resources": ["gateways/status", "httproutes/status", "grpcroutes/status", "backendtlspolicies/status"],
     "verbs": ["update"]},
]  # fmt: skip
CLUSTER_RULES = [  # the cluster-scoped part of the same (its client.go informers and UpdateStatus calls)
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gatewayclasses"], "verbs": ["list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gatewayclasses/status"], "verbs": ["update"]},
]  # fmt: skip
REQUESTS = re.compile(r'^traefik_service_requests_total\{[^}]*service="([^"@]+)@[^"]*"[^}]*\} (\S+)$', re.MULTILINE)


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


def _rbac(namespace: str, name: str) -> list[dict[str, Any]]:
    """Traefik's ServiceAccount, a Role in the one namespace it watches and a ClusterRole for the rest."""
    subject = [{"kind": "ServiceAccount", "name": "traefik", "namespace": namespace}]
    rbac = "rbac.authorization.k8s.io"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "traefik", "namespace": namespace},
         "automountServiceAccountToken": True},
        {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": {"name": "traefik", "namespace": namespace},
         "rules": NAMESPACED_RULES},
        {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": {"name": "traefik", "namespace": namespace},
         "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "traefik"}, "subjects": subject},
        {"apiVersion": f"{rbac}/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": CLUSTER_RULES},
        {"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": name}, "subjects": subject},
    ]  # fmt: skip


def _traefik(cluster: stack.Cluster, namespace: str, cluster_objects: list[str]) -> tuple[str, str]:
    """Traefik's image, RBAC, Deployment and Service, its GatewayClass and the Gateway; returns the URL
    clients call and the API server's proxy path to Traefik's own entry point."""
    image = subprocess.run(  # builds Traefik on a cold cache (about 18 min); progress on stderr
        ["bash", str(stack.REPO / "e2e/traefik/image")], stdout=subprocess.PIPE, text=True, check=True, timeout=3600
    ).stdout.strip()
    name = f"traefik-{namespace}"
    args = [
        f"--entryPoints.{LISTENER}.address=:{WEB_PORT}", f"--entryPoints.traefik.address=:{ADMIN_PORT}",
        "--ping=true", "--api=true", "--api.insecure=true", "--api.dashboard=false", "--metrics.prometheus=true",
        "--providers.kubernetesgateway=true", f"--providers.kubernetesgateway.namespaces={namespace}",
        "--log.level=INFO",
    ]  # fmt: skip
    objects: list[dict[str, Any]] = [
        *_rbac(namespace, name),
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": name},
         "spec": {"controllerName": TRAEFIK_CONTROLLER}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "traefik", "namespace": namespace},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "traefik"}},
                  # e2e-scrape: Prometheus scrapes its port "metrics", the operator's split evidence
                  "template": {"metadata": {"labels": {"app": "traefik", "mlrollout.io/e2e-scrape": "true"}},
                               "spec": {
                      "serviceAccountName": "traefik",
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                          "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [{
                          "name": "traefik", "image": image, "imagePullPolicy": "IfNotPresent", "args": args,
                          "ports": [{"name": "web", "containerPort": WEB_PORT},
                                    {"name": "metrics", "containerPort": ADMIN_PORT}],
                          "readinessProbe": {"httpGet": {"path": "/ping", "port": ADMIN_PORT}, "periodSeconds": 2},
                          "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                          "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                              "capabilities": {"drop": ["ALL"]}},
                      }]}}}},
        # clients reach the web entry point only; the admin port is read through the API server's pod proxy
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "traefik", "namespace": namespace},
         "spec": {"selector": {"app": "traefik"},
                  "ports": [{"name": "web", "port": WEB_PORT, "targetPort": WEB_PORT}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": GATEWAY, "namespace": namespace},
         "spec": {"gatewayClassName": name,
                  "listeners": [{"name": LISTENER, "port": WEB_PORT, "protocol": "HTTP"}]}},
    ]  # fmt: skip
    cluster_objects += [f"clusterrole/{name}", f"clusterrolebinding/{name}", f"gatewayclass/{name}"]
    for obj in objects:
        cluster.apply(json.dumps(obj))
    cluster.rollout_wait(namespace, "traefik")
    pod = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=traefik", "-o", "name").split()[0].split("/")[1]
    return f"http://traefik.{namespace}.svc:{WEB_PORT}", f"/api/v1/namespaces/{namespace}/pods/{pod}:{ADMIN_PORT}/proxy"


Weights = tuple[tuple[str, int], ...]  # Traefik's loaded weighted round robin: (backend service, weight)


@dataclass
class Split:
    """Traefik's routed counts per backend Service, cut into runs of one set of loaded weights."""

    admin: str  # the API server's proxy path to Traefik's admin entry point
    runs: list[tuple[Weights, dict[str, float], dict[str, float]]] = field(default_factory=list)  # first, last

    def _weights(self, cluster: stack.Cluster) -> Weights:
        services = json.loads(cluster.kubectl("get", "--raw", f"{self.admin}/api/http/services"))
        loaded = [
            (child["name"].split("@")[0], int(child.get("weight", 1)))
            for svc in services
            if svc["name"].split("@")[0].endswith("-wrr")
            for child in (svc.get("weighted") or {}).get("services") or []
        ]
        return tuple(sorted(loaded))

    def sample(self, cluster: stack.Cluster) -> None:
        """One reading of the counters, kept only when the weights read before and after it agree (a
        reload in between would leave the counts' weights unknown)."""
        before = self._weights(cluster)
        counts: dict[str, float] = defaultdict(float)
        for service, value in REQUESTS.findall(cluster.kubectl("get", "--raw", f"{self.admin}/metrics")):
            counts[service] += float(value)
        if not before or self._weights(cluster) != before:
            return
        if self.runs and self.runs[-1][0] == before:
            self.runs[-1] = (before, self.runs[-1][1], dict(counts))
        else:
            self.runs.append((before, dict(counts), dict(counts)))

    def shares(self, candidate: str) -> dict[int, tuple[int, int]]:
        """Per candidate weight strictly between 0 and 100: requests routed to stable and to `candidate`
        (a backend Service) over the runs with that weight loaded."""
        out: dict[int, tuple[int, int]] = {}
        key = candidate
        for weights, first, last in self.runs:
            loaded = dict(weights)
            if len(loaded) != 2 or not 0 < loaded.get(key, 0) < 100:
                continue
            [stable] = [s for s in loaded if s != key]
            delta = {s: int(last.get(s, 0) - first.get(s, 0)) for s in loaded}
            prev = out.get(loaded[key], (0, 0))
            out[loaded[key]] = (prev[0] + delta[stable], prev[1] + delta[key])
        return out


def _candidate_service(cluster: stack.Cluster, namespace: str) -> str | None:
    """The HTTPRoute's candidate backend (the second backendRef), as Traefik names it (its Gateway
    provider's loadService: namespace-name-http-port)."""
    route = cluster.get("httproute", "wine", namespace) or {}
    refs = [ref for rule in route.get("spec", {}).get("rules", []) for ref in rule.get("backendRefs", [])]
    return f"{namespace}-{refs[1]['name']}-http-{refs[1]['port']}" if len(refs) == 2 else None


def _within_binomial(weight: int, stable: int, candidate: int) -> bool:
    n, p = stable + candidate, weight / 100
    return n > 0 and abs(candidate / n - p) <= Z_999 * math.sqrt(p * (1 - p) / n)


def _roll_out(
    cluster: stack.Cluster, namespace: str, md: dict[str, Any], split: Split
) -> tuple[dict[str, Any], str | None, set[str], set[str]]:
    """Applies `md` and samples Traefik until its rollout ends; returns the history entry, the candidate's
    backend, the looks' evidence sources and the operator's split checks (decision and reason)."""
    version = md["spec"]["model"]["version"]
    apply(cluster, md)
    candidate: str | None = None
    sources: set[str] = set()
    checks: set[str] = set()  # the operator's own split check at the canary looks: "<decision>: <reason>"

    def done() -> dict[str, Any] | None:
        nonlocal candidate
        split.sample(cluster)
        candidate = candidate or _candidate_service(cluster, namespace)
        st = md_status(cluster, namespace)
        look = st.get("lastAnalysis") or {}
        if (st.get("currentStep") or {}).get("kind") == "canary" and look.get("metrics"):
            sources.add(look.get("source") or "?")
            checks.update(f"{m['decision']}: {m.get('reason')}" for m in look["metrics"] if m["name"] == "split")
        return entry_in(st, version)

    entry: dict[str, Any] = stack.wait_until(f"{version}'s rollout through Traefik to end", done, 420, 1)
    return entry, candidate, sources, checks


def test_gateway_api_through_traefik_promotes_good_and_rolls_back_slow(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given Traefik serving a Gateway, the operator installed with `rbac.gatewayAPI` and that Gateway's
    settings, and v1 Healthy behind the operator's HTTPRoute under client load through Traefik, When v2 (a
    good model) is applied, Then Traefik routes the clients' requests by each canary weight (its per-backend
    counts within a 99.9 % binomial interval), the looks read the model servers' series, and v2 is
    promoted; When v3 (about 10 ms slower) is applied next, Then it is rolled back on latency; and no
    client request fails in either."""
    cluster = platform.cluster
    started = time.monotonic()
    _gateway_api_crds(cluster)
    sets = [
        "rbac.gatewayAPI=true",
        "gatewayAPI.splitQuery=traefik",  # the split from Traefik's own counters
        f"gatewayAPI.gateway={GATEWAY}",
        f"gatewayAPI.gatewayNamespace={namespace}",
        f"gatewayAPI.sectionName={LISTENER}",
    ]
    stack.install_operator(cluster, platform.refs, platform.prometheus, extra_sets=sets)
    try:
        _scenario(platform, namespace, cluster_objects, started)
    finally:  # the other scenarios' operator: the chart's defaults (no Gateway API RBAC)
        stack.install_operator(cluster, platform.refs, platform.prometheus)


def _scenario(platform: Platform, namespace: str, cluster_objects: list[str], started: float) -> None:
    cluster = platform.cluster
    target, admin = _traefik(cluster, namespace, cluster_objects)
    name = f"{namespace}-p"
    apply(cluster, policy(name, STEPS))
    cluster_objects.append(f"rolloutpolicy/{name}")

    def md(version: str, filename: str) -> dict[str, Any]:
        body = model_deployment(platform, namespace, version, filename, name)
        body["spec"]["traffic"] = {"provider": "gatewayAPI"}
        return body

    apply(cluster, md("v1", "wine-v1.onnx"))
    healthy = wait_healthy(cluster, namespace, "v1")
    assert healthy["routing"]["accepted"] == "True", healthy["routing"]
    assert healthy["routing"]["mirror"] == "none", healthy["routing"]  # Traefik lists no RequestMirror
    assert cluster.get("deployment", "wine", namespace) is None  # no gateway of ours
    stack.start_loadgen(cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=RATE, target=target)
    ready = time.monotonic() - started

    split = Split(admin)
    good_started = time.monotonic()
    good, candidate, sources, checks = _roll_out(cluster, namespace, md("v2", "wine-v2.onnx"), split)
    stack.wait_until(
        "the old stable's scale-down after the promotion",
        lambda: not md_status(cluster, namespace).get("scaleDowns"),
        120,
        1,
    )
    good_took = time.monotonic() - good_started
    time.sleep(3)  # requests in flight when the old pods went away are counted in the next report line
    after_good = stack.loadgen_stats(cluster, namespace)
    route_after_good = cluster.get("httproute", "wine", namespace) or {}
    shares = split.shares(candidate or "?")

    slow_started = time.monotonic()
    slow_split = Split(admin)
    slow, slow_candidate, _, _ = _roll_out(cluster, namespace, md("v3", "wine-v3-slow.onnx"), slow_split)
    slow_took = time.monotonic() - slow_started
    time.sleep(3)
    load = stack.stop_loadgen(cluster, namespace)
    st = md_status(cluster, namespace)
    route = cluster.get("httproute", "wine", namespace) or {}
    refused = [ln for ln in cluster.kubectl("logs", "-n", namespace, "deployment/traefik").splitlines()
               if "forbidden" in ln]  # fmt: skip
    report(
        "gateway API (Traefik)",
        f"Traefik, Gateway and v1 ready in {ready:.0f}s; v2 {good['outcome']} in {good_took:.0f}s, Traefik's "
        f"routed counts per candidate weight (stable, candidate) {shares}, the operator's split checks "
        f"{sorted(checks)}; v3 {slow['outcome']} in "
        f"{slow_took:.0f}s (Traefik's counts {slow_split.shares(slow_candidate or '?')}): {slow.get('reason')}; "
        f"load after v2 {after_good}; load at the end {load}; "
        f"scenario {time.monotonic() - started:.0f}s",
    )
    assert refused == [], refused  # the least-privilege RBAC covers everything Traefik watches and writes
    assert good["outcome"] == "promoted", good
    assert sources == {"model"}, sources
    # the operator counted the split from Traefik's counters (gatewayAPI.splitQuery: traefik) and it held
    assert all(c.startswith("pass: traffic split") for c in checks), checks
    assert any("observed vs 25% configured" in c for c in checks), checks  # counted, not just "not tested"
    assert not any(n.startswith("traffic-split check") for n in healthy["routing"].get("notApplied") or [])
    assert set(shares) == {25, 50}, (shares, split.runs)
    for weight, (stable, cand) in shares.items():
        assert stable + cand >= 100, (weight, stable, cand)
        assert _within_binomial(weight, stable, cand), (weight, stable, cand)
    assert after_good["failed"] == 0, after_good
    assert set(after_good["versions"]) == {"v1", "v2"}, after_good
    [rule] = route_after_good["spec"]["rules"]
    assert [b["weight"] for b in rule["backendRefs"]] == [100], rule  # all on the promoted revision
    parents = route_after_good["status"]["parents"]
    assert any(
        p["controllerName"] == TRAEFIK_CONTROLLER
        and any(c["type"] == "Accepted" and c["status"] == "True" for c in p["conditions"])
        for p in parents
    ), parents

    assert slow["outcome"] == "rolledBack", slow
    assert "latency" in slow.get("reason", ""), slow
    assert st["stable"]["modelVersion"] == "v2", st
    assert load["failed"] == 0, load
    [stable_ref] = rule["backendRefs"]
    serving = [(b["name"], b["weight"]) for r in route["spec"]["rules"] for b in r["backendRefs"] if b["weight"] > 0]
    assert serving == [(stable_ref["name"], 100)], route["spec"]  # v3 rolled back: all on v2 again
