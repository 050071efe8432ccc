"""Ground truth end to end: labels sent back by a client decide a rollout that errors and latency cannot.

Given/When/Then in the docstring. Traffic and labels come from the load generator pod through the
gateway Service; the operator, the gateway pods and Prometheus are the real ones.
"""

from __future__ import annotations

import json
import time
from typing import Any

import models
import stack

from conftest import Platform, apply, history_entry, md_status, model_deployment, policy, report, wait_healthy

# shadow first (paired: both models answer every request), then a canary the candidate should never reach
QUALITY_STEPS: list[dict[str, Any]] = [
    {"shadow": {"mirrorPercent": 100, "minRequests": 150, "maxDuration": "4m"}},
    {"canary": {"weight": 25, "minRequests": 100, "maxDuration": "3m"}},
]


def rollout_of_v4(cluster: stack.Cluster, namespace: str) -> tuple[dict[str, Any], set[str]]:
    """Wait (up to 10 min) for v4's rollout to end: its history entry and the kinds of step it went through."""
    steps_seen: set[str] = set()

    def done() -> dict[str, Any] | None:
        step = md_status(cluster, namespace).get("currentStep") or {}
        if step:
            steps_seen.add(str(step.get("kind")))
        return history_entry(cluster, namespace, "v4")

    return stack.wait_until("v4's rollout to end", done, 600, 2), steps_seen


def test_plausible_but_wrong_candidate_rolled_back_by_labels_in_shadow(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v1 Healthy under client load, the client sending each answer's true class back 2 s later, and
    a policy with quality on, When v4 is applied (as fast, never failing, the usual class mix, but wrong on
    about one held-out row in nine where v1 is right on all), Then quality evidence from the shadow step
    rolls it back before it serves a client, errors and latency pass, no client request fails, and
    `kubectl mlrollout status` shows the accuracy effect with its interval."""
    cluster = platform.cluster
    manifest = policy(f"{namespace}-q", QUALITY_STEPS)
    manifest["spec"]["analysis"]["metrics"]["quality"] = {
        "enabled": True, "metric": "accuracy", "margin": {"absolute": 0.02}, "minLabels": 100, "maxLabelWait": "2m",
    }  # fmt: skip
    apply(cluster, manifest)
    cluster_objects.append(f"rolloutpolicy/{manifest['metadata']['name']}")
    apply(cluster, model_deployment(platform, namespace, "v1", "wine-v1.onnx", manifest["metadata"]["name"]))
    wait_healthy(cluster, namespace, "v1")
    secret = json.loads(cluster.kubectl("get", "secret", "wine-feedback", "-n", namespace, "-o", "json"))
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    stack.start_loadgen(
        cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20, labels=platform.labels,
        label_delay=2.0,
    )  # fmt: skip
    # the gateway notices the mounted Secret within seconds: labels are taken before the rollout starts
    stack.wait_until(
        "the first labels counted",
        lambda: stack.loadgen_stats(cluster, namespace).get("labels", {}).get("202", 0) >= 20,
        180,
        2,
    )
    started = time.monotonic()
    apply(cluster, model_deployment(platform, namespace, "v4", "wine-v4-plausible.onnx", manifest["metadata"]["name"]))
    entry, steps_seen = rollout_of_v4(cluster, namespace)
    shown = cluster.kubectl("mlrollout", "status", "wine", "-n", namespace)
    time.sleep(3)
    load = stack.stop_loadgen(cluster, namespace)
    report(
        "plausible but wrong",
        f"v4 {entry['outcome']} in {time.monotonic() - started:.0f}s: {entry.get('reason')}; "
        f"steps {sorted(steps_seen)}; load {load}",
    )
    assert entry["outcome"] == "rolledBack", entry
    assert "quality.harm" in entry.get("reason", ""), entry
    assert steps_seen == {"shadow"}, steps_seen  # never a canary: no client got a v4 answer
    assert load["failed"] == 0, load
    assert set(load["versions"]) == {"v1"}, load
    assert load["labels"].get("202", 0) > 100, load
    st = md_status(cluster, namespace)
    metrics = {m["name"]: m for m in (st.get("lastAnalysis") or {}).get("metrics") or []}
    harm = metrics["quality.harm"]
    assert harm["decision"] == "fail" and harm["effect"] < 0 and harm["test"].startswith("sequential McNemar"), harm
    assert harm["reason"].startswith("worse: accuracy"), harm
    for name in ("errorRate", "latency"):
        failing = [m for n, m in metrics.items() if n.startswith(name) and m["decision"] == "fail"]
        assert not failing, failing
    assert "quality.harm" in shown and "worse: accuracy" in shown, shown
    assert st["stable"]["modelVersion"] == "v1"


def test_worse_candidate_rolled_back_by_the_offline_evaluation_before_any_traffic(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v1 Healthy and a policy whose first step is `evaluate` on the labelled holdout the model store
    serves over HTTP, When v4 (plausible but wrong on held-out rows) is applied, Then the operator's Job runs
    `mlrollout-evaluate` from the serving image on the real node, scores v1 and v4 on every row, and the
    rollout ends `rolledBack` in the evaluate step: no traffic step ever starts, and status carries both
    scores, the paired effect with its interval, the test and p-value, the baseline and n."""
    cluster = platform.cluster
    steps = [
        {"evaluate": {"dataset": {"uri": platform.uri(models.HOLDOUT), "sha256": platform.files[models.HOLDOUT],
                                  "label": models.HOLDOUT_LABEL},
                      "metric": "accuracy", "margin": {"relative": 0.01}, "maxDuration": "5m",
                      "resources": {"cpu": "500m", "memory": "512Mi"}}},
        *QUALITY_STEPS,
    ]  # fmt: skip
    manifest = policy(f"{namespace}-eval", steps)
    apply(cluster, manifest)
    cluster_objects.append(f"rolloutpolicy/{manifest['metadata']['name']}")
    apply(cluster, model_deployment(platform, namespace, "v1", "wine-v1.onnx", manifest["metadata"]["name"]))
    wait_healthy(cluster, namespace, "v1")
    started = time.monotonic()
    apply(cluster, model_deployment(platform, namespace, "v4", "wine-v4-plausible.onnx", manifest["metadata"]["name"]))
    entry, steps_seen = rollout_of_v4(cluster, namespace)
    shown = cluster.kubectl("mlrollout", "status", "wine", "-n", namespace)
    st = md_status(cluster, namespace)
    ev = st.get("lastEvaluation") or {}
    report("offline evaluation", f"v4 {entry['outcome']} in {time.monotonic() - started:.0f}s: {entry.get('reason')}")
    assert entry["outcome"] == "rolledBack", entry
    assert steps_seen == {"evaluate"}, steps_seen  # no shadow, no canary: no traffic reached v4
    assert ev.get("rows") == len(platform.labels) and ev.get("datasetSha256") == platform.files[models.HOLDOUT], ev
    stable_check = next(c for c in ev["checks"] if c["kind"] == "stable")
    assert stable_check["effect"] < 0 and stable_check["test"].startswith("exact McNemar"), stable_check
    assert ev["phase"] in ("Failed", "Inconclusive") and "Evaluation" in entry["reason"], (ev, entry)
    assert "Evaluation: " in shown and "vs stable" in shown, shown
    assert st["stable"]["modelVersion"] == "v1" and st["traffic"]["candidate"] == st["traffic"]["mirror"] == 0
