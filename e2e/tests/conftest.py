"""Fixtures of the end-to-end scenarios: any cluster through KUBECONFIG, the stack installed once.

When KUBECONFIG is not set, the local single-node cluster is started (`e2e/cluster/up --with-node`,
state in $MLROLLOUT_STATE, default /tmp/mlrollout-e2e) and left running for the next run; `make e2e`
(e2e/tests/run) stops it afterwards. Images come from images/build (or e2e/kind/up with
MLROLLOUT_IMAGE_REFS). Every scenario gets its own namespace, deleted afterwards.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DEMO = Path(__file__).resolve().parents[1] / "demo"
sys.path.insert(0, str(DEMO))
import models  # noqa: E402
import stack  # noqa: E402

REPO = stack.REPO
UP_TIMEOUT = 3 * 3600  # a cold build of the pinned Kubernetes is long on 2 cores


def _local_cluster() -> str:
    env = {**os.environ, "MLROLLOUT_STATE": os.environ.get("MLROLLOUT_STATE", "/tmp/mlrollout-e2e")}
    subprocess.run(
        ["bash", str(REPO / "e2e/cluster/up"), "--with-node"],
        env=env,
        check=True,
        timeout=UP_TIMEOUT,
        stdout=subprocess.DEVNULL,
    )
    out = subprocess.run(["bash", str(REPO / "e2e/cluster/env")], env=env, check=True, capture_output=True, text=True)
    for key, value in re.findall(r"^export (\w+)=(\S+)$", out.stdout, flags=re.MULTILINE):
        if key in ("KUBECONFIG", "MLROLLOUT_CLUSTER_BIN", "MLROLLOUT_STATE"):
            os.environ[key] = value.strip("'\"")
    return os.environ["KUBECONFIG"]


@dataclass
class Platform:
    """The installed stack and the sample models."""

    cluster: stack.Cluster
    refs: dict[str, str]
    store: str
    prometheus: str
    files: dict[str, str]
    rows: list[list[float]]
    labels: list[int]  # each row's true class: what the load generator sends back as feedback
    timings: dict[str, float] = field(default_factory=dict)

    def uri(self, name: str) -> str:
        return f"{self.store}/{name}"


@pytest.fixture(scope="session")
def cluster() -> stack.Cluster:
    kubeconfig = os.environ.get("KUBECONFIG") or _local_cluster()
    # kubectl finds the kubectl-mlrollout plugin next to the interpreter running the tests.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return stack.Cluster(kubeconfig)


@pytest.fixture(scope="session")
def platform(cluster: stack.Cluster) -> Platform:
    models_dir = stack.cache_dir() / "demo-models"  # shared with the demo: one model store, one build
    manifest = models.cached(models_dir)
    refs = stack.image_refs()
    prom = stack.install_prometheus(cluster, refs)
    store = stack.install_model_store(cluster, refs, models_dir)
    stack.install_operator(cluster, refs, prom)
    return Platform(cluster, refs, store, prom, manifest["files"], manifest["rows"], manifest["labels"])


# --- what a failed scenario leaves behind for whoever reads the CI log ----------------------------------


def diagnostics(cluster: stack.Cluster, namespace: str | None) -> str:
    """The scenario's objects, events and pod logs plus the operator's log, as one bounded text block."""
    ns = ["-n", namespace] if namespace else []
    sections: list[tuple[str, list[str]]] = [
        ("nodes and all pods", ["get", "nodes,pods", "-A", "-o", "wide"]),
    ]
    if namespace:
        sections += [
            ("ModelDeployment", ["get", "modeldeployments", *ns, "-o", "yaml"]),
            (
                "objects",
                ["get", "deployments,replicasets,pods,services,endpointslices,configmaps,hpa", *ns, "-o", "wide"],
            ),
            ("events", ["get", "events", *ns, "--sort-by=.lastTimestamp"]),
            ("load generator (last lines)", ["logs", *ns, "loadgen", "--tail=15"]),
            (
                "gateway and model-server logs",
                [
                    "logs",
                    *ns,
                    "-l",
                    "app.kubernetes.io/managed-by=mlrollout",
                    "--all-containers",
                    "--prefix",
                    "--tail=60",
                    "--max-log-requests=20",
                ],
            ),
        ]
    sections += [
        (
            "operator log",
            [
                "logs",
                "-n",
                stack.SYSTEM_NS,
                "-l",
                f"app.kubernetes.io/instance={stack.RELEASE}",
                "--all-containers",
                "--prefix",
                "--tail=250",
            ],
        ),
        ("mlrollout-system pods", ["get", "pods", "-n", stack.SYSTEM_NS, "-o", "wide"]),
    ]
    out: list[str] = []
    for title, args in sections:
        text = cluster.kubectl_text(*args)
        out.append(f"----- {title}: kubectl {' '.join(args)}\n{text.rstrip()[-20000:]}")
    return "\n".join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On a failed scenario, attach the cluster's view of it to the report (and to a file in the state dir)."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or call.when == "teardown":
        return
    funcargs = getattr(item, "funcargs", {})
    cluster = funcargs.get("cluster")
    if cluster is None and "platform" in funcargs:
        cluster = funcargs["platform"].cluster
    if not isinstance(cluster, stack.Cluster):
        return
    text = diagnostics(cluster, funcargs.get("namespace"))
    rep.sections.append(("e2e diagnostics", text))
    state = os.environ.get("MLROLLOUT_STATE")
    if state:
        path = Path(state + "-logs") / f"{item.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, cluster: stack.Cluster) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"e2e-{base}-{secrets.token_hex(2)}"
    cluster.ensure_namespace(name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def cluster_objects(cluster: stack.Cluster) -> Iterator[list[str]]:
    """Cluster-scoped objects a scenario creates (kind/name), deleted afterwards."""
    created: list[str] = []
    try:
        yield created
    finally:
        for obj in created:
            cluster.kubectl("delete", obj, "--ignore-not-found", "--wait=false", check=False)


# --- helpers shared by the scenarios ------------------------------------------------------------------


def policy(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A fast RolloutPolicy: short analysis interval, small samples (scenarios finish in minutes)."""
    body: dict[str, Any] = {
        "strategy": {"steps": steps},
        "analysis": {
            "interval": "5s",
            "metrics": {
                "errorRate": {"maxRate": 0.05},
                "latency": {"quantile": 0.9, "maxSeconds": 0.1, "compareWithStable": True},
                "predictionDrift": {"enabled": False},
                "inputDrift": {"enabled": False},
            },
        },
        # The scenarios run ~20 requests/s for minutes: the default error margin (30% of stable's, at least
        # 0.25 pp) needs ~4000 error-free requests per track to show (`mlrollout plan` says so), so
        # they allow 2 pp, shown in ~500. Latency may be twice stable's or 3 ms more: requests take ~1 ms
        # and on this noisy 2-core machine a p90's bounds stay ~25% wide after 3,500 requests (v3 is +10 ms).
        "significance": {
            "alpha": 0.05,
            "margins": {"errorRate": {"absolute": 0.02}, "latency": {"relative": 1.0, "floor": 0.003}},
        },
        "onFailure": "rollback",
        "onInconclusive": {"action": "rollback"},
        "progressDeadline": "10m",
    }
    body.update(spec)
    return {"apiVersion": "mlrollout.io/v1alpha1", "kind": "RolloutPolicy", "metadata": {"name": name}, "spec": body}


def model_deployment(
    platform: Platform,
    namespace: str,
    version: str,
    filename: str,
    policy_name: str | None,
    sha256: str | None = None,
    name: str = "wine",
    source: stack.ModelSource | None = None,
) -> dict[str, Any]:
    """FILENAME from the HTTP model store, or from SOURCE (e.g. the S3 store with its credentials)."""
    spec: dict[str, Any] = {
        "model": {
            "name": name,
            "version": version,
            **(source.model(filename) if source else {"uri": platform.uri(filename)}),
            "sha256": sha256 or platform.files[filename],
        },
        "replicas": 1,
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}},
    }
    if policy_name:
        spec["rolloutPolicyRef"] = {"name": policy_name}
    return {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def apply(cluster: stack.Cluster, obj: dict[str, Any]) -> None:
    cluster.apply(json.dumps(obj))


def md_status(cluster: stack.Cluster, namespace: str, name: str = "wine") -> dict[str, Any]:
    md = cluster.get("modeldeployment", name, namespace) or {}
    st: dict[str, Any] = md.get("status") or {}
    return st


def history_entry(cluster: stack.Cluster, namespace: str, version: str, name: str = "wine") -> dict[str, Any] | None:
    return entry_in(md_status(cluster, namespace, name), version)


def step_index(cluster: stack.Cluster, namespace: str) -> int:
    """The index of the rollout step in status, -1 when no rollout is under way."""
    step = md_status(cluster, namespace).get("currentStep") or {}
    return int(step.get("index", -1))


def wait_rollout_end(
    cluster: stack.Cluster, namespace: str, version: str, after: str, interval: float
) -> tuple[dict[str, Any], list[int]]:
    """Waits for ``version``'s history entry and returns it with the step indices seen on the way, so a test
    can check the rollout never went back to a step earlier than the one a disruption found."""
    indices: list[int] = []

    def done() -> dict[str, Any] | None:
        idx = step_index(cluster, namespace)
        if idx >= 0:
            indices.append(idx)
        return history_entry(cluster, namespace, version)

    entry: dict[str, Any] = stack.wait_until(f"{version}'s rollout to end {after}", done, 600, interval)
    return entry, indices


def entry_in(status: dict[str, Any], version: str) -> dict[str, Any] | None:
    """The history entry of ``version`` in a status already read (read it once when other fields of the same
    moment matter: two reads can straddle the status write that ends the rollout)."""
    for entry in status.get("history") or []:
        if entry.get("modelVersion") == version:
            found: dict[str, Any] = entry
            return found
    return None


def wait_healthy(
    cluster: stack.Cluster, namespace: str, version: str, timeout: float = 300, name: str = "wine"
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        st = md_status(cluster, namespace, name)
        stable = (st.get("stable") or {}).get("modelVersion")
        return st if st.get("phase") == "Healthy" and stable == version else None

    result: dict[str, Any] = stack.wait_until(f"{namespace}/{name} Healthy on {version}", ready, timeout, 2)
    return result


def wait_outcome(cluster: stack.Cluster, namespace: str, version: str, timeout: float = 600) -> dict[str, Any]:
    result: dict[str, Any] = stack.wait_until(
        f"the rollout of {version} in {namespace} to end",
        lambda: history_entry(cluster, namespace, version),
        timeout,
        2,
    )
    return result


def report(name: str, text: str) -> None:
    """Scenario measurements, printed in the test output and collected in $MLROLLOUT_E2E_REPORT."""
    line = f"[e2e] {name}: {text}"
    print(line)
    path = os.environ.get("MLROLLOUT_E2E_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


def now() -> float:
    return time.time()
