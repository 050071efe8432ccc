"""The operator at N ModelDeployments on the pinned control plane (issue 19, part 3).

    .venv/bin/python bench/operator_scale.py --sizes 10,100,300 [--samples 20] [--keep-cluster]

Starts (or reuses) a control plane of its own with ``e2e/cluster/up`` in ``MLROLLOUT_STATE`` (default
``/tmp/mlrollout-scalebench``, other ports than the shared one), runs one real operator (``kopf run``, the
chart's RBAC, the operator's default timers: 10 s, 60 s for an idle ModelDeployment, applies resent every
300 s) in a fresh namespace per N, and measures:

* **operator CPU seconds and peak RSS** (``/proc``: utime+stime, VmHWM of the kopf process), over the whole
  run and as cores while idle (every ModelDeployment Healthy, nothing changing);
* **reconcile latency**: from a spec change (``spec.traffic.sticky``, which changes the route table at
  once) to the route ConfigMap's write, seen by a watch;
* **rollback**, on canaries held at 50 %: the bench writes a ``rollback`` judgement (a recorded file,
  ``MLROLLOUT_VERDICTS_DIR``, as in the cluster tier) and pokes the ModelDeployment (an annotation, which
  reconciles it at once, as any metadata change does). Three times per sample, all on the host's wall
  clock (the operator runs on the same host):

  - **verdict→route** (the issue's goal, <= 1 s): from the look that judged ``rollback``, as the operator
    records it (``status.lastAnalysis.time``: the start of the pass that took the look, so the pass's reads
    before the look are in it), to the route write that leaves stable alone, seen by a watch;
  - **injection→route**: from the judgement's file being written to that route write. It includes the
    **look wait**, the next two's difference: a pass takes a look only once ``analysis.interval`` (1 s here)
    has passed since the last one (``analysis_due``), so a poke within 1 s of a timer's look takes none
    and the judgement waits for the next due look, at the next timer tick (10 s) at worst: bounded by the
    analysis interval rounded up to a tick. Without the poke (as in production, where nothing pokes) every
    judgement waits for the next due look;
  - **look wait**: from the file's write to the look that read it.
* **API requests per second the operator sends**: a FlowSchema of its own matches only the operator's
  ServiceAccount, and the API server's ``apiserver_flowcontrol_dispatched_requests_total`` for it counts
  every request (a watch counts once, when it starts);
* **Prometheus queries per look**: ``collect_snapshot`` run against a counting provider for the targets the
  operator builds (a shadow step, a canary step): the round-trips one ModelDeployment costs per analysis
  interval alone.
* ``--analysis``: **Prometheus requests per analysis interval with N rollouts in analysis**, from the
  operator itself against a real Prometheus (the Debian binary, started as the component tests do): N
  ModelDeployments in a canary step (``analysis.interval`` 30 s, the default), the operator's looks taken
  alone (``MLROLLOUT_ANALYSIS_BATCH_WINDOW=0``, the default) and then batched (a 10 s window), each over
  ``--analysis-intervals`` intervals after one of warm-up, counted by Prometheus itself
  (``prometheus_http_requests_total`` of ``/api/v1/query``). The hollow pods export no series, so every
  look finds no data (inconclusive) and asks what a look with data asks. JSON:
  ``bench/results/operator-scale-analysis.json``.

Nodes: ``--nodes hollow`` (the default) starts kubemark hollow kubelets (``e2e/cluster/build-kubemark``, the
same pinned Kubernetes release): the scheduler places the pods, the hollow kubelets "run" them without
containers and report them Running and Ready, so Deployments, Services and the operator see what a real
node would report. ``--nodes none`` has no nodes: pod readiness is reported through ``pods/status`` by the
cluster tier's ``PodFaker``. Both act with the admin identity, so their requests are not counted as the
operator's. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from tests.cluster.kube import CLUSTER_DIR, CRD_DIR, RESTRICTED, ControlPlane, Kubectl  # noqa: E402
from tests.cluster.operator_support import (  # noqa: E402
    OperatorProcess,
    PodFaker,
    chart_identity,
    write_verdict,
)

from mlrollout.analysis.collect import AnalysisTarget, collect_snapshot  # noqa: E402
from mlrollout.analysis.provider import Measurement  # noqa: E402
from mlrollout.analysis.snapshot import Split  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "operator-scale.json"
GROUP, VERSION, PLURAL = "mlrollout.io", "v1alpha1", "modeldeployments"
SHA = {"1": "a" * 64, "2": "b" * 64}
FLOW_SCHEMA = "mlrollout-operator-bench"
ROUTES = "app.kubernetes.io/component=routes"  # the route ConfigMaps' label
PODS_PER_NODE = 250  # per hollow node (a real kubelet's default is 110; hollow pods cost little)
# the issue's goals, printed beside the numbers
GOALS = {"cores": 1.0, "rss_mib": 500.0, "reconcile_p99_s": 2.0, "verdict_route_s": 1.0}
DEFINITIONS = {
    "reconcile_s": "spec.traffic.sticky patched -> the route ConfigMap's write with it, seen by a watch",
    "verdict_route_s": "status.lastAnalysis.time of the look that judged rollback (its pass's start) -> the route "
    "write leaving stable alone, seen by a watch (the issue's 'rollback verdict->route')",
    "injection_route_s": "the rollback judgement's file written (then a poke) -> the same route write: "
    "look_wait_s + verdict_route_s",
    "look_wait_s": "the judgement's file written -> the look that read it (a poke within analysis.interval of "
    "the last look takes none: the next due look, at worst the next 10 s timer tick)",
    "earlier_runs": "rows without verdict_route_s timed rollback_s from the poke (after the file) to the route "
    "write, the look wait included",
}
CANARY_STEPS = [{"canary": {"weight": 10, "minRequests": 100, "maxDuration": "30m"}},
                {"canary": {"weight": 50, "minRequests": 100000, "maxDuration": "30m"}}]  # fmt: skip


def md_manifest(name: str, version: str, policy: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": name, "version": version, "uri": f"file:///models/{name}-{version}.onnx",
                      "sha256": SHA[version]},
            "rolloutPolicyRef": {"name": policy},
        },
    }  # fmt: skip


# -- measuring ---------------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def operator_requests(kubectl: Kubectl) -> float:
    """Requests the API server dispatched for the operator's FlowSchema so far."""
    total = 0.0
    for line in kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if (
            line.startswith("apiserver_flowcontrol_dispatched_requests_total{")
            and f'flow_schema="{FLOW_SCHEMA}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 20 samples, p99 is the largest: said so in the docs)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


class CountingProvider:
    """A Prometheus that answers nothing and counts the round-trips asked of it."""

    def __init__(self) -> None:
        self.queries = 0

    def query(self, promql: str, at: float | None = None) -> Measurement:
        self.queries += 1
        return Measurement()


def prometheus_queries_per_look() -> dict[str, int]:
    """Round-trips one ModelDeployment's look costs, per kind of step (the same code the operator runs)."""
    out: dict[str, int] = {}
    targets = {
        "shadow (model series, no quality)": (AnalysisTarget("ns", "md", "r1", "r2", source="model"), False),
        "shadow with quality labels": (AnalysisTarget("ns", "md", "r1", "r2", source="model"), True),
        "canary with split check": (AnalysisTarget("ns", "md", "r1", "r2", split=Split(0.9, 0.1)), False),
    }
    for what, (target, quality) in targets.items():
        provider = CountingProvider()
        collect_snapshot(provider, target, 600.0, quality=quality)
        out[what] = provider.queries
    return out


class RouteWatch:
    """Every write of the route ConfigMaps of one namespace, with the time this process saw it.

    A watch ends every 60 s and resumes from the last resourceVersion it saw, so it does not list the N
    ConfigMaps again (at N = 1,000 a re-list and parse of every table held the thread for seconds: a write
    then was seen late, a latency of the bench's own); tables are parsed only when waited for."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self.namespace = namespace
        # name -> (monotonic and wall-clock time seen, routes.yaml as written)
        self.seen: dict[str, list[tuple[float, float, str]]] = {}
        self.relists = 0  # watches started without a resourceVersion (the first, and after an error)
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-watch", daemon=True)

    def __enter__(self) -> RouteWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            w = watch.Watch()
            if version is None:
                self.relists += 1
            resume = {"resource_version": version} if version else {}
            try:
                stream = w.stream(self.api.list_namespaced_config_map, self.namespace, label_selector=ROUTES,
                                  timeout_seconds=60, **resume)  # fmt: skip
                for event in stream:
                    now, wall = time.monotonic(), time.time()
                    cm = event["object"]
                    version = cm.metadata.resource_version
                    with self.cond:
                        self.seen.setdefault(cm.metadata.name, []).append(
                            (now, wall, (cm.data or {}).get("routes.yaml", "{}"))
                        )
                        self.cond.notify_all()
                    if self._stop.is_set():
                        return
            except Exception:  # an expired resourceVersion (410) or a broken stream: list again
                version = None
                time.sleep(0.5)

    def wait(self, name: str, after: float, check: Any, timeout: float) -> float:
        """Seconds from `after` (monotonic) to the first write of `name` seen after it whose table passes
        `check`."""
        return self.first_write(name, after, check, timeout)[0] - after

    def first_write(self, name: str, after: float, check: Any, timeout: float) -> tuple[float, float]:
        """When (monotonic, wall clock) this process saw the first write of `name` after `after` (monotonic)
        whose table passes `check`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, wall, raw in self.seen.get(name, []):
                    if t >= after and check(yaml.safe_load(raw) or {}):
                        return t, wall
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no route write of {name} within {timeout}s")
                self.cond.wait(left)


def sticky_is(header: str) -> Callable[[dict[str, Any]], bool]:
    """The route table pins clients by `header` (the spec change reached the table)."""
    return lambda table: (table.get("sticky") or {}).get("header") == header


def stable_only(table: dict[str, Any]) -> bool:
    """The route table after a rollback: stable alone, no mirror."""
    return set(table.get("tracks", {})) == {"stable"} and "mirror" not in table


@dataclass(frozen=True)
class RollbackTiming:
    """One rollback sample's three times (seconds; the module's docstring defines them)."""

    verdict_to_route: float  # the operator's rollback look -> the route write seen
    injection_to_route: float  # the judgement's file written -> the route write seen
    look_wait: float  # the judgement's file written -> the look that read it


def rollback_timing(injected: float, look_time: str, route_seen: float) -> RollbackTiming:
    """The times of one rollback from wall-clock seconds (`injected`: just before the judgement's file was
    written; `route_seen`: the route write seen) and the look's time as status records it
    (``status.lastAnalysis.time``, RFC 3339 UTC). Only this judgement reads ``rollback`` (the looks before it
    read ``promote``), so the recorded look is its look even when its pass started (the time recorded) just
    before the file was written: then the look wait is slightly negative, and shown so."""
    look = datetime.fromisoformat(look_time.replace("Z", "+00:00")).timestamp()
    return RollbackTiming(route_seen - look, route_seen - injected, look - injected)


def rollback_look_time(custom: client.CustomObjectsApi, namespace: str, name: str, timeout: float) -> str:
    """``status.lastAnalysis.time`` once status records the rollback (the pass writes the route first, its
    status after): the time of the look that judged it."""
    deadline = time.monotonic() + timeout
    while True:
        st = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
        last = st.get("lastAnalysis") or {}
        if last.get("verdict") == "rollback" and not st.get("candidate"):
            return str(last["time"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: no rollback in status.lastAnalysis after {timeout}s: {last}")
        time.sleep(0.2)


# -- one size ----------------------------------------------------------------------------------------------


@dataclass
class SizeResult:
    n: int
    time_to_all_healthy_s: float
    operator_cpu_s_total: float
    idle_cores: float
    active_cores: float
    peak_rss_mib: float
    api_rps_idle: float
    api_rps_active: float
    reconcile_p50_s: float
    reconcile_p99_s: float
    reconcile_samples: int
    verdict_route_p50_s: float  # the operator's rollback look -> route write (the issue's goal)
    verdict_route_max_s: float
    injection_route_p50_s: float  # the judgement written -> route write (the look wait included)
    injection_route_max_s: float
    rollback_samples: int
    idle_window_s: float | None = None
    notes: list[str] = field(default_factory=list)
    reconcile_s: list[float] = field(default_factory=list)  # every sample, in the order taken
    verdict_route_s: list[float] = field(default_factory=list)
    injection_route_s: list[float] = field(default_factory=list)
    look_wait_s: list[float] = field(default_factory=list)
    date: str | None = None
    commit: str | None = None  # the operator's code measured (git HEAD of this tree)
    load: list[float] | None = None  # load average at the end of the size


def wait_healthy(custom: client.CustomObjectsApi, namespace: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        healthy = sum(1 for md in items if (md.get("status") or {}).get("phase") == "Healthy")
        if healthy >= n:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{healthy}/{n} ModelDeployments Healthy after {timeout}s")
        time.sleep(2.0)


def wait_step(custom: client.CustomObjectsApi, namespace: str, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        at_step = 0
        for name in names:
            st = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
            at_step += int((st.get("currentStep") or {}).get("index") == 1 and bool(st.get("candidate")))
        if at_step == len(names):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{at_step}/{len(names)} rollouts at the 50% canary after {timeout}s")
        time.sleep(1.0)


def wait_canary(custom: client.CustomObjectsApi, namespace: str, n: int, timeout: float) -> None:
    """Every ModelDeployment in its first canary step with a candidate (where the analysis looks)."""
    deadline = time.monotonic() + timeout
    while True:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        ready = sum(
            1 for md in items
            if ((md.get("status") or {}).get("currentStep") or {}).get("index") == 0
            and (md.get("status") or {}).get("candidate")
        )  # fmt: skip
        if ready >= n:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ready}/{n} ModelDeployments in the canary step after {timeout}s")
        time.sleep(2.0)


def served_queries(url: str) -> float:
    """Instant queries a Prometheus has answered (its own counter, read from its /metrics)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


@dataclass
class AnalysisResult:
    n: int
    mode: str  # alone | batched
    analysis_interval_s: float
    queries_per_interval: float
    looks_per_interval: float
    operator_cores: float
    prometheus_cores: float
    batcher: str = ""  # which look batcher (earlier rows: its commit)
    load: list[float] | None = None  # load average at the end of the row's measurement
    date: str | None = None
    batcher_log: str | None = None  # batched: the batcher's last count of looks read from batches and alone


def run_analysis(
    cp: ControlPlane, kubectl: Kubectl, n: int, intervals: int, workdir: Path, nodes: str
) -> list[AnalysisResult]:
    """N rollouts in analysis against a real Prometheus: requests per interval, looks alone then batched."""
    from tests.support.prometheus import run_prometheus

    interval = 30.0
    namespace = f"analysis-{n}-{int(time.time()) % 100000}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    policy = "scale-analysis"
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutPolicy", "metadata": {"name": policy},
        "spec": {"strategy": {"steps": CANARY_STEPS}, "analysis": {"interval": f"{interval:g}s"},
                 "progressDeadline": "30m"},
    }))  # fmt: skip
    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(cp.kubeconfig)))
    names = [f"md-{i:04d}" for i in range(n)]
    out: list[AnalysisResult] = []
    readiness: contextlib.AbstractContextManager[Any] = (
        hollow_nodes(cp, kubectl, -(-(3 * n) // PODS_PER_NODE), workdir)
        if nodes == "hollow"
        else PodFaker(cp.kubeconfig, namespace)
    )
    with chart_identity(cp, kubectl, namespace, workdir) as identity, run_prometheus() as prometheus, readiness:
        operator = OperatorProcess(identity.kubeconfig, namespace, workdir / "unused", workdir / f"analysis-{n}.log",
                                   peering=identity.peering, reconcile_interval=10.0)  # fmt: skip
        try:
            for mode in ("alone", "batched"):
                operator.extra_env = {
                    "MLROLLOUT_PROMETHEUS_URL": prometheus.url,
                    "MLROLLOUT_ANALYSIS_BATCH_WINDOW": "0" if mode == "alone" else "10",
                }
                operator.start()
                assert operator.proc is not None
                if mode == "alone":
                    for name in names:
                        custom.create_namespaced_custom_object(
                            GROUP, VERSION, namespace, PLURAL, md_manifest(name, "1", policy)
                        )
                    wait_healthy(custom, namespace, n, timeout=120 + 3.0 * n)
                    for name in names:
                        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                            {"spec": {"model": md_manifest(name, "2", policy)["spec"]["model"]}})  # fmt: skip
                    wait_canary(custom, namespace, n, timeout=120 + 3.0 * n)
                time.sleep(interval)  # warm-up: every look once (a batch knows no one before)
                pid, prom_pid = operator.proc.pid, prometheus.proc.pid
                q0, c0, p0, t0 = (
                    served_queries(prometheus.url),
                    proc_cpu_seconds(pid),
                    proc_cpu_seconds(prom_pid),
                    time.monotonic(),
                )
                looks0 = operator.log_path.read_text(errors="replace").count("analysis from ")
                time.sleep(interval * intervals)
                q1, c1, p1, t1 = (
                    served_queries(prometheus.url),
                    proc_cpu_seconds(pid),
                    proc_cpu_seconds(prom_pid),
                    time.monotonic(),
                )
                looks1 = operator.log_path.read_text(errors="replace").count("analysis from ")
                spans = (t1 - t0) / interval
                out.append(AnalysisResult(n, mode, interval, round((q1 - q0) / spans, 1),
                                          round((looks1 - looks0) / spans, 1), round((c1 - c0) / (t1 - t0), 4),
                                          round((p1 - p0) / (t1 - t0), 4), BATCHER,
                                          [round(x, 2) for x in os.getloadavg()],
                                          time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                          batcher_counts(operator.log_path)))  # fmt: skip
                print(json.dumps(asdict(out[-1])), flush=True)
                operator.stop()
        finally:
            operator.stop()
            for name in names:
                with contextlib.suppress(client.ApiException):
                    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                          {"metadata": {"finalizers": None}})  # fmt: skip
    kubectl("delete", "namespace", namespace, "--wait=false")
    return out


def batcher_counts(log_path: Path) -> str | None:
    """The batcher's last log line of how looks were served, since the operator started (None: none)."""
    lines = [x for x in log_path.read_text(errors="replace").splitlines() if "looks so far:" in x]
    if not lines:
        return None
    text = lines[-1]
    try:
        record = json.loads(text)
    except ValueError:
        return text
    return str(record.get("message", text)) if isinstance(record, dict) else text


def flow_schema(namespace: str, sa: str) -> dict[str, Any]:
    """Matches the operator's ServiceAccount only, so the API server counts its requests apart."""
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": FLOW_SCHEMA},
        "spec": {
            "matchingPrecedence": 500,
            "priorityLevelConfiguration": {"name": "workload-high"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": sa, "namespace": namespace}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"],
                                   "clusterScope": True}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    }  # fmt: skip


@contextlib.contextmanager
def hollow_nodes(cp: ControlPlane, kubectl: Kubectl, count: int, workdir: Path) -> Iterator[list[str]]:
    """`count` kubemark hollow kubelets registered with the control plane, Ready; stopped and deleted after."""
    binary = subprocess.run(
        ["bash", str(CLUSTER_DIR / "build-kubemark")], check=True, capture_output=True, text=True
    ).stdout.strip()
    names = [f"hollow-{i}" for i in range(count)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in names:
            with (workdir / f"{name}.log").open("ab") as log:
                procs.append(subprocess.Popen(
                    [binary, "--morph=kubelet", f"--name={name}", f"--kubeconfig={cp.kubeconfig}",
                     "--kubelet-port=0", "--kubelet-read-only-port=0", f"--max-pods={PODS_PER_NODE}",
                     "--use-host-image-service=false"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ))  # fmt: skip
        deadline = time.monotonic() + 120
        while kubectl("get", "node", *names, check=False).returncode != 0:  # not registered yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"hollow nodes did not register; logs in {workdir}")
            time.sleep(1.0)
        kubectl("wait", "--for=condition=Ready", "--timeout=120s", *(f"node/{name}" for name in names))
        yield names
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        kubectl("delete", "node", *names, "--ignore-not-found", check=False)


def run_size(
    cp: ControlPlane,
    kubectl: Kubectl,
    n: int,
    samples: int,
    idle_s: float,
    workdir: Path,
    nodes: str,
    workers: int | None = None,
) -> SizeResult:
    commit = head_commit()  # before the operator starts: the code it imports
    namespace = f"scale-{n}-{int(time.time()) % 100000}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    verdicts = workdir / "verdicts"
    verdicts.mkdir(exist_ok=True)
    policy = "scale-canary"
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutPolicy", "metadata": {"name": policy},
        "spec": {"strategy": {"steps": CANARY_STEPS}, "analysis": {"interval": "1s"}, "progressDeadline": "30m"},
    }))  # fmt: skip
    api = config.new_client_from_config(config_file=str(cp.kubeconfig))
    custom = client.CustomObjectsApi(api)

    def patch(name: str, body: dict[str, Any]) -> None:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)

    notes: list[str] = []
    with chart_identity(cp, kubectl, namespace, workdir) as identity:
        sa = yaml.safe_load(identity.kubeconfig.read_text())["users"][0]["name"]
        kubectl("apply", "-f", "-", input=yaml.safe_dump(flow_schema(namespace, sa)))
        operator = OperatorProcess(identity.kubeconfig, namespace, verdicts, workdir / f"operator-{n}.log",
                                   peering=identity.peering, reconcile_interval=10.0)  # fmt: skip
        if workers is not None:  # kopf's thread pool for the sync handlers (the operator's default: 8)
            operator.extra_env["MLROLLOUT_WORKERS"] = str(workers)
        # pods: a stable and a gateway per ModelDeployment, and the candidates of the rollback sample
        readiness: contextlib.AbstractContextManager[Any] = (
            hollow_nodes(cp, kubectl, -(-(2 * n + 2 * samples) // PODS_PER_NODE), workdir)
            if nodes == "hollow"
            else PodFaker(cp.kubeconfig, namespace)
        )
        with readiness, RouteWatch(cp.kubeconfig, namespace) as routes:
            names = [f"md-{i:04d}" for i in range(n)]
            operator.start()
            try:
                assert operator.proc is not None
                pid = operator.proc.pid
                cpu0, req0, t0 = proc_cpu_seconds(pid), operator_requests(kubectl), time.monotonic()
                for name in names:
                    custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, md_manifest(name, "1", policy)
                    )
                wait_healthy(custom, namespace, n, timeout=120 + 3.0 * n)
                to_healthy = time.monotonic() - t0
                # idle: nothing changes; the timers still pass every 60 s per idle ModelDeployment
                time.sleep(5.0)
                cpu1, req1, t1 = proc_cpu_seconds(pid), operator_requests(kubectl), time.monotonic()
                time.sleep(idle_s)
                cpu2, req2, t2 = proc_cpu_seconds(pid), operator_requests(kubectl), time.monotonic()
                # reconcile latency: spec change -> route write, one at a time, spread over the ModelDeployments
                chosen = names[:: max(1, n // samples)][:samples]
                reconcile: list[float] = []
                for i, name in enumerate(chosen):
                    header = f"x-user-{i}"
                    start = time.monotonic()
                    patch(name, {"spec": {"traffic": {"sticky": {"header": header}}}})
                    reconcile.append(routes.wait(f"{name}-routes", start, sticky_is(header), 60.0))
                # rollback: canaries at 50 % (one promote look passes the 10 % step; the 50 % step's minRequests
                # keep them there), then a rollback judgement and an immediate look
                rolled = chosen[: max(1, min(len(chosen), 10))]
                for name in rolled:
                    write_verdict(verdicts, namespace, name, "promote", 150)
                    patch(name, {"spec": {"model": md_manifest(name, "2", policy)["spec"]["model"]}})
                wait_step(custom, namespace, rolled, timeout=300)
                rollback: list[RollbackTiming] = []
                for i, name in enumerate(rolled):
                    start, injected = time.monotonic(), time.time()
                    write_verdict(verdicts, namespace, name, "rollback", 160, reason="bench: harm proven")
                    patch(name, {"metadata": {"annotations": {"bench.mlrollout.io/poke": str(i)}}})
                    _, seen = routes.first_write(f"{name}-routes", start, stable_only, 60.0)
                    look = rollback_look_time(custom, namespace, name, 30.0)
                    rollback.append(rollback_timing(injected, look, seen))
                cpu3, req3, t3 = proc_cpu_seconds(pid), operator_requests(kubectl), time.monotonic()
                rss = proc_status_kib(pid, "VmHWM") / 1024
                relists = routes.relists
            finally:
                operator.stop()
                # kopf's finalizers would hold the namespace's deletion now that the operator is gone
                for name in names:
                    with contextlib.suppress(client.ApiException):
                        patch(name, {"metadata": {"finalizers": None}})
        kubectl("delete", "flowschema", FLOW_SCHEMA, "--ignore-not-found")
        refused = [ln for ln in operator.log_path.read_text(errors="replace").splitlines() if "forbidden" in ln.lower()]
        if refused:
            notes.append(f"operator was refused {len(refused)} requests: {refused[0][:200]}")
    kubectl("delete", "namespace", namespace, "--wait=false")
    verdict_route = [round(r.verdict_to_route, 3) for r in rollback]
    injection_route = [round(r.injection_to_route, 3) for r in rollback]
    return SizeResult(
        n=n,
        time_to_all_healthy_s=round(to_healthy, 2),
        operator_cpu_s_total=round(cpu3 - cpu0, 2),
        idle_cores=round((cpu2 - cpu1) / (t2 - t1), 4),
        active_cores=round((cpu1 - cpu0) / (t1 - t0), 4),
        peak_rss_mib=round(rss, 1),
        api_rps_idle=round((req2 - req1) / (t2 - t1), 2),
        api_rps_active=round((req1 - req0) / (t1 - t0), 2),
        reconcile_p50_s=round(statistics.median(reconcile), 3),
        reconcile_p99_s=round(percentile(reconcile, 0.99), 3),
        reconcile_samples=len(reconcile),
        verdict_route_p50_s=round(statistics.median(verdict_route), 3),
        verdict_route_max_s=round(max(verdict_route), 3),
        injection_route_p50_s=round(statistics.median(injection_route), 3),
        injection_route_max_s=round(max(injection_route), 3),
        rollback_samples=len(rollback),
        idle_window_s=idle_s,
        notes=[
            *notes,
            f"requests over the run: {req3 - req0:.0f} in {t3 - t0:.0f} s",
            f"route watch: {relists} list(s) of the route ConfigMaps (1: resumed by resourceVersion throughout)",
        ],
        reconcile_s=[round(x, 3) for x in reconcile],
        verdict_route_s=verdict_route,
        injection_route_s=injection_route,
        look_wait_s=[round(r.look_wait, 3) for r in rollback],
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        commit=commit,
        load=[round(x, 2) for x in os.getloadavg()],
    )


def head_commit() -> str | None:
    """The commit the measured operator ran from (a tree with changes beyond it: marked dirty)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return None
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "operator"], check=False).returncode != 0
    return head.stdout.strip() + ("-dirty" if dirty else "")


# -- the control plane -------------------------------------------------------------------------------------


@contextlib.contextmanager
def control_plane(state: str, keep: bool) -> Iterator[ControlPlane]:
    """Our own control plane (`e2e/cluster/up` in `state`): not the shared one, so no lock is needed."""
    # the default /24 holds 254 Services: too few for two per ModelDeployment beyond ~120
    env = {**os.environ, "MLROLLOUT_STATE": state, "MLROLLOUT_SERVICE_CIDR": "10.0.0.0/20"}
    subprocess.run(["bash", str(CLUSTER_DIR / "up")], env=env, check=True, stdout=subprocess.DEVNULL)
    exports = subprocess.run(["bash", str(CLUSTER_DIR / "env")], env=env, check=True, capture_output=True, text=True)
    paths = dict(line.removeprefix("export ").split("=", 1) for line in exports.stdout.splitlines())
    paths = {k: v.strip("'\"") for k, v in paths.items()}
    cp = ControlPlane(Path(paths["KUBECONFIG"]), Path(paths["MLROLLOUT_CLUSTER_BIN"]), Path(state),
                      {**env, "KUBECONFIG": paths["KUBECONFIG"]})  # fmt: skip
    try:
        yield cp
    finally:
        if not keep:
            subprocess.run(["bash", str(CLUSTER_DIR / "down"), "--purge"], env=env, check=False, timeout=120)


NODES = {
    "hollow": "kubemark hollow kubelets (pinned release): pods scheduled and reported Ready without containers",
    "none": "no nodes: pod readiness reported through pods/status (PodFaker)",
}


def print_table(rows: list[SizeResult], queries: dict[str, int]) -> None:
    head = ("N", "to Healthy s", "CPU s", "idle cores", "active cores", "peak RSS MiB", "API rps idle",
            "API rps active", "reconcile p50/p99 s", "verdict->route p50/max s",
            "injection->route p50/max s")  # fmt: skip
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(x) for x in (
            r.n, r.time_to_all_healthy_s, r.operator_cpu_s_total, r.idle_cores, r.active_cores, r.peak_rss_mib,
            r.api_rps_idle, r.api_rps_active, f"{r.reconcile_p50_s}/{r.reconcile_p99_s}",
            f"{r.verdict_route_p50_s}/{r.verdict_route_max_s}",
            f"{r.injection_route_p50_s}/{r.injection_route_max_s}")))  # fmt: skip
    print(f"goals (issue 19, at N=1000): <= {GOALS['cores']} core, <= {GOALS['rss_mib']} MB, reconcile p99 <= "
          f"{GOALS['reconcile_p99_s']} s, rollback verdict->route <= {GOALS['verdict_route_s']} s")  # fmt: skip
    for what, q in queries.items():
        print(f"Prometheus round-trips per ModelDeployment per look, {what}: {q} (N in analysis: {q}*N)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,300")
    parser.add_argument("--samples", type=int, default=20, help="spec changes timed per size")
    parser.add_argument("--idle", type=float, default=330.0,
                        help="seconds of idle measurement per size (default: more than the operator's 300 s resync "
                             "interval and 5 of its 60 s idle timer periods, so both are in the average)")  # fmt: skip
    parser.add_argument("--state", default="/tmp/mlrollout-scalebench")
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument("--nodes", choices=("hollow", "none"), default="hollow", help="kubemark nodes or none")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true", help="keep the other sizes already in --out")
    parser.add_argument("--workers", type=int, help="MLROLLOUT_WORKERS for the operator (default: its own, 8)")
    parser.add_argument("--logs", type=Path, help="keep the operator's log of each size here (default: dropped)")
    parser.add_argument(
        "--analysis",
        action="store_true",
        help="only Prometheus requests per analysis interval, looks alone and batched (a real Prometheus)",
    )
    parser.add_argument("--analysis-intervals", type=int, default=2)
    args = parser.parse_args()
    # timeout(1) and the like send SIGTERM: unwind, so the operator, the hollow nodes and the control
    # plane are stopped by their `finally`s
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    if args.analysis:
        analysis_main(args)
        return
    queries = prometheus_queries_per_look()
    rows: list[SizeResult] = []
    with control_plane(args.state, args.keep_cluster) as cp, tempfile.TemporaryDirectory() as tmp:
        kubectl = Kubectl(cp)
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
        for n in (int(s) for s in args.sizes.split(",")):
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            try:
                rows.append(run_size(cp, kubectl, n, min(args.samples, n), args.idle, work, args.nodes, args.workers))
            finally:
                if args.logs is not None and (work / f"operator-{n}.log").exists():
                    args.logs.mkdir(parents=True, exist_ok=True)
                    shutil.copy(work / f"operator-{n}.log", args.logs / f"operator-{n}.log")
            print(json.dumps(asdict(rows[-1])), flush=True)
            write_results(args, rows, queries)  # after each size: a long run interrupted keeps what it has
    print_table(rows, queries)
    print(f"wrote {args.out}")


ANALYSIS_RESULTS = ROOT / "bench" / "results" / "operator-scale-analysis.json"
BATCHER = "prefetch thread (looks only read; alone when no batch in time)"
"""Which look batcher a row measured (controller/lookbatch.py; earlier rows name their commit)."""


def analysis_main(args: argparse.Namespace) -> None:
    rows: list[AnalysisResult] = []
    earlier: list[dict[str, Any]] = []
    if ANALYSIS_RESULTS.exists():  # other sizes measured before stay; the sizes measured again go to earlier
        done = {int(s) for s in args.sizes.split(",")}
        before = json.loads(ANALYSIS_RESULTS.read_text())
        earlier = before.get("earlier_runs", [])
        rows = [AnalysisResult(**r) for r in before["rows"] if r["n"] not in done]
        earlier += [r for r in before["rows"] if r["n"] in done]
    with control_plane(args.state, args.keep_cluster) as cp, tempfile.TemporaryDirectory() as tmp:
        kubectl = Kubectl(cp)
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
        for n in (int(s) for s in args.sizes.split(",")):
            work = Path(tmp) / f"a{n}"
            work.mkdir()
            rows += run_analysis(cp, kubectl, n, args.analysis_intervals, work, args.nodes)
            rows.sort(key=lambda r: (r.n, r.mode))
            ANALYSIS_RESULTS.write_text(json.dumps({
                "bench": "operator_scale --analysis",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
                "nodes": NODES[args.nodes], "reconcile_interval_s": 10.0, "measured_intervals": args.analysis_intervals,
                "look": "canary step at 10 % with its split checked; no series (hollow pods): every query asked",
                "rows": [asdict(r) for r in rows],
                "earlier_runs": earlier,
            }, indent=2) + "\n")  # fmt: skip
    for r in rows:
        print(
            f"N={r.n} {r.mode}: {r.queries_per_interval} Prometheus requests per {r.analysis_interval_s:g} s interval, "
            f"{r.looks_per_interval} looks, operator {r.operator_cores} cores, Prometheus {r.prometheus_cores} cores"
        )


def write_results(args: argparse.Namespace, rows: list[SizeResult], queries: dict[str, int]) -> None:
    sizes = [asdict(r) for r in rows]
    earlier: list[dict[str, Any]] = []
    if args.merge and args.out.exists():  # sizes measured again: their rows before go to earlier_runs
        done = {r.n for r in rows}
        before = json.loads(args.out.read_text())
        kept = [r for r in before["sizes"] if r["n"] not in done]
        # written after each size: this run's own rows, already in the file, are not earlier runs
        earlier = before.get("earlier_runs", []) + [
            {"idle_window_s": before.get("idle_window_s"), **r}
            for r in before["sizes"]
            if r["n"] in done and r not in sizes
        ]
        sizes = sorted(kept + sizes, key=lambda r: int(r["n"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "bench": "operator_scale",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "nodes": NODES[args.nodes],
        "reconcile_interval_s": 10.0,
        "idle_interval_s": 60.0,  # the operator's defaults (controller/settings.py), not overridden here
        "resync_interval_s": 300.0,
        "idle_window_s": args.idle,  # this run's; each row has its own
        "workers": args.workers or 8,
        "goals": GOALS,
        "definitions": DEFINITIONS,
        "prometheus_queries_per_md_per_look": queries,
        "sizes": sizes,
        "earlier_runs": earlier,
    }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
