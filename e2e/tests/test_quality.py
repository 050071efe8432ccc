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
)
from mlrollout_serving.contract.metrics import MODEL_INFO, MODEL_REQUESTS

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


def candidate_series(cluster: stack.Cluster, namespace: str, version: str) -> tuple[bool, list[dict[str, Any]]]:
    """Whether Prometheus ever scraped ``version``'s model servers in ``namespace`` (its ``model_info``), and
    every series of requests they answered (model-server requests, by revision) in the last 15 minutes."""
    info = stack.prometheus_query(
        cluster, f'max_over_time({MODEL_INFO.name}{{namespace="{namespace}",model_version="{version}"}}[15m])'
    )
    revisions = sorted({s["metric"].get("revision", "") for s in info})
    if not revisions:
        return False, []
    answered = stack.prometheus_query(
        cluster,
        f'max_over_time({MODEL_REQUESTS.name}{{namespace="{namespace}",revision=~"{"|".join(revisions)}"}}[15m]) > 0',
    )
    return True, answered


def test_offline_evaluation_fails_a_worse_candidate_before_any_traffic_and_passes_a_good_one_to_shadow(
    platform: Platform, namespace: str, cluster_objects: list[str]
) -> None:
    """Given v1 Healthy under client load and a policy whose first step is `evaluate` on a labelled holdout
    the model store serves over HTTP (899 rows of scikit-learn's digits), When v3 (trained on 10 of the 64
    pixels) is applied, Then the operator's Job runs `mlrollout-evaluate` from the serving image on the real
    node and the verdict is *fail* (worse beyond the margin, proven: not merely inconclusive): the rollout
    ends `rolledBack` in the evaluate step, no traffic step starts, Prometheus scraped v3's model server
    but holds no request it answered, and no client was answered by it. When v2 (as accurate) is applied,
    Then it passes the evaluate step with no request reaching it, and goes on to shadow, where the mirrored
    requests reach it (the same query sees them: the check above is not blind)."""
    cluster = platform.cluster
    holdout = models.DIGITS_HOLDOUT
    steps: list[dict[str, Any]] = [
        {"evaluate": {"dataset": {"uri": platform.uri(holdout), "sha256": platform.files[holdout],
                                  "label": models.DIGITS_LABEL},
                      "metric": "accuracy", "margin": {"relative": 0.01}, "maxDuration": "5m",
                      "resources": {"cpu": "500m", "memory": "512Mi"}}},
        {"shadow": {"mirrorPercent": 100, "minRequests": 100, "maxDuration": "3m"}},
    ]  # fmt: skip
    manifest = policy(f"{namespace}-eval", steps)
    apply(cluster, manifest)
    cluster_objects.append(f"rolloutpolicy/{manifest['metadata']['name']}")

    def deploy(version: str) -> None:
        md = model_deployment(platform, namespace, version, f"digits-{version}.onnx", manifest["metadata"]["name"],
                              name="digits")  # fmt: skip
        apply(cluster, md)

    deploy("v1")
    wait_healthy(cluster, namespace, "v1", name="digits")
    held = (stack.cache_dir() / "demo-models" / holdout).read_text().splitlines()[1:]
    rows = [[float(v) for v in line.split(",")[:-1]] for line in held]
    stack.start_loadgen(cluster, namespace, platform.refs, "digits", "digits", rows[:100], rate=20)

    started = time.monotonic()
    deploy("v3-worse")
    steps_seen: set[str] = set()

    def ended() -> dict[str, Any] | None:
        st = md_status(cluster, namespace, "digits")
        steps_seen.add(str((st.get("currentStep") or {}).get("kind")))
        return entry_in(st, "v3-worse")

    entry = stack.wait_until("v3's rollout to end", ended, 600, 2)
    failed_in = time.monotonic() - started
    shown = cluster.kubectl("mlrollout", "status", "digits", "-n", namespace)
    st = md_status(cluster, namespace, "digits")
    ev = st.get("lastEvaluation") or {}
    stable_check = next(c for c in ev.get("checks", []) if c["kind"] == "stable")
    report("offline evaluation", f"v3-worse {entry['outcome']} in {failed_in:.0f}s: {entry.get('reason')}")
    assert entry["outcome"] == "rolledBack", entry
    assert steps_seen <= {"evaluate", "None"}, steps_seen  # no shadow, no canary: no traffic reached v3
    assert ev["phase"] == "Failed" and stable_check["decision"] == "fail", ev
    assert ev["rows"] == len(rows) and ev["datasetSha256"] == platform.files[holdout], ev
    assert stable_check["test"].startswith("exact McNemar") and stable_check["interval"][1] < -stable_check["margin"]
    assert "Evaluation: FAILED" in shown and "vs stable" in shown, shown
    assert st["stable"]["modelVersion"] == "v1" and st["traffic"]["candidate"] == st["traffic"]["mirror"] == 0
    scraped, answered = candidate_series(cluster, namespace, "v3-worse")
    assert scraped and answered == [], answered  # Prometheus saw v3's server: it answered nothing

    started = time.monotonic()
    deploy("v2")
    phases: list[tuple[str, str, bool]] = []  # (step, evaluation phase, any v2 request series) as seen

    def shadowing() -> dict[str, Any] | None:
        st = md_status(cluster, namespace, "digits")
        kind = str((st.get("currentStep") or {}).get("kind"))
        if kind == "evaluate":
            phases.append((kind, (st.get("lastEvaluation") or {}).get("phase", ""), bool(candidate_series(
                cluster, namespace, "v2")[1])))  # fmt: skip
        return st if kind == "shadow" else None

    # polled every half second: the evaluate step can end within a few seconds (9 s from the apply to shadow
    # measured, pod starts included), and `phases` must see it at least once
    st = stack.wait_until("v2 to pass the evaluation and start shadow", shadowing, 600, 0.5)
    passed_in = time.monotonic() - started
    ev = st.get("lastEvaluation") or {}
    assert ev.get("phase") == "Passed" and entry_in(st, "v2") is None, (ev, st.get("history"))
    assert phases and not any(seen for _, _, seen in phases), phases  # nothing reached v2 while it was scored
    mirrored = stack.wait_until("v2's mirrored requests in Prometheus",
                                lambda: candidate_series(cluster, namespace, "v2")[1], 120, 3)  # fmt: skip
    load = stack.stop_loadgen(cluster, namespace)
    report("offline evaluation", f"v2 passed the evaluate step and was shadowing {passed_in:.0f}s after it was "
           f"applied: {ev.get('reason')}; v2 request series in shadow {len(mirrored)}; load {load}")  # fmt: skip
    assert load["failed"] == 0, load
    assert set(load["versions"]) == {"v1"}, load  # clients were answered by v1 only: v3 never, v2 in shadow
