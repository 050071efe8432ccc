"""`traffic.provider: gatewayAPI` against the real control plane, with the official Gateway API CRDs.

The operator runs as `kopf run` under the chart's RBAC (with `rbac.gatewayAPI`). This tier has no data
plane: the test plays the Gateway API implementation's control plane (it writes the GatewayClass'
`supportedFeatures` and the HTTPRoute's `status.parents`, as Traefik or NGINX Gateway Fabric would) and, in
the first test, its data plane too: a loop that reads the operator's HTTPRoute from the API server and
sends each request to the backend its weights pick (and a copy to the RequestMirror backend), to real
`mlrollout-serve` processes labelled with the revisions the operator chose. A real Prometheus scrapes
only those model servers, and the operator's looks read their series (`status.lastAnalysis.source:
model`): the rollout steps and promotes without any gateway of ours. The e2e tier routes through a real
implementation (docs/traffic.md).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.cluster.kube import RESTRICTED, ControlPlane, Kubectl
from tests.cluster.operator_support import OperatorProcess, PodFaker, chart_identity, wait_for
from tests.cluster.test_operator import Env, md_manifest, steps_policy, unique
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, serve_model
from tests.support.prometheus import run_prometheus

pytestmark = pytest.mark.cluster

GROUP = "gateway.networking.k8s.io"
CONTROLLER = "example.com/mlrollout-test-gateway"
MIRRORS = ("HTTPRouteRequestMirror", "HTTPRouteRequestPercentageMirror")
STEP_TIMEOUT = 300.0


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Implementation:
    """The Gateway API implementation's control plane, played by the test: its class, its Gateway, and
    `Accepted` on every HTTPRoute attached to that Gateway (a thread, as a controller would)."""

    kubectl: Kubectl
    namespace: str
    gateway_class: str
    accept: bool = True
    stopping: threading.Event = field(default_factory=threading.Event)

    def install_class(self, features: tuple[str, ...]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": f"{GROUP}/v1", "kind": "GatewayClass", "metadata": {"name": self.gateway_class},
            "spec": {"controllerName": CONTROLLER}}))  # fmt: skip
        status = {"supportedFeatures": [{"name": f} for f in ("HTTPRouteQueryParamMatching", *features)]}
        self.kubectl("patch", "gatewayclass", self.gateway_class, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": status}))  # fmt: skip

    def install_gateway(self) -> None:
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps({
            "apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": "edge"},
            "spec": {"gatewayClassName": self.gateway_class,
                     "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}))  # fmt: skip

    def _accept_routes(self) -> None:
        routes = self.kubectl.json("get", "httproutes", "-n", self.namespace)["items"]
        for route in routes:
            if (route.get("status") or {}).get("parents"):
                continue
            gen = route["metadata"]["generation"]
            conditions = [{"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": now(),
                           "observedGeneration": gen} for t in ("Accepted", "ResolvedRefs")]  # fmt: skip
            parent = {"parentRef": {"group": GROUP, "kind": "Gateway", "name": "edge"}, "controllerName": CONTROLLER,
                      "conditions": conditions}  # fmt: skip
            patch = json.dumps({"status": {"parents": [parent]}})
            self.kubectl("patch", "httproute", route["metadata"]["name"], "-n", self.namespace,
                         "--subresource=status", "--type=merge", "-p", patch)  # fmt: skip

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            if self.accept:
                with contextlib.suppress(Exception):  # a route deleted between list and patch
                    self._accept_routes()


@dataclass
class World:
    env: Env
    impl: Implementation


@contextlib.contextmanager
def gateway_api_world(control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path,
                      extra_env: dict[str, str]) -> Iterator[World]:  # fmt: skip
    """The chart's RBAC with rbac.gatewayAPI, the operator routing through Gateway `edge`, pods made Ready."""
    verdicts = tmp_path / "verdicts"
    verdicts.mkdir()
    kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    impl = Implementation(kubectl, namespace, unique("mlrollout-test"))
    thread = threading.Thread(target=impl.run, daemon=True)
    thread.start()
    with chart_identity(control_plane, kubectl, namespace, tmp_path, sets=("rbac.gatewayAPI=true",)) as identity:
        env = {"MLROLLOUT_GATEWAYAPI_GATEWAY": "edge", **extra_env}
        operator = OperatorProcess(identity.kubeconfig, namespace, verdicts, tmp_path / "operator.log",
                                   peering=identity.peering, extra_env=env)  # fmt: skip
        world = None
        try:
            with PodFaker(control_plane.kubeconfig, namespace) as pods:
                operator.start()
                world = World(Env(kubectl, namespace, operator, pods, verdicts, identity, []), impl)
                yield world
        finally:
            impl.stopping.set()
            operator.stop()
            kubectl("delete", "gatewayclass", impl.gateway_class, "--ignore-not-found", "--wait=false", check=False)
            for policy in world.env.policies if world else []:
                kubectl("delete", "rolloutpolicy", policy, "--ignore-not-found", "--wait=false", check=False)
    refused = [ln for ln in operator.log_path.read_text(errors="replace").splitlines() if "forbidden" in ln.lower()]
    assert refused == [], refused[:5]


def gateway_md(name: str, version: str, policy: str) -> dict[str, Any]:
    return md_manifest(name, version, policy, traffic={"provider": "gatewayAPI"})


def route_of(env: Env, name: str) -> dict[str, Any]:
    return dict(env.kubectl.json("get", "httproute", name, "-n", env.namespace))


# -- a data plane reading the operator's HTTPRoute ---------------------------------------------------------


@dataclass
class DataPlane:
    """Sends inference requests the way the HTTPRoute says: a backend by weight, a copy to the mirror."""

    kubectl: Kubectl
    namespace: str
    route: str
    rows: np.ndarray[Any, Any]
    servers: dict[str, ServerProcess] = field(default_factory=dict)  # Service name -> its model server
    sent: int = 0
    failed: int = 0
    weights_seen: set[tuple[int, ...]] = field(default_factory=set)
    spec: dict[str, Any] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    rng: random.Random = field(default_factory=lambda: random.Random(22))

    def refresh(self) -> None:
        while not self.stopping.wait(1.0):
            with contextlib.suppress(Exception):
                obj = self.kubectl.json("get", "httproute", self.route, "-n", self.namespace)
                self.spec = obj["spec"]["rules"][0]

    def _infer(self, server: ServerProcess, i: int) -> int:
        """The answer's status; 0 when the connection failed (a failed request, unless the test is ending)."""
        try:
            return self._call(server, i)
        except OSError:
            return 0

    def _call(self, server: ServerProcess, i: int) -> int:
        batch = self.rows[[(i * 4 + k) % len(self.rows) for k in range(4)]]
        body = json.dumps({"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                                       "data": batch.ravel().tolist()}]})  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("POST", "/v2/models/wine/infer", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            rule, i = self.spec, i + 1
            backends = [b for b in rule.get("backendRefs", []) if b["name"] in self.servers]
            if not backends:
                time.sleep(0.05)
                continue
            self.weights_seen.add(tuple(b["weight"] for b in rule["backendRefs"]))
            [pick] = self.rng.choices(backends, weights=[b["weight"] for b in backends]) if any(
                b["weight"] for b in backends) else [backends[0]]  # fmt: skip
            status = self._infer(self.servers[pick["name"]], i)
            if self.stopping.is_set():
                break
            self.sent += 1
            self.failed += status != 200
            for f in rule.get("filters", []):
                mirror = f.get("requestMirror") or {}
                target = self.servers.get((mirror.get("backendRef") or {}).get("name", ""))
                if target is not None and self.rng.random() * 100 < mirror.get("percent", 100):
                    self._infer(target, i)  # the answer is dropped, as a mirror's is
            time.sleep(0.004)


def test_a_gateway_api_rollout_steps_and_promotes_on_model_server_evidence(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path, traffic_crds: list[str],
    wine_model: BuiltModel,
) -> None:  # fmt: skip
    with contextlib.ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        prometheus = stack.enter_context(run_prometheus([], scrape_interval="1s"))
        world = stack.enter_context(gateway_api_world(
            control_plane, kubectl, namespace, tmp_path, {"MLROLLOUT_PROMETHEUS_URL": prometheus.url}))  # fmt: skip
        env, impl = world.env, world.impl
        impl.install_class(MIRRORS)
        impl.install_gateway()
        # model-server latency is sub-millisecond: a margin with an absolute part (docs/traffic.md); the default
        # error margin (30% of stable's, at least 0.25 pp) needs ~4000 error-free requests per track, more than
        # this loop sends per step on a busy node, so 2 pp, as the e2e policies (shown in ~500)
        policy = env.policy(steps_policy(unique("gw"), [
            {"shadow": {"mirrorPercent": 100, "minRequests": 100, "maxDuration": "10m"}},
            {"canary": {"weight": 30, "minRequests": 100, "maxDuration": "10m"}},
        ], significance={"margins": {"errorRate": {"absolute": 0.02}, "latency": {"absolute": 0.005}}},
           analysis={"interval": "2s", "metrics": {"predictionDrift": {"enabled": False},
                                                   "latency": {"quantile": 0.9}}}))  # fmt: skip
        env.apply(gateway_md("wine", "1", policy))
        stable = env.wait_status("wine", "Healthy v1 behind an accepted route",
                                 lambda s: s.get("phase") == "Healthy")["stable"]["revision"]  # fmt: skip

        def serve(revision: str, track: str) -> None:
            labels = {"namespace": namespace, "model_deployment": "wine", "track": track, "revision": revision}
            servers[f"wine-{revision}"] = stack.enter_context(serve_model(wine_model, name="wine", labels=labels))
            prometheus.set_targets([s.host_port for s in servers.values()])

        serve(stable, "stable")
        plane = DataPlane(kubectl, namespace, "wine", wine_model.samples, servers)
        plane.spec = route_of(env, "wine")["spec"]["rules"][0]
        threads = [threading.Thread(target=target, daemon=True) for target in (plane.refresh, plane.run)]
        for t in threads:
            t.start()

        def stop() -> None:
            plane.stopping.set()
            for t in threads:
                t.join(timeout=60)

        stack.callback(stop)
        env.apply(gateway_md("wine", "2", policy))
        candidate = env.wait_status("wine", "candidate", lambda s: s.get("candidate"))["candidate"]["revision"]
        serve(candidate, "candidate")
        shadow = env.wait_status("wine", "a look at the shadow step", lambda s: s.get("lastAnalysis"))
        assert shadow["lastAnalysis"]["source"] == "model", shadow["lastAnalysis"]
        canary = env.wait_status("wine", "canary step", lambda s: (s.get("currentStep") or {}).get("kind") == "canary",
                                 timeout=STEP_TIMEOUT)  # fmt: skip
        assert canary["routing"]["accepted"] == "True" and canary["routing"]["provider"] == "gatewayAPI"
        # the split check has no routed counts of ours to read here, and status says so (docs/traffic.md)
        notes = canary["routing"].get("notApplied") or []
        assert any(n.startswith("traffic-split check (gatewayAPI routes): not checked") for n in notes), notes
        [rule] = route_of(env, "wine")["spec"]["rules"]
        assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [
            (f"wine-{stable}", 70),
            (f"wine-{candidate}", 30),
        ]
        done = env.wait_status("wine", "promoted", lambda s: s.get("phase") == "Healthy", timeout=STEP_TIMEOUT)
        assert done["stable"]["revision"] == candidate and done["history"][-1]["outcome"] == "promoted"
        reason = done["history"][-1]["reason"]
        assert "promote verdict" in reason, reason
        assert done["lastAnalysis"]["source"] == "model" and done["lastAnalysis"]["verdict"] == "promote"
        assert {(100, 0), (70, 30)} <= plane.weights_seen and plane.failed == 0, (plane.weights_seen, plane.failed)
        events = [e["reason"] for e in env.events("wine")]
        assert events.count("StepPassed") == 2 and "Promoted" in events


def test_a_missing_gateway_and_an_implementation_without_mirror_hold_the_rollout(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path, traffic_crds: list[str]
) -> None:
    with gateway_api_world(control_plane, kubectl, namespace, tmp_path, {}) as world:
        env, impl = world.env, world.impl
        policy = env.policy(steps_policy(unique("gw"), [
            {"shadow": {"mirrorPercent": 100, "minRequests": 100, "maxDuration": "10m"}},
            {"canary": {"weight": 20, "minRequests": 100, "maxDuration": "10m"}},
        ]))  # fmt: skip
        env.apply(gateway_md("wine", "1", policy))
        waiting = env.wait_status(
            "wine", "waiting for the Gateway", lambda s: "does not exist" in (s.get("message") or "")
        )
        assert waiting["phase"] == "Pending" and waiting["routing"]["accepted"] == "False"
        assert f"Gateway {namespace}/edge does not exist" in waiting["message"]
        available = next(c for c in waiting["conditions"] if c["type"] == "Available")
        assert (available["status"], available["reason"]) == ("False", "RouteNotServed")
        impl.install_class(())  # an implementation that cannot mirror (Traefik 3.6)
        impl.install_gateway()
        env.wait_status("wine", "Healthy once the route is accepted", lambda s: s.get("phase") == "Healthy")
        env.apply(gateway_md("wine", "2", policy))
        held = env.wait_status("wine", "held at the shadow step", lambda s: s.get("hold"))
        assert "does not support RequestMirror" in held["hold"] and held["phase"] == "Paused"
        assert held["routing"]["mirror"] == "none"
        assert "filters" not in route_of(env, "wine")["spec"]["rules"][0]  # never a filter it would 500 on
        env.command("wine", "promote")  # a human skips the shadow step
        env.wait_status("wine", "canary", lambda s: (s.get("currentStep") or {}).get("kind") == "canary")
        impl.accept = False
        kubectl("patch", "httproute", "wine", "-n", namespace, "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": {"parents": [{
                    "parentRef": {"group": GROUP, "kind": "Gateway", "name": "edge"}, "controllerName": CONTROLLER,
                    "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners",
                                    "message": "no listener allows this route", "lastTransitionTime": now()}],
                }]}}))  # fmt: skip
        env.verdict("wine", "promote", 500)
        refused = env.wait_status("wine", "not advancing", lambda s: "not advancing" in (s.get("message") or ""))
        assert "NotAllowedByListeners" in refused["message"] and refused["currentStep"]["kind"] == "canary"
        time.sleep(3)  # promote verdicts keep coming: the step must not pass on a route no one serves
        assert env.status("wine")["currentStep"]["kind"] == "canary"
        kubectl("patch", "httproute", "wine", "-n", namespace, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"parents": []}}))  # fmt: skip
        impl.accept = True
        done = env.wait_status("wine", "promoted", lambda s: s.get("phase") == "Healthy")
        assert done["history"][-1]["outcome"] == "promoted"
        assert wait_for(lambda: route_of(env, "wine")["spec"]["rules"][0]["backendRefs"][0]["weight"] == 100, 30, "")
