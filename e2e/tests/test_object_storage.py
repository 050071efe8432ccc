"""Models read from object storage in real pods (issue #18): s3:// through boto3, from moto's S3 server as a pod.

The store (stack.install_s3_store, e2e/demo/s3_store.py) holds every file of the demo's model store in one
bucket and enforces credentials with moto's IAM: only the read-only user's keys may read, unknown keys are
refused. Those keys, the region and the endpoint reach the model servers only through the Secret named by
`spec.model.credentials.secretRef`, as docs/sources.md tells users.
"""

from __future__ import annotations

import json
import time
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
    wait_healthy,
    wait_outcome,
)

# One shadow look and one canary step: enough to see both (and a promotion through the relabel roll) in
# about 2 minutes at 20 requests/s; test_rollouts covers the longer canary.
STEPS: list[dict[str, Any]] = [
    {"shadow": {"mirrorPercent": 100, "minRequests": 150, "maxDuration": "3m"}},
    {"canary": {"weight": 50, "minRequests": 150, "maxDuration": "3m"}},
]
ENFORCED = {"reader_get": "ok", "unknown_keys_get": "InvalidAccessKeyId", "reader_put": "AccessDenied"}


@pytest.fixture(scope="module")
def s3_store(platform: Platform) -> stack.S3Store:
    return stack.install_s3_store(platform.cluster, platform.refs, stack.cache_dir() / "demo-models")


def _secret_refs(cluster: stack.Cluster, namespace: str) -> dict[str, set[str]]:
    """Each Deployment of the namespace -> the Secrets its containers take as envFrom."""
    out: dict[str, set[str]] = {}
    for dep in json.loads(cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json"))["items"]:
        containers = dep["spec"]["template"]["spec"].get("containers") or []
        refs = {src["secretRef"]["name"] for c in containers for src in c.get("envFrom") or [] if "secretRef" in src}
        out[f"{dep['metadata']['labels'].get('app.kubernetes.io/component', '?')}/{dep['metadata']['name']}"] = refs
    return out


def test_models_from_s3_good_candidate_promoted_wrong_digest_rolled_back(
    platform: Platform, s3_store: stack.S3Store, namespace: str, cluster_objects: list[str]
) -> None:
    """Given moto's S3 server as a pod holding the demo's models, credentials enforced, and a Secret with the
    read-only user's keys, the region and the endpoint named by `spec.model.credentials.secretRef`,
    When v1 is deployed from s3://, v2 (a good model) rolled out from s3:// under 20 requests/s, and then
    v4 (v2's object with a wrong sha256),
    Then v2 is promoted through shadow and canary and v4 is rolled back with a reason naming the sha256
    without answering any client, no client request fails, and the Secret reaches the model servers only."""
    cluster = platform.cluster
    assert s3_store.checks == ENFORCED, s3_store.checks  # the store refuses unknown keys and the reader's writes
    for filename in ("wine-v1.onnx", "wine-v2.onnx"):
        assert s3_store.objects[filename] == platform.files[filename]
    # what the demo does with MLROLLOUT_DEMO_MODEL_STORE=s3 (e2e/demo/run.py)
    source = stack.ModelSource(platform.store, s3_store, s3_store.credentials(cluster, namespace))
    name = f"{namespace}-p"
    apply(cluster, policy(name, STEPS))
    cluster_objects.append(f"rolloutpolicy/{name}")

    def deploy(version: str, filename: str, sha256: str | None = None) -> None:
        apply(cluster, model_deployment(platform, namespace, version, filename, name, sha256, source=source))

    deploy("v1", "wine-v1.onnx")
    wait_healthy(cluster, namespace, "v1")
    stack.start_loadgen(cluster, namespace, platform.refs, "wine", "wine", platform.rows, rate=20)
    started = time.monotonic()
    deploy("v2", "wine-v2.onnx")
    seen: set[str] = set()

    def done() -> dict[str, Any] | None:
        st = md_status(cluster, namespace)
        step, traffic = st.get("currentStep") or {}, st.get("traffic") or {}
        if step:
            seen.add(f"{step.get('kind')}:{traffic.get('candidate', 0)}:{traffic.get('mirror', 0)}")
        return history_entry(cluster, namespace, "v2")

    v2 = stack.wait_until("v2's rollout to end", done, 600, 1)
    v2_seconds = time.monotonic() - started
    stack.wait_until("the old stable's scale-down", lambda: not md_status(cluster, namespace).get("scaleDowns"), 120)
    envfrom = _secret_refs(cluster, namespace)
    server_log = cluster.kubectl(
        "logs", "-n", namespace, "-l", "app.kubernetes.io/component=model-server", "-c", "server", "--tail=-1",
        "--max-log-requests=10",
    )  # fmt: skip
    started = time.monotonic()
    deploy("v4", "wine-v2.onnx", sha256="0" * 64)
    v4 = wait_outcome(cluster, namespace, "v4", 600)
    v4_seconds = time.monotonic() - started
    time.sleep(5)  # requests in flight when the candidate went away are counted in the next report line
    load = stack.stop_loadgen(cluster, namespace)
    report(
        "models from s3://",
        f"store checks {s3_store.checks}; v2 {v2['outcome']} in {v2_seconds:.0f}s, steps seen {sorted(seen)}; "
        f"v4 {v4['outcome']} in {v4_seconds:.0f}s: {v4.get('reason')}; envFrom {envfrom}; load {load}",
    )
    assert v2["outcome"] == "promoted", v2
    assert any(s.startswith("shadow:") for s in seen) and any(s.startswith("canary:") for s in seen), seen
    assert f"downloaded {s3_store.uri('wine-v2.onnx')}" in server_log, server_log[-3000:]
    servers = {k: v for k, v in envfrom.items() if k.startswith("model-server/")}
    assert servers and all(refs == {stack.S3_SECRET} for refs in servers.values()), envfrom
    assert all(stack.S3_SECRET not in refs for k, refs in envfrom.items() if k not in servers), envfrom  # gateway
    assert v4["outcome"] == "rolledBack", v4
    assert "sha256" in v4.get("reason", ""), v4
    assert "v4" not in load["versions"], load
    assert load["failed"] == 0, load
    assert load["ok"] > 0 and "v2" in load["versions"], load
    assert md_status(cluster, namespace)["stable"]["modelVersion"] == "v2"
