"""Helpers for the operator's cluster tests: the operator as a real `kopf run` subprocess under the chart's
ServiceAccount, pod readiness faked through the status subresource, recorded verdicts, polling.

This tier has a real kube-apiserver, etcd and kube-controller-manager (Deployments really create
ReplicaSets and pods, the garbage collector really deletes owned objects) but no kubelet: nothing runs in
the pods. The ONLY thing faked is pod status: `PodFaker` marks the operator's pods Running and Ready (or
crash-looping, or exited with the model server's sha256-refusal code) by patching `pods/status`, and the
ReplicaSet and Deployment controllers compute readiness from that as they would from a kubelet's report.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from tests.cluster.kube import REPO, ControlPlane, Kubectl
from tests.support import waiting
from tests.support.procs import free_port

VENV_BIN = REPO / ".venv" / "bin"
CHART = REPO / "charts" / "mlrollout"
KUBE_VERSION = "v1.34.4"  # the pinned control plane (e2e/cluster)
wait_for = functools.partial(waiting.wait_for, interval=0.3)  # checks here run kubectl: poll gently


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the chart's ServiceAccount ----------------------------------------------------------------------------


@dataclass
class ChartIdentity:
    """The chart's RBAC and ServiceAccount applied in a namespace, and a kubeconfig that acts as it."""

    kubeconfig: Path
    release: str
    cluster_objects: list[tuple[str, str]]
    peering: str  # the KopfPeering the chart created in the namespace


@contextlib.contextmanager
def chart_identity(
    cp: ControlPlane, kubectl: Kubectl, namespace: str, workdir: Path, sets: tuple[str, ...] = ()
) -> Iterator[ChartIdentity]:
    """`helm template` the chart's RBAC, ServiceAccount and peering object for an operator watching `namespace`
    (`watchNamespaces={namespace}`, as the operator then runs with `--namespace`), apply them after kopf's
    peering CRDs from the chart's crds/, and mint a token for the ServiceAccount: the operator then runs
    with exactly the chart's rights and joins the chart's KopfPeering."""
    release = f"op{secrets.token_hex(3)}"
    helm_home = str(workdir / "helm")
    kubectl("apply", "-f", str(CHART / "crds" / "kopf.dev_peerings.yaml"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/kopfpeerings.kopf.dev")
    proc = subprocess.run(
        [cp.binary("helm"), "template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
         "--set", f"watchNamespaces={{{namespace}}}", "--show-only", "templates/rbac.yaml",
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/peering.yaml",
         *(arg for value in sets for arg in ("--set", value))],
        capture_output=True, text=True, check=False,
        env={**cp.env, "HELM_CACHE_HOME": helm_home, "HELM_CONFIG_HOME": helm_home, "HELM_DATA_HOME": helm_home},
    )  # fmt: skip
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    rendered = proc.stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    cluster_objects = [(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"].startswith("Cluster")]
    sa = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    peering = next(d["metadata"]["name"] for d in docs if d["kind"] == "KopfPeering")
    kubeconfig = token_kubeconfig(cp, kubectl, namespace, sa, workdir / "operator.kubeconfig")
    try:
        yield ChartIdentity(kubeconfig, release, cluster_objects, peering)
    finally:
        for kind, name in cluster_objects:
            kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


def token_kubeconfig(cp: ControlPlane, kubectl: Kubectl, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that acts as ServiceAccount `sa` of `namespace` (a fresh token, the cluster's real CA)."""
    token = kubectl("create", "token", sa, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(cp.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "test", "user": sa, "namespace": namespace}}],
        "current-context": sa,
    }
    path.write_text(yaml.safe_dump(config))
    return path


# -- the operator process ----------------------------------------------------------------------------------


@dataclass
class OperatorProcess:
    """`kopf run -m mlrollout.controller.handlers` for one namespace, as the chart runs it (with peering).

    Each start is a new peer (`POD_ID` changes, as a new pod's name would); `peering_lifetime` is short so
    that a restart after SIGKILL waits seconds, not kopf's default minute, for the dead peer to expire."""

    kubeconfig: Path
    namespace: str
    verdicts_dir: Path
    log_path: Path
    peering: str = "mlrollout"
    peering_lifetime: int = 10
    reconcile_interval: float = 1.0
    proc: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    metrics_port: int = 0
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. a real Prometheus instead of recorded verdicts

    def start(self, timeout: float = 90.0) -> None:
        self.health_port, self.metrics_port = free_port(), free_port()
        self.starts += 1
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "MLROLLOUT_VERDICTS_DIR": str(self.verdicts_dir),
            "MLROLLOUT_RECONCILE_INTERVAL": str(self.reconcile_interval),
            "MLROLLOUT_METRICS_PORT": str(self.metrics_port),
            "MLROLLOUT_SERVING_IMAGE": "mlrollout/serving:test",
            "MLROLLOUT_GATEWAY_IMAGE": "mlrollout/serving:test",
            "MLROLLOUT_LOG_FORMAT": "json",
            "MLROLLOUT_PEERING_LIFETIME": str(self.peering_lifetime),
            "POD_ID": self.identity,
        }
        env.pop("MLROLLOUT_PROMETHEUS_URL", None)
        env.update(self.extra_env)
        if "MLROLLOUT_PROMETHEUS_URL" in self.extra_env:
            env.pop("MLROLLOUT_VERDICTS_DIR")
        log = self.log_path.open("ab")
        log.write(f"\n==== start {self.starts} ====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "kopf"), "run", f"--peering={self.peering}", f"--namespace={self.namespace}",
             f"--liveness=http://127.0.0.1:{self.health_port}/healthz", "-m", "mlrollout.controller.handlers"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_for(
            self._healthy, timeout, f"operator liveness on port {self.health_port}\n{self.log_tail()}", interval=0.5
        )

    @property
    def identity(self) -> str:
        """This start's name in the peering object."""
        return f"operator-{self.starts}"

    def _healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc and self.proc.returncode}\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def rival_operator(kubeconfig: Path, namespace: str, peering: str, priority: int, workdir: Path) -> Iterator[Path]:
    """Another kopf operator joining the same peering (a developer's `kopf run --priority`); it handles
    nothing, it only keeps its peer entry alive. Yields its log; SIGTERM on exit (kopf then leaves the
    peering at once)."""
    module = workdir / "rival_operator.py"
    module.write_text(
        '"""No resource handlers: only the peering keep-alive (short-lived if it is ever killed)."""\n'
        "import kopf\n\n\n@kopf.on.startup()\ndef lifetime(settings, **_):\n    settings.peering.lifetime = 10\n"
    )
    log_path = workdir / "rival.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_ID": "rival"}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "kopf"), "run", f"--peering={peering}", f"--priority={priority}",
             f"--namespace={namespace}", str(module)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir), start_new_session=True,
        )  # fmt: skip
    try:
        yield log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def peers(kubectl: Kubectl, namespace: str, peering: str) -> dict[str, Any]:
    """The live entries of a KopfPeering: {identity: {priority, lifetime, lastseen}}."""
    body = kubectl.json("get", "kopfpeering", peering, "-n", namespace)
    return dict(body.get("status") or {})


# -- pod status: the only thing this tier fakes ------------------------------------------------------------


@dataclass
class PodFaker:
    """Marks the operator's pods Ready through `pods/status` (what a kubelet would report), in a thread.

    `break_revision(rev, how)` makes that revision's pods report a crash loop (`crash`) or the model
    server's sha256 refusal (`digest`: exit code 3 with its log line as termination message) instead;
    pods of a component in `withheld` (e.g. "gateway") are left as created: not ready.
    """

    kubeconfig: Path
    namespace: str
    broken: dict[str, str] = field(default_factory=dict)
    withheld: set[str] = field(default_factory=set)  # app.kubernetes.io/component values left unready
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)

    def __enter__(self) -> PodFaker:
        api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        self._core = client.CoreV1Api(api_client)
        self._thread = threading.Thread(target=self._run, name="pod-faker", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def break_revision(self, revision: str, how: str) -> None:
        self.broken[revision] = how

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # keep faking; the test's own waits report what is missing
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self._stop.wait(0.3)

    def _tick(self) -> None:
        pods = self._core.list_namespaced_pod(self.namespace, label_selector="app.kubernetes.io/managed-by=mlrollout")
        for pod in pods.items:
            assert pod.metadata is not None and pod.metadata.name is not None
            labels = pod.metadata.labels or {}
            if labels.get("app.kubernetes.io/component") in self.withheld:
                continue  # as a kubelet that has not started these containers yet
            rev = labels.get("mlrollout.io/revision", "")
            how = self.broken.get(rev)
            body = self._status(pod, how)
            if body is not None:
                self._core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, body)

    def _status(self, pod: Any, how: str | None) -> dict[str, Any] | None:
        containers = [c.name for c in pod.spec.containers]
        images = {c.name: c.image for c in pod.spec.containers}
        current = pod.status
        ready = any(c.type == "Ready" and c.status == "True" for c in current.conditions or [])
        statuses = {s.name: s for s in current.container_statuses or []}
        now = now_rfc3339()
        if how is None:
            if ready:
                return None
            cstatus = [
                {"name": n, "image": images[n], "imageID": f"fake://{images[n]}", "ready": True, "started": True,
                 "restartCount": 0, "state": {"running": {"startedAt": now}}}
                for n in containers
            ]  # fmt: skip
            conditions = [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ]
            return {"status": {"phase": "Running", "conditions": conditions, "containerStatuses": cstatus,
                               "startTime": now}}  # fmt: skip
        already = all(s.restart_count and s.restart_count >= 3 for s in statuses.values()) and len(statuses) == len(
            containers
        )
        if already and not ready:
            return None
        message = (
            "model integrity check failed for file:///models/x.onnx: expected sha256 aaaa, actual sha256 bbbb"
            if how == "digest"
            else "boom"
        )
        cstatus = [
            {"name": n, "image": images[n], "imageID": f"fake://{images[n]}", "ready": False, "started": False,
             "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
             "lastState": {"terminated": {"exitCode": 3 if how == "digest" else 1, "reason": "Error",
                                          "message": message, "startedAt": now, "finishedAt": now}}}
            for n in containers
        ]  # fmt: skip
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "lastTransitionTime": now, "reason": "ContainersNotReady"},
            {"type": "ContainersReady", "status": "False", "lastTransitionTime": now, "reason": "ContainersNotReady"},
        ]
        return {"status": {"phase": "Running", "conditions": conditions, "containerStatuses": cstatus}}


# -- recorded verdicts -------------------------------------------------------------------------------------


def write_verdict(directory: Path, namespace: str, name: str, verdict: str, candidate_requests: int,
                  reason: str = "recorded", evidence: dict[str, float] | None = None) -> None:  # fmt: skip
    """What the next analysis look of this ModelDeployment will say (written atomically)."""
    body: dict[str, Any] = {
        "verdict": verdict,
        "reason": reason,
        "samples": {"stable": candidate_requests * 4, "candidate": candidate_requests},
        "metrics": [
            {"name": "errorRate", "decision": "fail" if verdict == "rollback" else "pass", "test": "recorded",
             "samples": {"stable": candidate_requests * 4, "candidate": candidate_requests}, "reason": reason}
        ],
        "evidence": evidence or {},
    }  # fmt: skip
    write_recorded(directory, namespace, name, body)


def write_recorded(directory: Path, namespace: str, name: str, body: dict[str, Any]) -> None:
    """A recorded judge result or ``{"snapshot": ...}`` for the operator's next look (written atomically)."""
    path = directory / f"{namespace}.{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)
