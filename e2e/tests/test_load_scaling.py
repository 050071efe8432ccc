"""End-to-end: load rises during a canary, the HPA scales the stable track and the candidate follows its share.

The HPA is kube-controller-manager's own (syncing every 5 s, e2e/cluster/up). Once per metric: `cpu`, the
model servers' CPU from metrics.k8s.io, served by metrics-server (e2e/metrics-server, 10 s resolution)
scraping the kubelet's /metrics/resource on the real node; and `requestsPerSecond`, the model servers' own
request counter as scraped by the stack's real Prometheus, served on custom.metrics.k8s.io by prometheus-adapter
(e2e/prometheus-adapter) with the chart's own rules. Nothing here is faked: the pods burn real CPU answering
real requests, and every number the HPA acts on went through the real metrics pipeline.

Given/When/Then in the docstring.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from typing import Any

import pytest
import stack

from conftest import Platform, apply, history_entry, md_status, model_deployment, policy, report
from mlrollout.controller.scaling import (
    CONCURRENCY_METRIC,
    GATEWAY_CONCURRENCY_METRIC,
    GATEWAY_REQUESTS_PER_SECOND_METRIC,
    REQUESTS_PER_SECOND_METRIC,
)

MD = "wine"
WEIGHT = 50
# cpu: percent of the model servers' request (50m, conftest.model_deployment). The stable serves the CPU-heavy
# wine-v3-slow.onnx (about 10 ms of matrix products per request; v1 and v2 cost well under 1 ms, so v1 at 34
# requests/s used 8m, 16 % of the request: no load this machine can send would scale it). An idle server uses
# about 3m and the light load's share (1 request/s) about 10m more: well under the target. The surge's share
# (about 15 requests/s) is over 150m, three times the request, so the HPA wants its maximum and, at four
# pods, still about 80 %.
CPU = {"minReplicas": 1, "maxReplicas": 4, "metric": "cpu", "target": 60}
# requestsPerSecond: requests per second per stable pod, the rate over 1 minute (the chart's rule). The light
# load's share is about 1 per second (under the target: one pod); the surge's about 16 per second, so the HPA
# wants ceil(16 / 3) = 6, capped at 4, and asks for 3 or more once the 1-minute rate passes about 6.6 per
# second (the HPA's 10 % tolerance), some 25 s into the surge.
REQUESTS_PER_SECOND = {"minReplicas": 1, "maxReplicas": 4, "metric": "requestsPerSecond", "target": 3}
# The gateway's own HPA in the requestsPerSecond case (spec.gateway.autoscaling): every request of both loads
# passes the gateway, about 2 per second before the surge (one pod) and 32 in it, so its HPA wants
# ceil(32 / 5) = 7, capped at 3.
GATEWAY_AUTOSCALING = {"minReplicas": 1, "maxReplicas": 3, "metric": "requestsPerSecond", "target": 5}
# concurrency: requests in flight per stable pod, the 1-minute rate of the seconds spent answering (the chart's
# rule; Little's law). v3 answers in about 15-25 ms here (the adapter's readings: 0.001-0.005 in flight at 0.08-0.28
# requests per second, cut to thousandths), so the light load's share (about 1 per second) is about 0.015-0.025,
# under the target with a two- to threefold margin, and the surge's (about 16 per second) about 0.2-0.4: the HPA
# wants ceil(0.2 / 0.05) = 4 (3 or more while the 1-minute rate fills).
CONCURRENCY = {"minReplicas": 1, "maxReplicas": 4, "metric": "concurrency", "target": 0.05}
# The gateway's own HPA in the concurrency case: about 0.02-0.03 in flight at the full light load (2 requests per
# second, about 10-15 ms each through the gateway; read 0.002-0.012 while the 1-minute rate fills) and about 0.3-0.5
# in the surge: ceil(0.3 / 0.15) = 2 to ceil(0.5 / 0.15) = 4, capped at 3 (3 and 2 pods measured).
GATEWAY_CONCURRENCY = {"minReplicas": 1, "maxReplicas": 3, "metric": "concurrency", "target": 0.15}
# A Pods metric case's gateway HPA, and the series each Pods metric reads (model servers, gateway).
GATEWAY_SCALING = {"requestsPerSecond": GATEWAY_AUTOSCALING, "concurrency": GATEWAY_CONCURRENCY}
PODS_METRIC = {
    "requestsPerSecond": (REQUESTS_PER_SECOND_METRIC, GATEWAY_REQUESTS_PER_SECOND_METRIC),
    "concurrency": (CONCURRENCY_METRIC, GATEWAY_CONCURRENCY_METRIC),
}
# What custom.metrics.k8s.io serves per pod (prometheus-adapter with the chart's rules): every rule's metric.
POD_METRICS = (REQUESTS_PER_SECOND_METRIC, CONCURRENCY_METRIC)
GATEWAY_POD_METRICS = (GATEWAY_REQUESTS_PER_SECOND_METRIC, GATEWAY_CONCURRENCY_METRIC)
# One canary step that holds for the whole scenario: far more requests than the scenario sends, so it cannot
# pass, and long enough that it does not run out (onInconclusive rolls back): longer than the waits before the
# promotion can add up to at their limits (about 46 minutes with both load pods' starts; 10m could run out on
# a slow but correct run). The verdict is not this scenario's subject: latency is left out of it, since one
# candidate pod against a growing stable may well be slower while the HPA catches up, and a rollback would end
# the canary this scenario is about.
STEPS: list[dict[str, Any]] = [{"canary": {"weight": WEIGHT, "minRequests": 100000, "maxDuration": "1h"}}]
# The operator's PromotionScalingUp Event (rollout/moves.py, `capacity_short`): the counts it compared.
SCALING_UP = re.compile(r"\((\d+) of (\d+) pods ready\)")
STEADY_RATE = 2
SURGE_RATE = 30


def _body(
    platform: Platform, namespace: str, version: str, filename: str, policy_name: str, autoscaling: dict[str, Any]
) -> dict[str, Any]:
    body = model_deployment(platform, namespace, version, filename, policy_name)
    body["spec"]["autoscaling"] = autoscaling
    if autoscaling["metric"] in GATEWAY_SCALING:
        body["spec"].setdefault("gateway", {})["autoscaling"] = GATEWAY_SCALING[autoscaling["metric"]]
    return body


def _get(platform: Platform, kind: str, name: str, namespace: str) -> dict[str, Any]:
    found = platform.cluster.get(kind, name, namespace)
    assert found is not None, f"{kind}/{name} in {namespace} is missing"
    return found


def _replicas(platform: Platform, namespace: str, deployment: str) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of a Deployment."""
    d = _get(platform, "deployment", deployment, namespace)
    return int(d["spec"].get("replicas") or 0), int((d.get("status") or {}).get("readyReplicas") or 0)


def _selector(platform: Platform, namespace: str, deployment: str) -> str:
    """A Deployment's pod selector as a label selector string."""
    labels = _get(platform, "deployment", deployment, namespace)["spec"]["selector"]["matchLabels"]
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _current(hpa: dict[str, Any]) -> str | None:
    """The HPA's current reading of its one metric: cpu utilization in percent of the request ("14%"), or a
    Pods metric's average per pod as the API server gives it (a quantity, "1066m")."""
    for metric in (hpa.get("status") or {}).get("currentMetrics") or []:
        current = (metric.get("resource") or {}).get("current") or {}
        if "averageUtilization" in current:
            return f"{current['averageUtilization']}%"
        current = (metric.get("pods") or {}).get("current") or {}
        if "averageValue" in current:
            return str(current["averageValue"])
    return None


def _quantity(value: str) -> float:
    """A Kubernetes quantity as the custom metrics API writes it ("1066m", "2", "1500u")."""
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6}
    return float(value[:-1]) * scale[value[-1]] if value[-1] in scale else float(value)


def _custom_metric(platform: Platform, namespace: str, metric: str, selector: str) -> dict[str, float]:
    """Each selected pod's value of METRIC from custom.metrics.k8s.io (prometheus-adapter), by pod name."""
    query = urllib.parse.urlencode({"labelSelector": selector})
    path = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/*/{metric}?{query}"
    items = json.loads(platform.cluster.kubectl("get", "--raw", path, timeout=60))["items"]
    return {item["describedObject"]["name"]: _quantity(item["value"]) for item in items}


def _served_metrics(platform: Platform) -> set[str]:
    """The Pods metrics custom.metrics.k8s.io lists now (prometheus-adapter's discovery of the chart's rules)."""
    found = json.loads(platform.cluster.kubectl("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta1", timeout=60))
    return {r["name"].removeprefix("pods/") for r in found.get("resources") or [] if r["name"].startswith("pods/")}


def _pods_cpu(platform: Platform, namespace: str) -> str:
    """`kubectl top pods` of the scenario: metrics.k8s.io as users see it (for the report)."""
    return " ".join(platform.cluster.kubectl_text("top", "pods", "-n", namespace, "--no-headers").split())


@pytest.mark.parametrize("autoscaling", [CPU, REQUESTS_PER_SECOND, CONCURRENCY], ids=lambda a: str(a["metric"]))
def test_hpa_scales_both_tracks_when_load_rises_mid_canary(
    platform: Platform, namespace: str, cluster_objects: list[str], autoscaling: dict[str, Any]
) -> None:
    """Given v3 (the CPU-heavy model) stable with `spec.autoscaling` (cpu, requestsPerSecond or concurrency; 1 to 4
    pods; for the two Pods metrics the gateway scales on the same metric)
    and v2 in a 50 % canary that holds, under a light load, When the load rises fifteenfold, Then the HPA reads
    the stable pods' metric (CPU from metrics.k8s.io; requests per second or in flight from custom.metrics.k8s.io, which
    prometheus-adapter computes with the chart's rules from the series Prometheus scraped) and scales the
    stable Deployment up, the operator sizes the candidate at its share of the stable's current count
    (ceil(stable x 50 %), so more than one pod), every pod of both tracks becomes ready and serves,
    status.autoscaling shows what the HPA did, the canary is still running (the scaling neither ended nor
    reset it); When `kubectl mlrollout promote --full` asks for the promotion under both loads, Then the
    candidate first grows to the stable's HPA-chosen count (status.promoting), the route switches once that
    many of its pods are ready, so ready capacity never dips, and the HPA moves to the new stable; and no
    client request fails, in the light load, the surge or the hand-over."""
    cluster = platform.cluster
    pods_metric = autoscaling["metric"] != "cpu"
    model_metric, gateway_metric = PODS_METRIC.get(autoscaling["metric"], ("", ""))
    api = "custom.metrics.k8s.io" if pods_metric else "metrics.k8s.io"
    served = cluster.kubectl_text("get", "--raw", f"/apis/{api}/v1beta1")
    assert '"APIResourceList"' in served, (
        f"no {api} here (e2e/metrics-server and e2e/prometheus-adapter serve them on the local node): {served}"
    )
    name = f"{namespace}-p"
    body = policy(name, STEPS)
    body["spec"]["analysis"]["metrics"]["latency"] = {"enabled": False}
    apply(cluster, body)
    cluster_objects.append(f"rolloutpolicy/{name}")
    apply(cluster, _body(platform, namespace, "v3", "wine-v3-slow.onnx", name, autoscaling))

    def v3_autoscaled() -> dict[str, Any] | None:
        st = md_status(cluster, namespace)
        healthy = st.get("phase") == "Healthy" and (st.get("stable") or {}).get("modelVersion") == "v3"
        return st if healthy and (st.get("autoscaling") or {}).get("target") else None

    st = stack.wait_until(f"{namespace}/{MD} Healthy on v3 under its HPA", v3_autoscaled, 300, 2)
    stable = f"{MD}-{st['stable']['revision']}"
    apply(cluster, _body(platform, namespace, "v2", "wine-v2.onnx", name, autoscaling))

    def canary() -> dict[str, Any] | None:
        s = md_status(cluster, namespace)
        traffic = s.get("traffic") or {}
        return s if (s.get("currentStep") or {}).get("index") == 0 and traffic.get("candidate") == WEIGHT else None

    st = stack.wait_until("v2's 50 % canary", canary, 300, 1)
    candidate = f"{MD}-{st['candidate']['revision']}"
    cluster.rollout_wait(namespace, candidate, timeout=300)
    stack.start_loadgen(cluster, namespace, platform.refs, MD, MD, platform.rows, rate=STEADY_RATE, name="steady")

    # the HPA reads the stable's metric (so metrics.k8s.io or custom.metrics.k8s.io answers for these pods)
    # before the load rises
    def hpa_reading() -> dict[str, Any] | None:
        hpa = _get(platform, "hpa", MD, namespace)
        return hpa if _current(hpa) is not None else None

    hpa = stack.wait_until(f"the HPA's first {autoscaling['metric']} reading of the stable pods", hpa_reading, 180, 2)
    before: dict[str, Any] = {
        "stable": _replicas(platform, namespace, stable)[0],
        "candidate": _replicas(platform, namespace, candidate)[0],
        "current": _current(hpa),
    }
    top_before = _pods_cpu(platform, namespace)
    adapter: dict[str, Any] = {}
    if pods_metric:
        # every rule of the chart matches the real series: each metric is listed, and served for the stable's
        # pods (model servers) and the gateway's pods with the namespace and pod labels the rules map
        # (the adapter relists the series every 10 s: a metric whose first sample is newer may still be missing)
        every = {*POD_METRICS, *GATEWAY_POD_METRICS}
        stack.wait_until(
            "custom.metrics.k8s.io to list every rule's metric", lambda: every <= _served_metrics(platform), 60, 2
        )
        adapter["listed"] = sorted(_served_metrics(platform) & every)
        track, gateway = _selector(platform, namespace, stable), _selector(platform, namespace, MD)

        def answered() -> dict[str, Any] | None:
            """Every rule's value for the pods, once each has one and the light load shows in the stable's
            metric: the HPA waited for its own metric only, another may not have its first sample in the
            adapter yet, and the adapter cuts values to thousandths (a 1-minute rate still filling reads 0)."""
            read = {
                "stable": {m: _custom_metric(platform, namespace, m, track) for m in POD_METRICS},
                "gateway": {m: _custom_metric(platform, namespace, m, gateway) for m in GATEWAY_POD_METRICS},
            }
            ok = all(values for per in read.values() for values in per.values())
            return read if ok and sum(read["stable"][model_metric].values()) > 0 else None

        adapter.update(stack.wait_until("custom.metrics.k8s.io to answer every rule for the pods", answered, 60, 2))

    assert _replicas(platform, namespace, stable)[0] == 1, "the stable scaled before the surge"
    stack.start_loadgen(cluster, namespace, platform.refs, MD, MD, platform.rows, rate=SURGE_RATE, name="surge")
    surge_at = time.monotonic()  # its first answers are in
    timeline: dict[str, float] = {}

    def scaled() -> dict[str, Any] | None:
        """Both tracks at their new size and ready: the stable at what the HPA wants (more than it had), the
        candidate at ceil(stable x weight) of the stable's current count, status.autoscaling saying so."""
        hpa = _get(platform, "hpa", MD, namespace)
        hs = hpa.get("status") or {}
        desired = int(hs.get("desiredReplicas") or 0)
        if desired > before["stable"]:
            timeline.setdefault("hpa_wants_more", time.monotonic() - surge_at)
        s_spec, s_ready = _replicas(platform, namespace, stable)
        c_spec, c_ready = _replicas(platform, namespace, candidate)
        share = -(-s_spec * WEIGHT // 100)
        if c_spec == share and c_spec > before["candidate"]:
            timeline.setdefault("candidate_follows", time.monotonic() - surge_at)
        auto = md_status(cluster, namespace).get("autoscaling") or {}
        done = (
            desired >= 3
            and s_spec == desired == s_ready
            and int(hs.get("currentReplicas") or 0) == desired
            and c_spec == c_ready == share
            and auto.get("currentReplicas") == desired
            and auto.get("scalingActive") == "True"
        )
        return {"hpa": hpa, "stable": s_spec, "candidate": c_spec, "status": auto} if done else None

    after = stack.wait_until("the HPA to scale the stable and the candidate to follow", scaled, 300, 2)
    timeline["all_ready"] = time.monotonic() - surge_at
    gateway_after: dict[str, Any] = {}
    if pods_metric:  # the gateway's own HPA, on its own series of the same metric, scales it under the same surge

        def gateway_scaled() -> dict[str, Any] | None:
            replicas, ready = _replicas(platform, namespace, MD)
            gs = md_status(cluster, namespace).get("gatewayAutoscaling") or {}
            done = replicas >= 2 and ready == replicas and gs.get("scalingActive") == "True"
            return {"replicas": replicas, "status": gs} if done else None

        gateway_after = stack.wait_until("the gateway's HPA to scale the gateway", gateway_scaled, 180, 2)
        timeline["gateway_ready"] = time.monotonic() - surge_at
    top_after = _pods_cpu(platform, namespace)
    # both tracks answer on their new pods for a while before the promotion
    time.sleep(10)
    st = md_status(cluster, namespace)
    ended = history_entry(cluster, namespace, "v2")

    # the promotion hand-over under the real HPA, both loads running: the candidate first grows to the stable's
    # HPA-chosen count, the route switches once that many of its pods are ready, and the HPA moves to it
    cluster.kubectl("mlrollout", "promote", MD, "--full", "-n", namespace)
    promote_at = time.monotonic()
    # for the report only: a poll every second or two may miss status.promoting (the switch can follow within
    # a couple of seconds), and the stable's count read here may be newer than the one the operator compared
    # (the HPA can scale the old stable between the operator's read and its status write); what the operator
    # compared is in its PromotionScalingUp Event, asserted below
    seen: dict[str, Any] = {"stable_before": after["stable"], "waiting": False}

    def promoted() -> dict[str, Any] | None:
        stable_now = _replicas(platform, namespace, stable)[0]  # before status: not newer than a switch seen
        s = md_status(cluster, namespace)
        if (s.get("stable") or {}).get("modelVersion") != "v2":
            seen["stable_before"] = stable_now
            seen["waiting"] = seen["waiting"] or s.get("promoting") is not None
            return None
        c_spec, c_ready = _replicas(platform, namespace, candidate)  # read after the switch was seen
        return {"status": s, "ready": c_ready, "spec": c_spec, "seconds": time.monotonic() - promote_at}

    switched = stack.wait_until("v2 promoted once it runs the stable's pods", promoted, 300, 1)
    retarget = stack.wait_until(
        "the HPA retargeted to the new stable",
        lambda: _get(platform, "hpa", MD, namespace) if _get(platform, "hpa", MD, namespace)["spec"]
        ["scaleTargetRef"]["name"] == candidate else None, 60, 1,
    )  # fmt: skip
    time.sleep(5)  # answers from the new stable alone before the load stops
    waited = [e["message"] for e in json.loads(
        cluster.kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
        if e.get("reason") == "PromotionScalingUp"]  # fmt: skip
    # (candidate pods ready, stable pods) as the operator compared them when it decided to wait; it emits the
    # Event only after the status write that set status.promoting succeeded (controller/reconcile.py _commit)
    compared = [(int(m[1]), int(m[2])) for m in (SCALING_UP.search(w) for w in waited) if m]
    surge = stack.stop_loadgen(cluster, namespace, name="surge")
    steady = stack.stop_loadgen(cluster, namespace, name="steady")
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    rescaled = [e for e in events if e.get("reason") == "SuccessfulRescale"]
    rescales = [e["message"] for e in rescaled if e["involvedObject"]["name"] == MD]  # the stable's HPA
    gateway_rescales = [e["message"] for e in rescaled if e["involvedObject"]["name"] == f"{MD}-gateway"]
    report(
        f"hpa during a canary ({autoscaling['metric']})",
        f"{autoscaling['metric']} (target {autoscaling['target']}): before the surge: stable {before['stable']}, "
        f"candidate {before['candidate']}, HPA reading {before['current']}; custom metrics {adapter}; after: HPA "
        f"{after['hpa']['status'].get('currentReplicas')} -> {after['hpa']['status'].get('desiredReplicas')} at "
        f"{_current(after['hpa'])}, stable {after['stable']}, "
        f"candidate {after['candidate']}; HPA wanted more {timeline.get('hpa_wants_more', -1):.0f}s, candidate "
        f"followed {timeline.get('candidate_follows', -1):.0f}s, all ready {timeline['all_ready']:.0f}s after the "
        f"surge began; HPA events {rescales}; top before [{top_before}] after [{top_after}]; "
        f"steady load {steady}; surge load {surge}",
    )
    assert before["stable"] == 1 and before["candidate"] == 1, before
    assert after["stable"] >= 3 and after["candidate"] == -(-after["stable"] * WEIGHT // 100) >= 2, after
    assert after["status"]["target"] == stable, after["status"]
    assert rescales, events  # the HPA controller itself scaled (its Event), not anything else
    if pods_metric:
        # the HPA's reading came from custom.metrics.k8s.io: the Pods metric the operator named, served
        read = [m["pods"]["metric"]["name"] for m in after["hpa"]["status"]["currentMetrics"]]
        assert read == [model_metric], after["hpa"]["status"]
        assert any("above target" in r for r in rescales), rescales
        gateway_hpa = _get(platform, "hpa", f"{MD}-gateway", namespace)
        assert gateway_hpa["spec"]["scaleTargetRef"]["name"] == MD, gateway_hpa["spec"]
        assert gateway_after["replicas"] >= 2 and gateway_after["status"]["target"] == MD, gateway_after
        assert any(gateway_metric in r for r in gateway_rescales), gateway_rescales
        report(
            "gateway hpa under the surge",
            f"{gateway_after} ready {timeline['gateway_ready']:.0f}s after it began; its events {gateway_rescales}",
        )
        assert adapter["listed"] == sorted({*POD_METRICS, *GATEWAY_POD_METRICS}), adapter
        for values in (*adapter["stable"].values(), *adapter["gateway"].values()):
            assert values and all(v >= 0 for v in values.values()), adapter
        # the light load's share: about one request per second on the one stable pod, under the target
        assert 0 < sum(adapter["stable"][model_metric].values()) < autoscaling["target"], adapter
    assert ended is None and (st.get("currentStep") or {}).get("index") == 0, st  # still the same canary
    report(
        "promotion hand-over under the hpa",
        f"promote --full {after['candidate']} candidate pods of {seen['stable_before']} stable; switched after "
        f"{switched['seconds']:.0f}s with {switched['ready']} of its pods ready; waited: {waited} "
        f"(status.promoting {'seen' if seen['waiting'] else 'not seen'} by the poll); "
        f"HPA now targets {retarget['spec']['scaleTargetRef']['name']}",
    )
    # it did wait (status.promoting, the Event): the candidate ran fewer ready pods than the stable at the decision
    assert compared and len(compared) == len(waited), (waited, seen)
    assert all(have < need for have, need in compared), (waited, seen)
    # ... and it compared against the stable's HPA-chosen count (the HPA only raised it since `after`)
    assert all(need >= after["stable"] for _, need in compared), (waited, after)
    # no dip in ready capacity at the switch: the candidate grew to the stable's count before it took all traffic.
    # The operator compares against the stable's count at each pass, which the surge's HPA only raises (its
    # scale-down waits 5 minutes), so at the switch it had at least the count of the decision; afterwards it
    # never runs fewer (the relabelling roll of the new stable surges, maxUnavailable 0)
    assert all(switched["ready"] >= need for _, need in compared), (switched, waited, seen)
    assert "PromotedBelowCapacity" not in json.dumps(events)
    for load in (steady, surge):
        assert load["failed"] == 0, load
        assert set(load["versions"]) == {"v3", "v2"}, load  # both tracks answered
