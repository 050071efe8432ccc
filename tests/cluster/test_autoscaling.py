"""Autoscaling, disruption budgets and spread against the real control plane, under the chart's RBAC.

The operator runs as in test_operator.py (its `env` fixture: `kopf run` with the chart's ServiceAccount,
pods made Ready by PodFaker). The HPA controller is kube-controller-manager's own; this tier has no
metrics-server and no prometheus-adapter, so every HPA here reports that it cannot get its metric
(ScalingActive=False): exactly the case in which the ModelDeployment must say so and keep its replicas.
What the HPA would do when it scales is done with `kubectl scale` on the scale subresource, as the HPA does.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.cluster.test_operator import Env, env, md_manifest, steps_policy, unique

pytestmark = pytest.mark.cluster

__all__ = ["env"]  # the fixture, shared with test_operator.py

AUTOSCALING = {"minReplicas": 2, "maxReplicas": 8, "metric": "requestsPerSecond", "target": 20}
# shadow mirroring 40 %, canaries at 10 % and 50 %: candidate sizes ceil(5*0.4)=2, ceil(0.5)=1, ceil(2.5)=3
STEPS = [
    {"shadow": {"mirrorPercent": 40, "minRequests": 100, "maxDuration": "10m"}},
    {"canary": {"weight": 10, "minRequests": 200, "maxDuration": "10m"}},
    {"canary": {"weight": 50, "minRequests": 300, "maxDuration": "10m"}},
]


def get(env: Env, kind: str, name: str) -> dict[str, Any]:
    return dict(env.kubectl.json("get", kind, name, "-n", env.namespace))


def replicas(env: Env, revision: str) -> int:
    return int(get(env, "deployment", f"wine-{revision}")["spec"]["replicas"])


def wait_replicas(env: Env, revision: str, wanted: int) -> None:
    env.wait_status("wine", f"wine-{revision} at {wanted} replicas", lambda _: replicas(env, revision) == wanted)


def test_hpa_follows_the_stable_and_the_candidate_its_share_through_promotion(env: Env) -> None:
    policy = env.policy(steps_policy(unique("steps"), STEPS))
    env.apply(md_manifest("wine", "1", policy, autoscaling=AUTOSCALING))
    st = env.wait_status("wine", "Healthy v1", lambda s: s.get("phase") == "Healthy")
    v1 = st["stable"]["revision"]
    uid = env.md("wine")["metadata"]["uid"]

    hpa = get(env, "hpa", "wine")
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == uid
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"wine-{v1}"
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "mlrollout_model_inference_requests_per_second"
    assert replicas(env, v1) == 2  # minReplicas

    # no adapter serves the metric here: the HPA says so, the ModelDeployment shows it and stays Healthy
    st = env.wait_status(
        "wine", "ScalingActive False", lambda s: (s.get("autoscaling") or {}).get("scalingActive") == "False"
    )
    assert st["autoscaling"]["target"] == f"wine-{v1}" and st["phase"] == "Healthy"
    scaling = next(c for c in st["conditions"] if c["type"] == "ScalingActive")
    assert (scaling["status"], scaling["reason"]) == ("False", "MetricUnavailable")
    assert "replicas stay where they are" in scaling["message"]
    assert any(e["reason"] == "AutoscalingInactive" and e["type"] == "Warning" for e in env.events("wine"))

    # the track's budget (owned by its Deployment) and soft spread, since the HPA may run up to 8 pods
    pdb = get(env, "pdb", f"wine-{v1}")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    pod_spec = get(env, "deployment", f"wine-{v1}")["spec"]["template"]["spec"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in pod_spec["topologySpreadConstraints"]] == [
        ("kubernetes.io/hostname", "ScheduleAnyway"),
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
    ]
    gateway_pdb = get(env, "pdb", "wine")
    assert gateway_pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"

    # what the HPA does when it scales: the scale subresource. The operator keeps it (never fights the HPA)
    env.kubectl("scale", "deployment", f"wine-{v1}", "-n", env.namespace, "--replicas=5")
    env.verdict("wine", "continue", 0)
    env.apply(md_manifest("wine", "2", policy, autoscaling=AUTOSCALING))
    v2 = env.step("wine", 0)["candidate"]["revision"]
    wait_replicas(env, v2, 2)  # shadow: 40 % of 5 pods
    assert replicas(env, v1) == 5

    env.verdict("wine", "promote", 150)
    env.step("wine", 1)
    wait_replicas(env, v2, 1)  # 10 % of 5 is half a pod: one
    env.verdict("wine", "promote", 250)
    env.step("wine", 2)
    wait_replicas(env, v2, 3)  # 50 % of 5 is 2.5: three
    assert replicas(env, v1) == 5

    env.verdict("wine", "promote", 350)
    st = env.wait_status("wine", "v2 stable", lambda s: (s.get("stable") or {}).get("revision") == v2)
    # the hand-over: the decided promotion first scales the candidate to the old stable's count and switches
    # once that many of its pods are ready (PodFaker readies them), the HPA moves to it, the old one keeps its
    # pods for the scale-down delay
    reasons = [(e["reason"], e["message"]) for e in env.events("wine")]
    assert any(r == "PromotionScalingUp" and "3 of 5 pods ready" in m for r, m in reasons), reasons
    assert any(r == "Promoted" and "revision 2" in m and "promote verdict" in m for r, m in reasons), reasons
    assert "PromotedBelowCapacity" not in dict(reasons)
    assert "promoting" not in st
    wait_replicas(env, v2, 5)
    env.wait_status(
        "wine", "HPA retargeted", lambda _: get(env, "hpa", "wine")["spec"]["scaleTargetRef"]["name"] == f"wine-{v2}"
    )
    assert replicas(env, v1) == 5
    env.wait_status("wine", "status names the new target", lambda s: s["autoscaling"]["target"] == f"wine-{v2}")

    # autoscaling switched off: the HPA goes, spec.replicas rules again
    env.apply(md_manifest("wine", "2", policy, replicas=3))
    env.wait_status("wine", "autoscaling gone", lambda s: "autoscaling" not in s)
    wait_replicas(env, v2, 3)
    proc = env.kubectl("get", "hpa", "wine", "-n", env.namespace, check=False)
    assert proc.returncode != 0 and "NotFound" in proc.stderr
    assert all(c["type"] != "ScalingActive" for c in env.status("wine")["conditions"])


def test_gateway_replicas_per_model_deployment_with_spread(env: Env) -> None:
    env.apply(md_manifest("wine", "1", gateway={"replicas": 3}))
    st = env.wait_status("wine", "Healthy", lambda s: s.get("phase") == "Healthy")
    gateway = get(env, "deployment", "wine")
    assert gateway["spec"]["replicas"] == 3
    keys = [c["topologyKey"] for c in gateway["spec"]["template"]["spec"]["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    # one model server (spec.replicas 1): no spread, no track budget; the gateway's budget exists
    rev = st["stable"]["revision"]
    track = get(env, "deployment", f"wine-{rev}")["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in track
    assert env.kubectl("get", "pdb", f"wine-{rev}", "-n", env.namespace, check=False).returncode != 0
    assert get(env, "pdb", "wine")["spec"]["maxUnavailable"] == 1


GATEWAY_AUTOSCALING = {"minReplicas": 2, "maxReplicas": 6, "metric": "requestsPerSecond", "target": 100}


def test_gateway_hpa_is_created_kept_and_removed_under_the_charts_rbac(env: Env) -> None:
    env.apply(md_manifest("wine", "1", gateway={"autoscaling": GATEWAY_AUTOSCALING}))
    env.wait_status("wine", "Healthy", lambda s: s.get("phase") == "Healthy")
    uid = env.md("wine")["metadata"]["uid"]

    hpa = get(env, "hpa", "wine-gateway")
    [owner] = hpa["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelDeployment", uid, True)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "wine"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "mlrollout_gateway_requests_per_second"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "100"}
    # the track has no HPA: spec.autoscaling is not set
    assert env.kubectl("get", "hpa", "wine", "-n", env.namespace, check=False).returncode != 0

    # no adapter serves the gateway's metric here: its HPA says so, the ModelDeployment shows it beside the
    # counts (its own condition, not the stable's) and stays Healthy
    st = env.wait_status(
        "wine",
        "GatewayScalingActive False",
        lambda s: (s.get("gatewayAutoscaling") or {}).get("scalingActive") == "False",
    )
    assert st["gatewayAutoscaling"]["target"] == "wine" and st["phase"] == "Healthy"
    assert "mlrollout_gateway_requests_per_second" in st["gatewayAutoscaling"]["message"]
    gateway_scaling = next(c for c in st["conditions"] if c["type"] == "GatewayScalingActive")
    assert (gateway_scaling["status"], gateway_scaling["reason"]) == ("False", "MetricUnavailable")
    assert all(c["type"] != "ScalingActive" for c in st["conditions"]) and "autoscaling" not in st
    assert any(e["reason"] == "GatewayAutoscalingInactive" and e["type"] == "Warning" for e in env.events("wine"))

    # the gateway starts at minReplicas, spread over nodes and zones (it may run up to 6 pods)
    env.wait_status("wine", "gateway at 2", lambda _: get(env, "deployment", "wine")["spec"]["replicas"] == 2)
    keys = [c["topologyKey"] for c in get(env, "deployment", "wine")["spec"]["template"]["spec"][
        "topologySpreadConstraints"]]  # fmt: skip
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]

    # what the HPA does when it scales; an edit makes the operator apply the gateway again: it keeps the count
    env.kubectl("scale", "deployment", "wine", "-n", env.namespace, "--replicas=5")
    env.apply(md_manifest("wine", "1", gateway={"autoscaling": {**GATEWAY_AUTOSCALING, "target": 80}}))
    env.wait_status(
        "wine", "HPA target 80",
        lambda _: get(env, "hpa", "wine-gateway")["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "80",
    )  # fmt: skip
    env.wait_status("wine", "generation 2 observed", lambda s: s.get("observedGeneration") == 2)
    assert get(env, "deployment", "wine")["spec"]["replicas"] == 5

    # switched off: the HPA goes and gateway.replicas rules again
    env.apply(md_manifest("wine", "1", gateway={"replicas": 3}))
    env.wait_status(
        "wine", "gateway HPA gone",
        lambda _: env.kubectl("get", "hpa", "wine-gateway", "-n", env.namespace, check=False).returncode != 0,
    )  # fmt: skip
    env.wait_status("wine", "gateway at 3", lambda _: get(env, "deployment", "wine")["spec"]["replicas"] == 3)
    proc = env.kubectl("get", "hpa", "wine-gateway", "-n", env.namespace, check=False)
    assert "NotFound" in proc.stderr
    st = env.wait_status("wine", "gateway HPA status gone", lambda s: "gatewayAutoscaling" not in s)
    assert all(c["type"] != "GatewayScalingActive" for c in st["conditions"])
