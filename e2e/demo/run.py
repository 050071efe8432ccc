"""The demo: a model rolled out safely on a real cluster, told step by step for someone new to mlrollout.

Run by `make demo` (through e2e/demo/demo, which brings the cluster up and builds the images first).
It installs the stack, deploys v1 of a wine classifier, sends steady traffic (and each answer's true
class a few seconds later, as ground truth), rolls out a good v2, a slow v3 and a plausible-but-wrong v4
while `kubectl mlrollout status --watch` shows each rollout live, and ends with a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models
import stack

NS = "ml-demo"
MD = "wine"
POLICY = "demo-fast"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(step: str, text: str = "") -> None:
    print(f"\n{BOLD}==> {step}{RESET}", flush=True)
    if text:
        print(textwrap.indent(textwrap.fill(" ".join(text.split()), 100), "    "), flush=True)


def note(text: str) -> None:
    print(f"    {DIM}{text}{RESET}", flush=True)


def policy_manifest() -> str:
    return (Path(__file__).resolve().parent / "manifests" / "policy-demo.yaml").read_text()


def md_manifest(version: str, filename: str, sha256: str, store: stack.ModelSource) -> dict[str, Any]:
    return {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MD, "namespace": NS},
        "spec": {
            "model": {
                "name": MD,
                "version": version,
                **store.model(filename),
                "sha256": sha256,
                # profiles are read from http(s)://, file:// and pvc:// only (docs/sources.md): always the HTTP store
                "referenceProfile": f"{store.http}/wine-profile.json",
            },
            "replicas": 1,
            "rolloutPolicyRef": {"name": POLICY},
            "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}},
        },
    }


def status(cluster: stack.Cluster) -> dict[str, Any]:
    md = cluster.get("modeldeployment", MD, NS) or {}
    st: dict[str, Any] = md.get("status") or {}
    return st


def finished(cluster: stack.Cluster, version: str) -> dict[str, Any] | None:
    """The history entry of VERSION's rollout once it has ended, else None."""
    for entry in status(cluster).get("history") or []:
        if entry.get("modelVersion") == version:
            result: dict[str, Any] = entry
            return result
    return None


def build_models() -> tuple[Path, dict[str, Any]]:
    out = stack.cache_dir() / "demo-models"
    return out, models.cached(out)


def rollout(
    cluster: stack.Cluster, version: str, filename: str, sha: str, store: stack.ModelSource, timeout: float
) -> dict[str, Any]:
    """Applies VERSION and shows `kubectl mlrollout status --watch` until its rollout ends."""
    cluster.apply(json.dumps(md_manifest(version, filename, sha, store)))
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    watch = subprocess.Popen(
        ["kubectl", "mlrollout", "status", MD, "-n", NS, "--watch", "--timeout", str(int(timeout))], env=env
    )
    try:
        entry = stack.wait_until(f"the rollout of {version} to end", lambda: finished(cluster, version), timeout, 2)
    finally:
        time.sleep(2)  # let the watch draw the final state
        watch.terminate()
        try:
            watch.wait(10)
        except subprocess.TimeoutExpired:
            watch.kill()
    result: dict[str, Any] = entry
    return result


def seconds_between(start: str | None, end: str | None) -> str:
    if not start or not end:
        return "-"
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    return f"{(b - a).total_seconds():.0f}s"


def summary(cluster: stack.Cluster, load: dict[str, Any]) -> None:
    st = status(cluster)
    rows = [("revision", "model", "outcome", "time to decision", "reason")]
    for e in st.get("history") or []:
        rows.append(
            (
                str(e.get("number", "")),
                str(e.get("modelVersion", "")),
                str(e.get("outcome", "")),
                seconds_between(e.get("startedAt"), e.get("finishedAt")),
                str(e.get("reason", ""))[:90],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    say("Summary")
    for i, r in enumerate(rows):
        line = "  ".join(r[j].ljust(widths[j]) for j in range(4)) + "  " + r[4]
        print(f"    {BOLD if i == 0 else ''}{line}{RESET if i == 0 else ''}")
    stable = (st.get("stable") or {}).get("modelVersion", "?")
    print(f"\n    Serving now: {stable} (phase {st.get('phase')}).")
    print(
        f"    Client traffic during the demo: {load.get('sent', 0)} requests, {load.get('ok', 0)} answered, "
        f"{load.get('failed', 0)} failed; answers by model version: {load.get('versions', {})}"
    )
    if load.get("labels"):
        print(f"    Labels sent back as feedback, by the gateway's answer: {load['labels']}")
    if load.get("failed"):
        when = ", ".join(
            f"{datetime.fromtimestamp(t, tz=UTC):%H:%M:%S} {code}" for t, code in load.get("first_failures", [])
        )
        print(f"    Failed requests (UTC time, status): {when}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rollout-timeout", type=float, default=600)
    parser.add_argument("--rate", type=float, default=20, help="client requests per second")
    parser.add_argument(
        "--model-store",
        choices=("http", "s3"),
        default=os.environ.get("MLROLLOUT_DEMO_MODEL_STORE", "http"),
        help="where the model servers read the models: the HTTP model store, or s3:// from moto's S3 server in "
        "a pod with credentials in a Secret (default: $MLROLLOUT_DEMO_MODEL_STORE, else http)",
    )
    args = parser.parse_args()
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        print("KUBECONFIG is not set; run through `make demo`", file=sys.stderr)
        return 2
    cluster = stack.Cluster(kubeconfig)
    refs = stack.image_refs()
    t0 = time.monotonic()

    say(
        "1. Sample models",
        """Four versions of a wine classifier (scikit-learn's bundled wine dataset, exported to ONNX):
        v1 and v2 are good logistic regressions; v3 gives the same answers but is slow (about 10 ms per
        request instead of well under 1 ms); v4 is fast, never fails and predicts the usual mix of
        classes, but it looks at two of the 13 measurements only and is wrong on about one answer in
        nine. Each file is identified by its sha256.""",
    )
    models_dir, manifest = build_models()
    for name, digest in manifest["files"].items():
        note(f"{name:20s} sha256 {digest[:16]}...")

    say(
        "2. Platform: Prometheus, a model store and the mlrollout operator (Helm chart)",
        """Prometheus finds the model servers and gateways by Kubernetes service discovery. The model store
        is a plain HTTP server; model servers download from it and verify the sha256 before loading.""",
    )
    prom = stack.install_prometheus(cluster, refs)
    note(f"Prometheus at {prom}")
    http_store = stack.install_model_store(cluster, refs, models_dir)
    note(f"model store at {http_store}")
    s3 = None
    if args.model_store == "s3":
        s3 = stack.install_s3_store(cluster, refs, models_dir)
        note(
            f"S3 store (moto's server, credentials enforced) at {s3.endpoint}, bucket {s3.bucket}: the model "
            "servers read s3:// with a read-only user's keys from a Secret (spec.model.credentials.secretRef)"
        )
    stack.install_operator(cluster, refs, prom)
    note(f"operator installed: helm release '{stack.RELEASE}' in namespace {stack.SYSTEM_NS}")

    say(
        "3. Deploy v1",
        f"""A RolloutPolicy ({POLICY}) says how new versions roll out: 100% shadow traffic first, then
        canaries at 25% and 50%, each gated on the error rate, on latency (p90, compared with the
        stable version) and on accuracy measured from labels. Then the ModelDeployment
        '{MD}' in namespace {NS} is applied with model v1.""",
    )
    if cluster.get("namespace", NS):
        note(f"removing the previous demo's namespace {NS} first")
        cluster.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=300s", timeout=330)
    cluster.ensure_namespace(NS)
    store = stack.ModelSource(http_store, s3, s3.credentials(cluster, NS) if s3 else None)
    cluster.apply(policy_manifest())
    files = manifest["files"]
    cluster.apply(json.dumps(md_manifest("v1", "wine-v1.onnx", files["wine-v1.onnx"], store)))
    stack.wait_until("v1 to be Healthy", lambda: status(cluster).get("phase") == "Healthy", 300, 2)
    note("v1 is Healthy and serves all traffic.")

    say(
        "4. Client traffic",
        f"""A load generator pod sends {args.rate:g} requests per second to the gateway Service '{MD}' and
        counts every answer. Each answer carries a feedback id; 3 seconds later the load generator sends
        the row's true class back with it, as a client does once it learns the truth. It runs through
        every rollout.""",
    )
    stack.start_loadgen(
        cluster, NS, refs, MD, MD, manifest["rows"], rate=args.rate, labels=manifest["labels"], label_delay=3.0
    )

    say(
        "5. Roll out v2 (a good model)",
        """kubectl mlrollout status --watch shows the steps, the traffic split and each analysis verdict.""",
    )
    v2 = rollout(cluster, "v2", "wine-v2.onnx", files["wine-v2.onnx"], store, args.rollout_timeout)
    note(f"v2: {v2.get('outcome')} - {v2.get('reason', '')}")

    say(
        "6. Roll out v3 (slow: higher latency)",
        """The analysis compares v3's latency with the SLO and with v2; the policy rolls back on failure.""",
    )
    v3 = rollout(cluster, "v3", "wine-v3-slow.onnx", files["wine-v3-slow.onnx"], store, args.rollout_timeout)
    note(f"v3: {v3.get('outcome')} - {v3.get('reason', '')}")

    say(
        "7. Roll out v4 (plausible but wrong)",
        """Errors, latency and the class mix cannot tell v4 from v2. During the shadow step both models
        answer every request; each label scores both answers to the same request, and the paired test
        (McNemar) sees v4 wrong where v2 is right. The quality rows show the accuracy effect with its
        interval.""",
    )
    v4 = rollout(cluster, "v4", "wine-v4-plausible.onnx", files["wine-v4-plausible.onnx"], store, args.rollout_timeout)
    note(f"v4: {v4.get('outcome')} - {v4.get('reason', '')}")

    load = stack.stop_loadgen(cluster, NS)
    summary(cluster, load)
    print(f"\n    Demo finished in {time.monotonic() - t0:.0f}s.")
    print('    Look around:  eval "$(e2e/cluster/env)" && kubectl -n ml-demo get md,pods,svc')
    print("                  kubectl mlrollout history wine -n ml-demo")
    print("    Tear down:    make demo-down")
    ok = v2.get("outcome") == "promoted" and v3.get("outcome") == "rolledBack" and v4.get("outcome") == "rolledBack"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
