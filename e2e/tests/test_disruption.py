"""End-to-end: disruptions during a rollout, the node's and the operator's.

A node drain (cordon, then evictions through the Eviction API as `kubectl drain` sends them) while a canary
serves, and the operator's node dying mid-rollout (its process frozen, so it cleans nothing up, then its pod
force-deleted, as for a lost node). The local cluster has one node: each docstring says what that proves.

Given/When/Then in each docstring.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
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

MD = "wine"
SELECTOR = f"app.kubernetes.io/managed-by=mlrollout,mlrollout.io/model-deployment={MD}"
PDB_REFUSAL = "disruption budget"  # the Eviction API's 429: "Cannot evict pod as it would violate the pod's ..."


def _two_of_everything(platform: Platform, namespace: str, version: str, filename: str, policy_name: str) -> None:
    """The ModelDeployment with two model-server pods per track and two gateway pods (so each has a budget)."""
    body = model_deployment(platform, namespace, version, filename, policy_name)
    body["spec"]["replicas"] = 2
    body["spec"]["gateway"] = {"replicas": 2}
    apply(platform.cluster, body)


def _pods(cluster: stack.Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json", timeout=60)
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _evict(cluster: stack.Cluster, namespace: str, pod: str) -> str:
    """One eviction through the Eviction API (what `kubectl drain` sends per pod); the server's answer as text."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction"
    return cluster.kubectl_text("create", "--raw", path, "-f", "-", stdin=json.dumps(body))


def _budgets(cluster: stack.Cluster, namespace: str) -> dict[str, int]:
    """PodDisruptionBudget name -> disruptionsAllowed, as the disruption controller last computed it."""
    out = cluster.kubectl("get", "pdb", "-n", namespace, "-o", "json", timeout=60)
    return {
        b["metadata"]["name"]: int((b.get("status") or {}).get("disruptionsAllowed", 0))
        for b in json.loads(out)["items"]
    }


def test_node_drain_mid_canary_loses_no_request(platform: Platform, namespace: str, cluster_objects: list[str]) -> None:
    """Given v1 (two model-server pods, two gateway pods) under load and v2 in a 50 % canary with two pods,
    When the node is drained of the ModelDeployment's pods (`kubectl drain --pod-selector`: cordon, then the
    Eviction API for every pod, refusals retried), Then each budget lets exactly one pod of its group go
    (gateway, stable, candidate) and refuses the other with 429 while the evicted pod's replacement cannot be
    scheduled; after uncordon the replacements run, v2 is promoted and no client request fails.

    With one node this proves: the operator's budgets exist for every group during a canary, the Eviction API
    enforces them (never the last ready pod of a group), and losing one of two pods of every group at once,
    through the terminating pods' drain, loses no request. It does not show pods moving to another node (there
    is none): the replacements wait Pending until the node is uncordoned, as they would wait for capacity.
    """
    name = f"{namespace}-p"
    # long enough (about 200 s of candidate traffic at 10 requests/s) that the drain falls inside the step
    steps = [{"canary": {"weight": 50, "minRequests": 2000, "maxDuration": "8m"}}]
    apply(platform.cluster, policy(name, steps))
    cluster_objects.append(f"rolloutpolicy/{name}")
    _two_of_everything(platform, namespace, "v1", "wine-v1.onnx", name)
    wait_healthy(platform.cluster, namespace, "v1")
    stack.start_loadgen(platform.cluster, namespace, platform.refs, MD, MD, platform.rows, rate=20)
    _two_of_everything(platform, namespace, "v2", "wine-v2.onnx", name)
    stack.wait_until("the canary step", lambda: step_index(platform.cluster, namespace) >= 0, 300, 1)
    st = md_status(platform.cluster, namespace)
    revisions = {"stable": st["stable"]["revision"], "candidate": st["candidate"]["revision"]}
    groups = {
        "gateway": f"{SELECTOR},app.kubernetes.io/component=gateway",
        **{role: f"{SELECTOR},mlrollout.io/revision={rev}" for role, rev in revisions.items()},
    }
    budget_names = {"gateway": MD, **{role: f"{MD}-{rev}" for role, rev in revisions.items()}}

    def budgets_ready() -> dict[str, int] | None:
        found = _budgets(platform.cluster, namespace)
        return found if all(found.get(b) == 1 for b in budget_names.values()) else None

    stack.wait_until("a budget allowing one disruption per group", budgets_ready, 180, 2)
    before = {
        g: {p["metadata"]["name"] for p in _pods(platform.cluster, namespace, s) if _ready(p)}
        for g, s in groups.items()
    }
    assert all(len(names) == 2 for names in before.values()), before
    node = platform.cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").strip()
    step_at_drain = step_index(platform.cluster, namespace)
    started = time.monotonic()
    try:
        drain = platform.cluster.kubectl_text(
            "drain", node, f"--pod-selector={SELECTOR}", "--delete-emptydir-data", "--ignore-daemonsets",
            "--timeout=45s", timeout=120,
        )  # fmt: skip
        # a pod of `before` that is gone or terminating was evicted; the rest were kept
        staying = {
            g: {
                p["metadata"]["name"]
                for p in _pods(platform.cluster, namespace, s)
                if not p["metadata"].get("deletionTimestamp")
            }
            for g, s in groups.items()
        }
        evicted = {g: sorted(before[g] - staying[g]) for g in groups}
        kept = {g: sorted(before[g] & staying[g]) for g in groups}
        # the pod left of each group is its last ready one: a direct eviction is refused with 429
        refusals = {g: _evict(platform.cluster, namespace, kept[g][0]) for g in groups if len(kept[g]) == 1}
        pending = [
            p["metadata"]["name"]
            for s in groups.values()
            for p in _pods(platform.cluster, namespace, s)
            if (p.get("status") or {}).get("phase") == "Pending"
        ]
        cordoned = time.monotonic() - started
    finally:
        platform.cluster.kubectl("uncordon", node, check=False)
    uncordoned = time.monotonic()
    for deployment in (MD, *(f"{MD}-{rev}" for rev in revisions.values())):
        platform.cluster.rollout_wait(namespace, deployment, timeout=300)
    back = time.monotonic() - uncordoned
    entry, indices = wait_rollout_end(platform.cluster, namespace, "v2", "after the drain", interval=2)
    load = stack.stop_loadgen(platform.cluster, namespace)
    report(
        "node drain",
        f"step {step_at_drain} at the drain; evicted {evicted}; refused {sorted(refusals)}; cordoned {cordoned:.0f}s, "
        f"replacements ready {back:.0f}s after uncordon; v2 {entry['outcome']}; load {load}",
    )
    assert all(len(names) == 1 for names in evicted.values()), (evicted, drain[-3000:])
    assert PDB_REFUSAL in drain, drain[-3000:]  # drain itself met the budgets (and retried)
    assert sorted(refusals) == sorted(groups), (refusals, kept)
    for group, answer in refusals.items():
        assert PDB_REFUSAL in answer and ("TooManyRequests" in answer or "429" in answer), (group, answer)
    assert len(pending) >= 3, pending  # a replacement per group, unschedulable while cordoned
    assert entry["outcome"] == "promoted", entry
    assert all(i >= step_at_drain for i in indices), (step_at_drain, indices)  # the drain sent no step back
    assert load["failed"] == 0, load


# --- the operator's node dies ------------------------------------------------------------------------------

SLOW_STEPS: list[dict[str, Any]] = [
    {"shadow": {"mirrorPercent": 100, "minRequests": 150, "maxDuration": "4m"}},
    {"canary": {"weight": 25, "minRequests": 150, "maxDuration": "4m"}},
    {"canary": {"weight": 50, "minRequests": 200, "maxDuration": "4m"}},
]


def _containerd_socket() -> Path:
    """The local node's containerd (e2e/node): the operator's process is frozen through it, as on a dead node."""
    state = os.environ.get("MLROLLOUT_STATE")
    sock = Path(state or "/nonexistent") / "node" / "containerd" / "containerd.sock"
    if not sock.exists():
        pytest.fail(f"freezing a pod's process needs the local node's containerd (e2e/node), none at {sock}: "
                    "run the e2e tier with --local")  # fmt: skip
    return sock


def _ctr(sock: Path, *args: str) -> str:
    proc = subprocess.run(
        ["ctr", "--address", str(sock), "-n", "k8s.io", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout


def _operator_pods(cluster: stack.Cluster) -> list[dict[str, Any]]:
    return _pods(cluster, stack.SYSTEM_NS, f"app.kubernetes.io/instance={stack.RELEASE}")


def _peers(cluster: stack.Cluster) -> list[str]:
    """The operator processes in the chart's ClusterKopfPeering (kopf's keep-alive entries), for the report."""
    out = cluster.kubectl("get", "clusterkopfpeering", "mlrollout", "-o", "json", "--ignore-not-found", check=False)
    try:
        return sorted((json.loads(out).get("status") or {}).keys()) if out.strip() else []
    except ValueError:
        return []


def _step_events(cluster: stack.Cluster, namespace: str) -> dict[str, int]:
    """'step N' -> how many StepStarted Events the operator posted for it (counting aggregated repeats)."""
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector=reason=StepStarted", "-o", "json")
    counts: dict[str, int] = {}
    for ev in json.loads(out)["items"]:
        step = " ".join(str(ev.get("message", "")).split()[:2])
        counts[step] = counts.get(step, 0) + int(ev.get("count") or 1)
    return counts


def test_operator_node_death_mid_rollout_resumes_from_status(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v2 rolling out under load and past its first step, When the operator's process is frozen (SIGSTOP
    through the node's containerd: like a node that stopped answering, it writes nothing more and cleans up
    nothing, its kopf peering entry stays) and its pod is force-deleted (what the pod garbage collector or an
    admin does for a lost node), Then the Deployment starts a new operator pod, which acts once the dead peer's
    entry has expired and continues from the step in status: never an earlier step, each step started once
    (one StepStarted Event each), v2 promoted, and no client request fails while no operator acts (the gateways
    serve the route table they have). The recovery time is reported (docs/operator.md, "Availability")."""
    sock = _containerd_socket()
    name = f"{namespace}-p"
    apply(platform.cluster, policy(name, SLOW_STEPS))
    cluster_objects.append(f"rolloutpolicy/{name}")
    apply(platform.cluster, model_deployment(platform, namespace, "v1", "wine-v1.onnx", name))
    wait_healthy(platform.cluster, namespace, "v1")
    stack.start_loadgen(platform.cluster, namespace, platform.refs, MD, MD, platform.rows, rate=20)
    apply(platform.cluster, model_deployment(platform, namespace, "v2", "wine-v2.onnx", name))
    stack.wait_until("the second step", lambda: step_index(platform.cluster, namespace) >= 1, 300, 1)
    (old,) = [p for p in _operator_pods(platform.cluster) if not p["metadata"].get("deletionTimestamp")]
    old_name = old["metadata"]["name"]
    container = old["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    _ctr(sock, "task", "kill", "--signal", "SIGSTOP", container)
    frozen = time.monotonic()
    try:
        # read after the freeze: a look written later than this can only come from the new operator
        frozen_look = (md_status(platform.cluster, namespace).get("lastAnalysis") or {}).get("time")
        before = step_index(platform.cluster, namespace)
        peers_at_freeze = _peers(platform.cluster)
    finally:  # the frozen process goes with its pod (the kubelet kills it), whatever happened above
        platform.cluster.kubectl("-n", stack.SYSTEM_NS, "delete", "pod", old_name, "--force", "--grace-period=0")

    def new_ready() -> str | None:
        pods = [p for p in _operator_pods(platform.cluster) if p["metadata"]["name"] != old_name and _ready(p)]
        return pods[0]["metadata"]["name"] if pods else None

    new_name = stack.wait_until("a new operator pod", new_ready, 300, 0.5)
    ready_after = time.monotonic() - frozen

    def acting() -> bool:
        st = md_status(platform.cluster, namespace)
        return (st.get("lastAnalysis") or {}).get("time") != frozen_look or history_entry(
            platform.cluster, namespace, "v2"
        ) is not None

    stack.wait_until("the new operator to act", acting, 300, 0.5)
    acting_after = time.monotonic() - frozen
    entry, indices = wait_rollout_end(platform.cluster, namespace, "v2", "after the operator's node died", interval=1)
    load = stack.stop_loadgen(platform.cluster, namespace)
    started = _step_events(platform.cluster, namespace)
    # the frozen process went with its pod: its task is gone or stopped (the kubelet killed it)
    old_alive = any(
        line.split()[0] == container and "STOPPED" not in line for line in _ctr(sock, "task", "ls").splitlines()[1:]
    )
    new_log = platform.cluster.kubectl_text("logs", "-n", stack.SYSTEM_NS, new_name, "--tail=400")
    paused = [ln for ln in new_log.splitlines() if "conflicting operators" in ln or "Pausing all operators" in ln]
    report(
        "operator node death",
        f"peers at the freeze {peers_at_freeze}; new pod ready {ready_after:.1f}s and acting {acting_after:.1f}s "
        f"after the freeze (paused lines in its log: {len(paused)}); step {before} then {sorted(set(indices))}; "
        f"StepStarted {started}; v2 {entry['outcome']}; load {load}",
    )
    assert not old_alive, "the frozen operator process outlived its force-deleted pod"
    assert entry["outcome"] == "promoted", entry
    assert all(i >= before for i in indices), (before, indices)
    assert started and all(n == 1 for n in started.values()), started
    assert load["failed"] == 0, load
