"""The demo: a model rolled out safely on a real cluster, told step by step for someone new to mlrollout.

Run by `make demo` (through e2e/demo/demo, which brings the cluster up and builds the images first).
It installs the stack, deploys v1 of a wine classifier, sends steady traffic (and each answer's true
class a few seconds later, as ground truth), rolls out a good v2, a slow v3 and a plausible-but-wrong v4
while `kubectl mlrollout status --watch` shows each rollout live, and ends with a summary table. Each
rollout starts with an offline evaluation on the wine holdout (a Job, before any traffic); v4, which
those 36 rows cannot clear, is then retried under the same policy without that step, so the online
quality gate shows what live labels prove.
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
import yaml

NS = "ml-demo"
MD = "wine"
POLICY = "demo-fast"
ONLINE_POLICY = "demo-online"  # POLICY without its evaluate step
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(step: str, text: str = "") -> None:
    print(f"\n{BOLD}==> {step}{RESET}", flush=True)
    if text:
        print(textwrap.indent(textwrap.fill(" ".join(text.split()), 100), "    "), flush=True)


def note(text: str) -> None:
    print(f"    {DIM}{text}{RESET}", flush=True)


def policy_manifests(store: stack.ModelSource, holdout_sha256: str) -> list[dict[str, Any]]:
    """POLICY (its evaluate step reading the wine holdout from STORE, where the models are) and
    ONLINE_POLICY, the same without the evaluate step."""
    text = stack.render(
        "policy-demo.yaml",
        {"HOLDOUT_URI": store.model(models.HOLDOUT)["uri"], "HOLDOUT_SHA256": holdout_sha256},
    )
    gated: dict[str, Any] = yaml.safe_load(text)
    online = json.loads(json.dumps(gated))
    online["metadata"]["name"] = ONLINE_POLICY
    online["spec"]["strategy"]["steps"] = [s for s in gated["spec"]["strategy"]["steps"] if "evaluate" not in s]
    return [gated, online]


def md_manifest(
    version: str, filename: str, sha256: str, store: stack.ModelSource, policy: str = POLICY
) -> dict[str, Any]:
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
            "rolloutPolicyRef": {"name": policy},
            "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}},
        },
    }


def status(cluster: stack.Cluster) -> dict[str, Any]:
    md = cluster.get("modeldeployment", MD, NS) or {}
    st: dict[str, Any] = md.get("status") or {}
    return st


def finished(cluster: stack.Cluster, version: str, earlier: int = 0) -> dict[str, Any] | None:
    """The history entry of VERSION's rollout once it has ended (after EARLIER ended ones of it), else None."""
    entries = [e for e in status(cluster).get("history") or [] if e.get("modelVersion") == version]
    if len(entries) <= earlier:
        return None
    result: dict[str, Any] = max(entries, key=lambda e: str(e.get("finishedAt") or ""))
    return result


def ended_rollouts(cluster: stack.Cluster, version: str) -> int:
    return sum(1 for e in status(cluster).get("history") or [] if e.get("modelVersion") == version)


def evaluation_note(cluster: stack.Cluster) -> None:
    """The last offline evaluation as `kubectl mlrollout status` keeps it (status.lastEvaluation), in brief."""
    ev = status(cluster).get("lastEvaluation") or {}
    if not ev:
        note("offline evaluation: none")
        return
    note(f"offline evaluation ({ev.get('metric')}, {ev.get('rows')} holdout rows): {ev.get('phase')}")
    for c in ev.get("checks") or []:
        lo, hi = (c.get("interval") or [None, None])[:2]
        interval = f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else ""
        p = f", p={c['pValue']:.2g}" if c.get("pValue") is not None else ""
        note(
            f"  vs {c.get('name')}: {c.get('candidate', float('nan')):.3f} vs {c.get('reference', float('nan')):.3f},"
            f" effect {c.get('effect', float('nan')):+.3f}{interval}{p}: {c.get('decision')}"
        )


def build_models() -> tuple[Path, dict[str, Any]]:
    out = stack.cache_dir() / "demo-models"
    return out, models.cached(out)


def rollout(
    cluster: stack.Cluster,
    version: str,
    filename: str,
    sha: str,
    store: stack.ModelSource,
    timeout: float,
    policy: str = POLICY,
) -> dict[str, Any]:
    """Applies VERSION under POLICY and shows `kubectl mlrollout status --watch` until its rollout ends; when
    VERSION is already the spec's (held back after a rollback), `kubectl mlrollout retry` rolls it out again."""
    earlier = ended_rollouts(cluster, version)
    cluster.apply(json.dumps(md_manifest(version, filename, sha, store, policy)))
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    if earlier:
        subprocess.run(["kubectl", "mlrollout", "retry", MD, "-n", NS], env=env, check=False, timeout=60)
    watch = subprocess.Popen(
        ["kubectl", "mlrollout", "status", MD, "-n", NS, "--watch", "--timeout", str(int(timeout))], env=env
    )
    try:
        entry = stack.wait_until(
            f"the rollout of {version} to end", lambda: finished(cluster, version, earlier), timeout, 2
        )
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
    evaluations: list[str] = [""]
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
        evaluations.append(str(e.get("evaluation") or "no offline evaluation"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    say("Summary")
    for i, r in enumerate(rows):
        line = "  ".join(r[j].ljust(widths[j]) for j in range(4)) + "  " + r[4]
        print(f"    {BOLD if i == 0 else ''}{line}{RESET if i == 0 else ''}")
        if evaluations[i]:
            print(f"    {' ' * (widths[0] + 2)}{DIM}evaluation: {evaluations[i][:120]}{RESET}")
    stable = (st.get("stable") or {}).get("modelVersion", "?")
    print(f"\n    Serving now: {stable} (phase {st.get('phase')}).")
    print(
        f"    Client traffic during the demo: {load.get('sent', 0)} requests, {load.get('ok', 0)} answered, "
        f"{load.get('failed', 0)} failed; answers by model version: {load.get('versions', {})}"
    )
    if load.get("labels"):
        print(f"    Labels sent back as feedback, by the gateway's answer: {load['labels']}")
    if load.get("failed"):
        when = "; ".join(
            f"{datetime.fromtimestamp(t, tz=UTC):%H:%M:%S} {code}" + (f" ({why[:120]})" if why else "")
            for t, code, why in load.get("first_failures", [])
        )
        print(f"    Failed requests (UTC time, status, what was answered): {when}")


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
        f"""A RolloutPolicy ({POLICY}) says how new versions roll out: first an offline evaluation, a
        Job that scores stable and the candidate on 36 held-out wine rows (accuracy, from the
        {args.model_store} store with its sha256) before the candidate gets any traffic; then 100% shadow
        traffic, then canaries at 25% and 50%, each gated on the error rate, on latency (p90, compared
        with the stable version) and on accuracy measured from labels. Then the ModelDeployment
        '{MD}' in namespace {NS} is applied with model v1.""",
    )
    if cluster.get("namespace", NS):
        note(f"removing the previous demo's namespace {NS} first")
        cluster.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=300s", timeout=330)
    cluster.ensure_namespace(NS)
    store = stack.ModelSource(http_store, s3, s3.credentials(cluster, NS) if s3 else None)
    files = manifest["files"]
    for policy in policy_manifests(store, files[models.HOLDOUT]):
        cluster.apply(json.dumps(policy))
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
        """kubectl mlrollout status --watch shows the steps, the traffic split and each verdict. The
        evaluate step comes first: v2 agrees with v1 on all 36 holdout rows, which is +0 [-0.073, +0.073],
        within the 10-point margin, and far above always answering the majority class.""",
    )
    v2 = rollout(cluster, "v2", "wine-v2.onnx", files["wine-v2.onnx"], store, args.rollout_timeout)
    note(f"v2: {v2.get('outcome')} - {v2.get('reason', '')}")
    evaluation_note(cluster)

    say(
        "6. Roll out v3 (slow: higher latency)",
        """v3 gives v2's answers, so it passes the offline evaluation: a holdout says nothing about
        latency. Under traffic the analysis compares v3's latency with the SLO and with v2; the policy
        rolls back on failure.""",
    )
    v3 = rollout(cluster, "v3", "wine-v3-slow.onnx", files["wine-v3-slow.onnx"], store, args.rollout_timeout)
    note(f"v3: {v3.get('outcome')} - {v3.get('reason', '')}")
    evaluation_note(cluster)

    say(
        "7. Roll out v4 (plausible but wrong)",
        """Errors, latency and the class mix cannot tell v4 from v2. The offline evaluation sees v4 wrong
        on 4 of the 36 holdout rows where v2 is right: -0.11, but 36 rows leave that between about
        -0.23 and +0.02, so they can neither clear v4 (within 10 points) nor prove it worse. The verdict
        is inconclusive and the policy rolls v4 back before it answers a single request.""",
    )
    v4_offline = rollout(
        cluster, "v4", "wine-v4-plausible.onnx", files["wine-v4-plausible.onnx"], store, args.rollout_timeout
    )
    note(f"v4: {v4_offline.get('outcome')} - {v4_offline.get('reason', '')}")
    evaluation_note(cluster)

    say(
        "8. v4 again, judged by live labels (policy without the evaluate step)",
        f"""A holdout is small and may be missing or stale; labels from clients keep coming. The
        deployment now names policy {ONLINE_POLICY} (the same steps without the evaluation) and
        `kubectl mlrollout retry` rolls v4 out again. During the shadow step both models answer every
        request, clients get v2's answers; each label scores both answers to the same request, and the
        paired test (McNemar) sees v4 wrong where v2 is right. The quality rows show the accuracy effect
        with its interval. (The Evaluation block still shows v4's evaluation above: status.lastEvaluation
        keeps the last one of this revision.)""",
    )
    v4 = rollout(
        cluster,
        "v4",
        "wine-v4-plausible.onnx",
        files["wine-v4-plausible.onnx"],
        store,
        args.rollout_timeout,
        policy=ONLINE_POLICY,
    )
    note(f"v4: {v4.get('outcome')} - {v4.get('reason', '')}")

    load = stack.stop_loadgen(cluster, NS)
    summary(cluster, load)
    print(f"\n    Demo finished in {time.monotonic() - t0:.0f}s.")
    print('    Look around:  eval "$(e2e/cluster/env)" && kubectl -n ml-demo get md,pods,svc')
    print("                  kubectl mlrollout history wine -n ml-demo")
    print("    Tear down:    make demo-down")
    outcomes = [e.get("outcome") for e in (v2, v3, v4_offline, v4)]
    ok = outcomes == ["promoted", "rolledBack", "rolledBack", "rolledBack"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
