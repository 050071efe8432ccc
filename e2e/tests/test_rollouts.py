"""End-to-end rollouts with real pods: first deployment, a good canary, a slow model, a corrupt file, and a
whole rollout in a namespace that enforces Pod Security "restricted".

Given/When/Then in each docstring. Traffic comes from the load generator pod through the gateway Service.
"""

from __future__ import annotations

import json
import time
from typing import Any

import stack

from conftest import (
    Platform,
    apply,
    entry_in,
    history_entry,
    md_status,
    model_deployment,
    policy,
    report,
    wait_healthy,
    wait_outcome,
)

CANARY_STEPS: list[dict[str, Any]] = [
    {"shadow": {"mirrorPercent": 100, "minRequests": 150, "maxDuration": "3m"}},
    {"canary": {"weight": 25, "minRequests": 100, "maxDuration": "3m"}},
    {"canary": {"weight": 50, "minRequests": 150, "maxDuration": "3m"}},
]


def _policy(platform: Platform, cluster_objects: list[str], name: str, **spec: Any) -> str:
    steps = spec.pop("steps", CANARY_STEPS)
    apply(platform.cluster, policy(name, steps, **spec))
    cluster_objects.append(f"rolloutpolicy/{name}")
    return name


def _deploy_v1(platform: Platform, namespace: str, policy_name: str | None) -> None:
    apply(platform.cluster, model_deployment(platform, namespace, "v1", "wine-v1.onnx", policy_name))
    wait_healthy(platform.cluster, namespace, "v1")


def test_first_deployment_becomes_healthy(platform: Platform, namespace: str, cluster_objects: list[str]) -> None:
    """Given the operator installed with helm, When a ModelDeployment for v1 is applied,
    Then it becomes Healthy with v1 stable, and the gateway Service answers inferences with v1."""
    name = _policy(platform, cluster_objects, f"{namespace}-p")
    _deploy_v1(platform, namespace, name)
    st = md_status(platform.cluster, namespace)
    assert st["stable"]["modelVersion"] == "v1"
    assert st["stable"]["sha256"] == platform.files["wine-v1.onnx"]
    stack.start_loadgen(platform.cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=10)
    stack.wait_until(
        "20 answered requests", lambda: stack.loadgen_stats(platform.cluster, namespace).get("ok", 0) >= 20, 120
    )
    load = stack.stop_loadgen(platform.cluster, namespace)
    assert load["failed"] == 0, load
    assert set(load["versions"]) == {"v1"}, load


def test_good_candidate_promoted_with_zero_failed_requests(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v1 Healthy under steady client load, When v2 (a good model) is applied,
    Then it goes through shadow and the canary steps and is promoted, and no client request fails."""
    name = _policy(platform, cluster_objects, f"{namespace}-p")
    _deploy_v1(platform, namespace, name)
    stack.start_loadgen(platform.cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20)
    started = time.monotonic()
    apply(platform.cluster, model_deployment(platform, namespace, "v2", "wine-v2.onnx", name))
    seen: set[str] = set()

    def done() -> dict[str, Any] | None:
        st = md_status(platform.cluster, namespace)
        step, traffic = st.get("currentStep") or {}, st.get("traffic") or {}
        if step:
            seen.add(f"{step.get('kind')}:{traffic.get('candidate', 0)}:{traffic.get('mirror', 0)}")
        return history_entry(platform.cluster, namespace, "v2")

    entry = stack.wait_until("v2's rollout to end", done, 600, 1)
    # The rollout is not over for clients at promotion: the promoted pods are relabelled (rolled) and the
    # old stable is scaled down afterwards. Keep the load on until that is done.
    stack.wait_until(
        "the old stable's scale-down after the promotion",
        lambda: not md_status(platform.cluster, namespace).get("scaleDowns"),
        120,
        1,
    )
    time.sleep(5)  # requests in flight when the old pods went away are counted in the next report line
    load = stack.stop_loadgen(platform.cluster, namespace)
    report(
        "good canary",
        f"v2 {entry['outcome']} in {time.monotonic() - started:.0f}s; steps seen {sorted(seen)}; load {load}",
    )
    assert entry["outcome"] == "promoted", entry
    assert any(s.startswith("shadow:") for s in seen), seen
    assert any(s.startswith("canary:") for s in seen), seen
    assert load["failed"] == 0, load
    assert load["ok"] > 0 and "v2" in load["versions"], load
    assert md_status(platform.cluster, namespace)["stable"]["modelVersion"] == "v2"


def test_slow_candidate_rolled_back_automatically(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v1 Healthy under load, When v3 (same answers, about 10 ms slower per request) is applied,
    Then the latency analysis fails it and it is rolled back on its own; the time from the first
    request it answered to candidate weight 0 is measured and reported."""
    name = _policy(platform, cluster_objects, f"{namespace}-p")
    _deploy_v1(platform, namespace, name)
    stack.start_loadgen(platform.cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20)
    apply(platform.cluster, model_deployment(platform, namespace, "v3", "wine-v3-slow.onnx", name))
    first_traffic: float | None = None
    weight_zero: float | None = None

    def done() -> dict[str, Any] | None:
        nonlocal first_traffic, weight_zero
        st = md_status(platform.cluster, namespace)
        traffic = st.get("traffic") or {}
        receiving = traffic.get("candidate", 0) > 0 or traffic.get("mirror", 0) > 0
        if receiving and first_traffic is None:
            first_traffic = time.time()
        if first_traffic is not None and not receiving and weight_zero is None:
            weight_zero = time.time()
        return entry_in(st, "v3")  # the same read: the rollback's status write shows weight 0 with the entry

    entry = stack.wait_until("v3's rollout to end", done, 600, 1)
    load = stack.stop_loadgen(platform.cluster, namespace)
    assert entry["outcome"] == "rolledBack", entry
    assert first_traffic is not None and weight_zero is not None
    report(
        "bad candidate",
        f"v3 rolled back: {entry.get('reason')}; first candidate traffic -> weight 0 observed in "
        f"{weight_zero - first_traffic:.1f}s; load {load}",
    )
    st = md_status(platform.cluster, namespace)
    assert st["stable"]["modelVersion"] == "v1"
    assert st["phase"] == "Degraded", st
    assert (st.get("traffic") or {}).get("candidate", 0) == 0
    assert load["failed"] == 0, load


def test_wrong_sha256_never_receives_traffic(platform: Platform, namespace: str, cluster_objects: list[str]) -> None:
    """Given v1 Healthy under load, When v4 is applied with a sha256 that does not match its file,
    Then the model server refuses the file, v4 never receives a client request, and it is rolled back
    with a reason that names the digest."""
    name = _policy(platform, cluster_objects, f"{namespace}-p")
    _deploy_v1(platform, namespace, name)
    stack.start_loadgen(platform.cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20)
    wrong = "0" * 64
    apply(platform.cluster, model_deployment(platform, namespace, "v4", "wine-v2.onnx", name, sha256=wrong))
    entry = wait_outcome(platform.cluster, namespace, "v4", 600)
    load = stack.stop_loadgen(platform.cluster, namespace)
    report("wrong sha256", f"v4 {entry['outcome']}: {entry.get('reason')}; load {load}")
    assert entry["outcome"] == "rolledBack", entry
    assert "sha256" in entry.get("reason", ""), entry
    assert "v4" not in load["versions"], load
    assert load["failed"] == 0, load
    assert md_status(platform.cluster, namespace)["stable"]["modelVersion"] == "v1"


def _refused_by_pod_security(platform: Platform, namespace: str) -> str:
    """A root pod without a seccomp profile, created as a server-side dry run: the API server's answer."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "breaks-restricted", "namespace": namespace},
           "spec": {"containers": [{"name": "c", "image": platform.refs["SERVING"], "command": ["true"]}]}}  # fmt: skip
    return platform.cluster.kubectl_text("create", "--dry-run=server", "-f", "-", "-o", "name", stdin=json.dumps(pod))


def test_rollout_in_a_pod_security_restricted_namespace(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given a namespace enforcing Pod Security "restricted" (the API server refuses a pod that breaks it),
    When v1 is deployed there with the operator's NetworkPolicies on, and v2 rolled out under client load,
    Then every pod of the model servers, the gateway and the load generator is admitted (no FailedCreate),
    v2 is promoted, and no client request fails. The node's CNI (bridge) does not enforce NetworkPolicies:
    this shows they are created and change nothing for the rollout, not that they isolate anything."""
    cluster = platform.cluster
    cluster.kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in stack.POD_SECURITY_RESTRICTED.items()))
    refusal = _refused_by_pod_security(platform, namespace)
    assert 'violates PodSecurity "restricted:latest"' in refusal, refusal
    name = _policy(platform, cluster_objects, f"{namespace}-p")
    isolated = {"enabled": True, "clients": [{"podSelector": {"matchLabels": {"app": "mlrollout-loadgen"}}}]}
    v1 = model_deployment(platform, namespace, "v1", "wine-v1.onnx", name)
    apply(cluster, {**v1, "spec": {**v1["spec"], "networkPolicy": isolated}})
    wait_healthy(cluster, namespace, "v1")
    stack.start_loadgen(cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20)
    started = time.monotonic()
    v2 = model_deployment(platform, namespace, "v2", "wine-v2.onnx", name)
    apply(cluster, {**v2, "spec": {**v2["spec"], "networkPolicy": isolated}})
    pods_seen: dict[str, str] = {}

    def done() -> dict[str, Any] | None:
        for pod in json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]:
            sc = pod["spec"].get("securityContext") or {}
            pods_seen[pod["metadata"]["name"]] = (sc.get("seccompProfile") or {}).get("type", "none")
        return history_entry(cluster, namespace, "v2")

    entry = stack.wait_until("v2's rollout to end", done, 600, 2)
    stack.wait_until("the old stable's scale-down", lambda: not md_status(cluster, namespace).get("scaleDowns"), 120)
    time.sleep(5)  # requests in flight when the old pods went away are counted in the next report line
    load = stack.stop_loadgen(cluster, namespace)
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    failed_creates = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    policies = cluster.kubectl("get", "networkpolicies", "-n", namespace, "-o", "name").split()
    report(
        "restricted namespace",
        f"v2 {entry['outcome']} in {time.monotonic() - started:.0f}s; {len(pods_seen)} pods seen, seccomp "
        f"{sorted(set(pods_seen.values()))}; FailedCreate {len(failed_creates)}; {policies}; load {load}",
    )
    assert failed_creates == [], failed_creates
    assert entry["outcome"] == "promoted", entry
    assert set(pods_seen.values()) == {"RuntimeDefault"}, pods_seen
    assert sorted(policies) == ["networkpolicy.networking.k8s.io/wine-gateway",
                                "networkpolicy.networking.k8s.io/wine-model-server"]  # fmt: skip
    assert load["failed"] == 0, load
    assert load["ok"] > 0 and "v2" in load["versions"], load
