"""Installs what the demo and the e2e scenarios run on any cluster reachable through KUBECONFIG.

The operator chart (with the real `helm`), an in-cluster Prometheus, the model store holding the sample
models, and the bounded load generator pod. Only `kubectl` and `helm` talk to the cluster, so the same
code works on the local single-node cluster (e2e/cluster + e2e/node) and on kind (e2e/kind).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = Path(__file__).resolve().parent / "manifests"
SYSTEM_NS = "mlrollout-system"
MODELS_NS = "mlrollout-models"
RELEASE = "mlrollout"
S3_BUCKET = "mlrollout-demo-models"  # install_s3_store's bucket
S3_SECRET = "model-store-s3"  # the credentials Secret S3Store.credentials writes into a ModelDeployment's namespace
# Namespace labels under which the PodSecurity admission plugin refuses pods that break "restricted".
POD_SECURITY_RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# How the operator's NetworkPolicies select the Prometheus of install_prometheus (its namespace, its pods).
PROMETHEUS_PEER_VALUES = [
    f"modelNetworkPolicies.prometheus.namespaceLabels.kubernetes\\.io/metadata\\.name={SYSTEM_NS}",
    "modelNetworkPolicies.prometheus.podLabels.app\\.kubernetes\\.io/name=null",
    "modelNetworkPolicies.prometheus.podLabels.app=prometheus",
]


def cache_dir() -> Path:
    base = os.environ.get("MLROLLOUT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlrollout"
    )
    return Path(base)


def image_refs(path: Path | None = None) -> dict[str, str]:
    """Image references written by images/build (or e2e/kind/load): PAUSE, COREDNS, OPERATOR, SERVING, PROMETHEUS."""
    path = path or Path(os.environ.get("MLROLLOUT_IMAGE_REFS", cache_dir() / "images" / "refs.env"))
    refs: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.startswith("MLROLLOUT_") and key.endswith("_IMAGE"):
            refs[key.removeprefix("MLROLLOUT_").removesuffix("_IMAGE")] = value
    return refs


def split_ref(ref: str) -> tuple[str, str]:
    """'registry/repo:tag' -> ('registry/repo', 'tag')."""
    repo, _, tag = ref.rpartition(":")
    if "/" in tag or not repo:
        return ref, "latest"
    return repo, tag


def _tool(name: str) -> str:
    """The pinned build of kubectl/helm when e2e/cluster/env exported it, else the one on PATH."""
    bin_dir = os.environ.get("MLROLLOUT_CLUSTER_BIN")
    if bin_dir and (Path(bin_dir) / name).exists():
        return str(Path(bin_dir) / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f'{name} not found: run `eval "$(e2e/cluster/env)"` or install {name}')
    return found


@dataclass
class Cluster:
    """kubectl and helm against one cluster."""

    kubeconfig: str

    def run(self, tool: str, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 180) -> str:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        proc = subprocess.run(
            [_tool(tool), *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 180) -> str:
        return self.run("kubectl", *args, stdin=stdin, check=check, timeout=timeout)

    def kubectl_text(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        """stdout and stderr of a kubectl call that may fail (diagnostics, refusals: an error is also an answer)."""
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        try:
            proc = subprocess.run(
                [_tool("kubectl"), *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return f"(kubectl timed out after {timeout:.0f}s)"
        return proc.stdout + proc.stderr

    def helm(self, *args: str, timeout: float = 600) -> str:
        return self.run("helm", *args, timeout=timeout)

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", stdin=manifest)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        out = self.kubectl("get", kind, name, *ns, "-o", "json", "--ignore-not-found", timeout=60)
        return json.loads(out) if out.strip() else None

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = dict(labels)
        self.apply(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}))

    def rollout_wait(self, namespace: str, deployment: str, timeout: int = 300) -> None:
        self.kubectl(
            "-n",
            namespace,
            "rollout",
            "status",
            f"deployment/{deployment}",
            f"--timeout={timeout}s",
            timeout=timeout + 30,
        )


def render(template: str, values: Mapping[str, str]) -> str:
    text = (MANIFESTS / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Polls PREDICATE until it returns something truthy; raises TimeoutError naming WHAT."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_error})" if last_error else "")
    )


# --- the stack ---------------------------------------------------------------------------------------


def install_prometheus(cluster: Cluster, refs: Mapping[str, str], scrape_interval: str = "2s") -> str:
    """Prometheus in SYSTEM_NS; returns its in-cluster URL."""
    cluster.ensure_namespace(SYSTEM_NS)
    cm = cluster.kubectl(
        "create", "configmap", "prometheus-discovery", "-n", SYSTEM_NS,
        f"--from-file=kube_sd.py={Path(__file__).resolve().parent / 'kube_sd.py'}", "--dry-run=client", "-o", "json",
    )  # fmt: skip
    cluster.apply(cm)
    values = {
        "NAMESPACE": SYSTEM_NS,
        "PROMETHEUS_IMAGE": refs["PROMETHEUS"],
        "SERVING_IMAGE": refs["SERVING"],
        "SCRAPE_INTERVAL": scrape_interval,
    }
    cluster.apply(render("prometheus.yaml", values))
    cluster.rollout_wait(SYSTEM_NS, "prometheus")
    return f"http://prometheus.{SYSTEM_NS}.svc:9090"


def prometheus_query(cluster: Cluster, query: str) -> list[dict[str, Any]]:
    """An instant PromQL query to install_prometheus's server, through the API server's service proxy (no
    port-forward); the result vector."""
    path = f"/api/v1/namespaces/{SYSTEM_NS}/services/prometheus:9090/proxy/api/v1/query"
    body = json.loads(cluster.kubectl("get", "--raw", f"{path}?{urllib.parse.urlencode({'query': query})}"))
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {query!r}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _models_configmap(cluster: Cluster, models_dir: Path) -> str:
    """The ConfigMap `models` in MODELS_NS with every file of MODELS_DIR; returns a digest of its content."""
    cluster.ensure_namespace(MODELS_NS)
    files = sorted(p for p in models_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()[:16]
    cm = cluster.kubectl(
        "create",
        "configmap",
        "models",
        "-n",
        MODELS_NS,
        *(f"--from-file={p}" for p in files),
        "--dry-run=client",
        "-o",
        "json",
    )
    cluster.apply(cm)
    return digest


def install_model_store(cluster: Cluster, refs: Mapping[str, str], models_dir: Path) -> str:
    """The model store serving every file of MODELS_DIR; returns its base URL."""
    digest = _models_configmap(cluster, models_dir)
    cluster.apply(
        render(
            "model-store.yaml",
            {"NAMESPACE": MODELS_NS, "SERVING_IMAGE": refs["SERVING"], "MODELS_DIGEST": digest},
        )
    )
    cluster.rollout_wait(MODELS_NS, "model-store")
    return f"http://model-store.{MODELS_NS}.svc"


class S3StoreError(Exception):
    """The S3 store's pod reported that it cannot serve as expected (its own check failed)."""


@dataclass(frozen=True)
class S3Store:
    """install_s3_store's store: where the models are and what a model server needs to read them."""

    bucket: str
    endpoint: str  # in-cluster, for AWS_ENDPOINT_URL_S3
    region: str
    reader: dict[str, str]  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY of the read-only IAM user
    objects: dict[str, str]  # key -> sha256 of what the store holds
    checks: dict[str, str]  # the store's own check that it enforces credentials (s3_store.self_check)

    def uri(self, filename: str) -> str:
        return f"s3://{self.bucket}/{filename}"

    def credentials(self, cluster: Cluster, namespace: str, name: str = S3_SECRET) -> dict[str, Any]:
        """Writes the Secret the docs describe (the standard AWS variables: keys, region, endpoint) into
        NAMESPACE; returns the `spec.model.credentials` that names it."""
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": {**self.reader, "AWS_REGION": self.region, "AWS_ENDPOINT_URL_S3": self.endpoint},
        }
        cluster.apply(json.dumps(secret))
        return {"secretRef": {"name": name}}


@dataclass(frozen=True)
class ModelSource:
    """Where the model servers of the demo and the scenarios read a model: the HTTP model store, or the S3 store
    with the credentials S3Store.credentials wrote (the demo's MLROLLOUT_DEMO_MODEL_STORE=s3)."""

    http: str
    s3: S3Store | None = None
    credentials: dict[str, Any] | None = None

    def model(self, filename: str) -> dict[str, Any]:
        """The `spec.model` fields that say where FILENAME is and how to read it."""
        if self.s3 is None:
            return {"uri": f"{self.http}/{filename}"}
        return {"uri": self.s3.uri(filename), **({"credentials": self.credentials} if self.credentials else {})}


def s3_store_image(timeout: float = 1800) -> str:
    """The S3 store's image (e2e/s3/image: built and imported into the local node unless there already)."""
    proc = subprocess.run(
        ["bash", str(REPO / "e2e" / "s3" / "image")], stdout=subprocess.PIPE, text=True, check=True, timeout=timeout
    )
    return proc.stdout.strip().splitlines()[-1]


def install_s3_store(cluster: Cluster, refs: Mapping[str, str], models_dir: Path) -> S3Store:
    """moto's S3 server as a pod in MODELS_NS with every file of MODELS_DIR in bucket S3_BUCKET, auth enforced;
    its reader's keys come from the pod's log (moto generates them; e2e/demo/s3_store.py says why)."""
    models_digest = _models_configmap(cluster, models_dir)
    program = Path(__file__).resolve().parent / "s3_store.py"
    cm = cluster.kubectl(
        "create", "configmap", "s3-store-program", "-n", MODELS_NS, f"--from-file=s3_store.py={program}",
        "--dry-run=client", "-o", "json",
    )  # fmt: skip
    cluster.apply(cm)
    values = {
        "NAMESPACE": MODELS_NS,
        "S3_IMAGE": refs.get("S3STORE") or s3_store_image(),
        "BUCKET": S3_BUCKET,
        "MODELS_DIGEST": models_digest,
        "PROGRAM_DIGEST": hashlib.sha256(program.read_bytes()).hexdigest()[:16],
    }
    cluster.apply(render("s3-store.yaml", values))
    line = wait_until("the S3 store's ready line", lambda: _s3_ready_line(cluster), 300, 2)
    cluster.rollout_wait(MODELS_NS, "s3-store")
    return S3Store(
        bucket=line["bucket"],
        endpoint=f"http://s3-store.{MODELS_NS}.svc:5000",
        region=line["region"],
        reader=dict(line["reader"]),
        objects=dict(line["objects"]),
        checks=dict(line["checks"]),
    )


def _s3_ready_line(cluster: Cluster) -> dict[str, Any] | None:
    """The ready line of the S3 store's current pod (Recreate: one pod; a terminating one is skipped)."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", MODELS_NS, "-l", "app=s3-store", "-o", "json"))["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if len(live) != 1 or live[0]["status"].get("phase") != "Running":
        return None
    log = cluster.kubectl("logs", "-n", MODELS_NS, live[0]["metadata"]["name"], timeout=60)
    for text in log.splitlines():
        if text.startswith("{"):
            line: dict[str, Any] = json.loads(text)
            if "error" in line:  # not a RuntimeError: wait_until would retry it
                raise S3StoreError(f"the S3 store failed: {line['error']}")
            if line.get("s3_store") == "ready":
                return line
    return None


def install_operator(
    cluster: Cluster,
    refs: Mapping[str, str],
    prometheus_url: str,
    extra_env: Mapping[str, str] | None = None,
    extra_sets: Sequence[str] = (),
) -> None:
    """The chart, installed (or upgraded) with the real helm, pointing at the local images.

    Helm installs a chart's CRDs only on first install, never on upgrade, so they are applied first
    (server-side, as docs/operator.md tells users): an upgraded release gets new fields and kopf's
    peering CRDs too.
    """
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "mlrollout" / "crds"))
    repo, tag = split_ref(refs["OPERATOR"])
    args = [
        "upgrade",
        "--install",
        RELEASE,
        str(REPO / "charts" / "mlrollout"),
        "--namespace",
        SYSTEM_NS,
        "--create-namespace",
        "--set",
        f"image.repository={repo}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--set",
        f"prometheusUrl={prometheus_url}",
        "--set",
        f"servingImage={refs['SERVING']}",
        "--set",
        f"gatewayImage={refs['SERVING']}",
        "--set",
        "reconcileInterval=2",
        *(arg for value in (*PROMETHEUS_PEER_VALUES, *extra_sets) for arg in ("--set", value)),
        "--wait",
        "--timeout",
        "5m",
    ]
    for i, (name, value) in enumerate((extra_env or {}).items()):
        args += ["--set", f"extraEnv[{i}].name={name}", "--set-string", f"extraEnv[{i}].value={value}"]
    cluster.helm(*args)


def operator_deployment(cluster: Cluster) -> str:
    out = cluster.kubectl(
        "-n", SYSTEM_NS, "get", "deployment", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    )
    names = out.split()
    if not names:
        raise RuntimeError(f"no operator Deployment in {SYSTEM_NS}")
    return names[0].split("/", 1)[1]


# --- load generator ------------------------------------------------------------------------------------


def start_loadgen(
    cluster: Cluster,
    namespace: str,
    refs: Mapping[str, str],
    md_name: str,
    model_name: str,
    rows: Sequence[Sequence[float]],
    rate: float = 20,
    workers: int = 4,
    name: str = "loadgen",
    labels: Sequence[int] | None = None,
    label_delay: float = 2.0,
    label_share: float = 1.0,
    target: str | None = None,
) -> str:
    """A load generator pod calling the ModelDeployment's gateway Service (or `target`, e.g. a Gateway API
    implementation's Service); returns the pod name. With `labels` (each row's true class) it also sends
    them back as feedback, `label_delay` seconds after the answer, for a `label_share` of the answers."""
    if target is None:
        cluster.rollout_wait(namespace, md_name)  # the gateway Deployment is named after the ModelDeployment
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rows.json").write_text(json.dumps([list(r) for r in rows]))
        files = [f"--from-file=rows.json={Path(tmp) / 'rows.json'}"]
        if labels is not None:
            (Path(tmp) / "labels.json").write_text(json.dumps(list(labels)))
            files.append(f"--from-file=labels.json={Path(tmp) / 'labels.json'}")
        cm = cluster.kubectl(
            "create",
            "configmap",
            name,
            "-n",
            namespace,
            f"--from-file=loadgen.py={Path(__file__).resolve().parent / 'loadgen.py'}",
            *files,
            "--dry-run=client",
            "-o",
            "json",
        )
    cluster.apply(cm)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "mlrollout-loadgen"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            # Pod Security "restricted", so the load also runs in namespaces that enforce it
            "securityContext": {"runAsUser": 65532, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "loadgen",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "image": refs["SERVING"],
                    "command": ["python3", "/config/loadgen.py"],
                    "env": [
                        {"name": "TARGET", "value": target or f"http://{md_name}.{namespace}.svc:8080"},
                        {"name": "MODEL", "value": model_name},
                        {"name": "RATE", "value": str(rate)},
                        {"name": "WORKERS", "value": str(workers)},
                        {"name": "ROWS", "value": "/config/rows.json"},
                        *(
                            [
                                {"name": "LABELS", "value": "/config/labels.json"},
                                {"name": "LABEL_DELAY", "value": str(label_delay)},
                                {"name": "LABEL_SHARE", "value": str(label_share)},
                            ]
                            if labels is not None
                            else []
                        ),
                    ],
                    "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                    "volumeMounts": [{"name": "config", "mountPath": "/config"}],
                }
            ],
            "volumes": [{"name": "config", "configMap": {"name": name}}],
        },
    }
    cluster.kubectl("delete", "pod", name, "-n", namespace, "--ignore-not-found", "--wait=true", timeout=120)
    cluster.apply(json.dumps(pod))
    cluster.kubectl("wait", "-n", namespace, f"pod/{name}", "--for=condition=Ready", "--timeout=180s", timeout=200)
    wait_until("the load generator's first report", lambda: "sent" in loadgen_stats(cluster, namespace, name), 240)
    return name


def loadgen_stats(cluster: Cluster, namespace: str, name: str = "loadgen") -> dict[str, Any]:
    """The load generator's latest cumulative counts (its last log line)."""
    out = cluster.kubectl("logs", "-n", namespace, name, "--tail=5", timeout=60)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return {}
    stats: dict[str, Any] = json.loads(lines[-1])
    if "error" in stats:
        raise RuntimeError(f"load generator {namespace}/{name}: {stats['error']}")
    return stats


def stop_loadgen(cluster: Cluster, namespace: str, name: str = "loadgen", timeout: float = 90) -> dict[str, Any]:
    """Stops the load generator and returns its FINAL counts, then the pod is gone.

    The pod is deleted while its log is followed: on SIGTERM the generator lets the requests in flight
    finish (each has a 10 s timeout) and prints a last line marked "done", so a request that fails
    after the scenario's last poll is still counted. Without that line (the stream broke) the last
    line seen is returned, marked "final": False.
    """
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    follow = subprocess.Popen(
        [_tool("kubectl"), "logs", "-f", "-n", namespace, name, "--tail=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert follow.stdout is not None
        for line in follow.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    last: dict[str, Any] = {}

    def take(line: str) -> None:
        nonlocal last
        if line.startswith("{"):
            last = json.loads(line)
            if "error" in last:
                raise RuntimeError(f"load generator {namespace}/{name}: {last['error']}")

    try:
        first = lines.get(timeout=60)  # the stream is attached once the current last line arrived
        if first is not None:
            take(first)
        cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
        deadline = time.monotonic() + timeout
        while not last.get("done"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            take(line)
    except queue.Empty:
        cluster.kubectl("delete", "pod", name, "-n", namespace, "--ignore-not-found", "--wait=false", check=False)
    finally:
        follow.kill()
        follow.wait(timeout=30)
        reader.join(timeout=30)  # the pipe is at EOF once kubectl is gone
        assert follow.stdout is not None
        follow.stdout.close()
    if not last:
        raise RuntimeError(f"no counts from the load generator {namespace}/{name}")
    return {**last, "final": bool(last.get("done"))}
