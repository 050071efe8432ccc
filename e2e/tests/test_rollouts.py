"""End-to-end rollouts with real pods: first deployment, a good canary, a slow model, a corrupt file.

Given/When/Then in each docstring. Traffic comes from the load generator pod through the gateway Service.
"""

from __future__ import annotations

import time
from typing import Any

import stack

from conftest import (
    Platform,
    apply,
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
    """Given v1 Healthy under load, When v3 (same answers, about 20 ms slower per request) is applied,
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
        return history_entry(platform.cluster, namespace, "v3")

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
