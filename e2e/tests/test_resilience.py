"""End-to-end: the operator restarted mid-rollout, Prometheus gone mid-rollout, blue-green with a
rollback inside the window, and a platform policy chosen by namespace label.

Given/When/Then in each docstring.
"""

from __future__ import annotations

import os
import secrets
import subprocess
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
    step_index,
    wait_healthy,
    wait_rollout_end,
)

SLOW_STEPS: list[dict[str, Any]] = [
    {"shadow": {"mirrorPercent": 100, "minRequests": 150, "maxDuration": "4m"}},
    {"canary": {"weight": 25, "minRequests": 150, "maxDuration": "4m"}},
    {"canary": {"weight": 50, "minRequests": 200, "maxDuration": "4m"}},
]


def _setup(
    platform: Platform, namespace: str, cluster_objects: list[str], steps: list[dict[str, Any]], **spec: Any
) -> str:
    name = f"{namespace}-p"
    apply(platform.cluster, policy(name, steps, **spec))
    cluster_objects.append(f"rolloutpolicy/{name}")
    apply(platform.cluster, model_deployment(platform, namespace, "v1", "wine-v1.onnx", name))
    wait_healthy(platform.cluster, namespace, "v1")
    stack.start_loadgen(platform.cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20)
    return name


def test_operator_restart_mid_rollout_continues_from_status(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v2 rolling out and past its first step, When the operator pod is deleted,
    Then the new operator pod continues from the step in status (never back to step 0) and promotes v2."""
    name = _setup(platform, namespace, cluster_objects, SLOW_STEPS)
    apply(platform.cluster, model_deployment(platform, namespace, "v2", "wine-v2.onnx", name))
    stack.wait_until("the canary steps", lambda: step_index(platform.cluster, namespace) >= 1, 300, 1)
    before = step_index(platform.cluster, namespace)
    deployment = stack.operator_deployment(platform.cluster)
    old = platform.cluster.kubectl(
        "-n", stack.SYSTEM_NS, "get", "pods", "-l", f"app.kubernetes.io/instance={stack.RELEASE}", "-o", "name"
    ).split()
    platform.cluster.kubectl("-n", stack.SYSTEM_NS, "delete", *old, "--wait=false")
    platform.cluster.rollout_wait(stack.SYSTEM_NS, deployment)
    entry, indices = wait_rollout_end(platform.cluster, namespace, "v2", "after the restart", interval=1)
    load = stack.stop_loadgen(platform.cluster, namespace)
    report(
        "operator restart", f"step {before} at restart, then {sorted(set(indices))}; v2 {entry['outcome']}; load {load}"
    )
    assert entry["outcome"] == "promoted", entry
    assert all(i >= before for i in indices), (before, indices)
    assert load["failed"] == 0, load


def test_prometheus_gone_mid_rollout_never_promotes(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v2 rolling out under a policy that rolls back when evidence is inconclusive,
    When Prometheus is scaled to 0 during the first step, Then v2 is not promoted: without evidence the
    step runs out of time and the policy's inconclusive rule (rollback) applies, with a reason."""
    steps = [
        {"shadow": {"mirrorPercent": 100, "minRequests": 100000, "maxDuration": "90s"}},
        {"canary": {"weight": 50, "minRequests": 100, "maxDuration": "90s"}},
    ]
    name = _setup(platform, namespace, cluster_objects, steps, onInconclusive={"action": "rollback"})
    apply(platform.cluster, model_deployment(platform, namespace, "v2", "wine-v2.onnx", name))
    stack.wait_until("the shadow step", lambda: step_index(platform.cluster, namespace) >= 0, 300, 1)
    platform.cluster.kubectl("-n", stack.SYSTEM_NS, "scale", "deployment/prometheus", "--replicas=0")
    try:
        entry = stack.wait_until(
            "v2's rollout to end", lambda: history_entry(platform.cluster, namespace, "v2"), 600, 2
        )
        st = md_status(platform.cluster, namespace)
    finally:
        platform.cluster.kubectl("-n", stack.SYSTEM_NS, "scale", "deployment/prometheus", "--replicas=1")
        platform.cluster.rollout_wait(stack.SYSTEM_NS, "prometheus")
    load = stack.stop_loadgen(platform.cluster, namespace)
    analysis = st.get("lastAnalysis") or {}
    report("prometheus down", f"v2 {entry['outcome']}: {entry.get('reason')}; last verdict {analysis.get('verdict')}")
    assert entry["outcome"] != "promoted", entry
    assert st["stable"]["modelVersion"] == "v1"
    assert analysis.get("verdict") in ("inconclusive", "rollback", None), analysis
    assert load["failed"] == 0, load


def test_blue_green_switch_and_rollback_within_window(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v1 Healthy under load and a blue-green policy with preview analysis and a 5 minute window,
    When v2 passes its preview and traffic switches, and then `kubectl mlrollout undo` is run inside the
    window, Then traffic returns to v1's pods, which were kept running, and no client request fails."""
    steps = [
        {
            "blueGreen": {
                "previewAnalysis": True,
                "minRequests": 150,
                "maxDuration": "3m",
                "scaleDownDelay": "5m",
            }
        }
    ]
    _setup(platform, namespace, cluster_objects, steps)
    v1_revision = md_status(platform.cluster, namespace)["stable"]["revision"]
    apply(platform.cluster, model_deployment(platform, namespace, "v2", "wine-v2.onnx", f"{namespace}-p"))
    entry = stack.wait_until("the blue-green switch", lambda: history_entry(platform.cluster, namespace, "v2"), 600, 1)
    assert entry["outcome"] == "promoted", entry
    st = md_status(platform.cluster, namespace)
    assert st["stable"]["modelVersion"] == "v2"
    assert any(d["revision"] == v1_revision for d in st.get("scaleDowns") or []), st.get("scaleDowns")
    v1_pods = platform.cluster.kubectl(
        "-n", namespace, "get", "pods", "-l", f"mlrollout.io/revision={v1_revision}", "-o", "name"
    )
    assert v1_pods.strip(), "v1's pods should still run inside the rollback window"
    switched_at = time.time()
    started = time.monotonic()
    env_path = {"KUBECONFIG": platform.cluster.kubeconfig}
    subprocess.run(
        ["kubectl", "mlrollout", "undo", "wine", "-n", namespace],
        check=True,
        timeout=120,
        env={**os.environ, **env_path},
    )

    def back_on_v1() -> bool:
        s = md_status(platform.cluster, namespace)
        return (s.get("stable") or {}).get("revision") == v1_revision and (s.get("traffic") or {}).get("stable") == 100

    stack.wait_until("traffic back on v1", back_on_v1, 300, 1)
    switch_back = time.monotonic() - started
    time.sleep(5)
    load = stack.stop_loadgen(platform.cluster, namespace)
    report(
        "blue-green",
        f"switched to v2 (promoted {entry.get('finishedAt')}), undo at {switched_at:.3f} "
        f"took {switch_back:.1f}s; load {load}",
    )
    assert load["failed"] == 0, load


def test_platform_policy_selected_by_namespace_label(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given a cluster RolloutPolicy selecting namespaces labelled tier=<unique>, and a namespace with that
    label, When a ModelDeployment without rolloutPolicyRef is applied there and then updated to v2,
    Then the operator reports that policy in status and rolls v2 out under its steps."""
    tier = f"e2e-{secrets.token_hex(3)}"
    platform.cluster.kubectl("label", "namespace", namespace, f"tier={tier}")
    name = f"{namespace}-platform"
    steps = [{"canary": {"weight": 30, "minRequests": 60, "maxDuration": "3m"}}]
    body = policy(name, steps, priority=1000)
    body["spec"]["selector"] = {"namespaceSelector": {"matchLabels": {"tier": tier}}}
    apply(platform.cluster, body)
    cluster_objects.append(f"rolloutpolicy/{name}")
    apply(platform.cluster, model_deployment(platform, namespace, "v1", "wine-v1.onnx", None))
    st = wait_healthy(platform.cluster, namespace, "v1")
    assert name in (st.get("policy") or ""), st.get("policy")
    stack.start_loadgen(platform.cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20)
    apply(platform.cluster, model_deployment(platform, namespace, "v2", "wine-v2.onnx", None))
    weights: set[int] = set()

    def done() -> dict[str, Any] | None:
        s = md_status(platform.cluster, namespace)
        weights.add(int((s.get("traffic") or {}).get("candidate", 0)))
        return history_entry(platform.cluster, namespace, "v2")

    entry = stack.wait_until("v2's rollout to end", done, 600, 1)
    load = stack.stop_loadgen(platform.cluster, namespace)
    report(
        "platform policy", f"policy {md_status(platform.cluster, namespace).get('policy')}; weights {sorted(weights)}"
    )
    assert entry["outcome"] == "promoted", entry
    assert 30 in weights, weights
    assert load["failed"] == 0, load
