"""The operator against the real control plane: `kopf run` as a subprocess under the chart's ServiceAccount.

Given a namespace, the chart's RBAC, the operator and pods made Ready by `PodFaker` (no kubelet in this
tier: only pod readiness is faked), When ModelDeployments and verdicts change, Then children, route
tables, status, conditions and Events follow. Verdicts come from recorded files (MLROLLOUT_VERDICTS_DIR).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.cluster.kube import RESTRICTED, ControlPlane, Kubectl
from tests.cluster.operator_support import (
    ChartIdentity,
    OperatorProcess,
    PodFaker,
    chart_identity,
    peers,
    rival_operator,
    wait_for,
    write_recorded,
    write_verdict,
)
from tests.unit.analysis.snapshots import healthy

pytestmark = pytest.mark.cluster

SHA = {"1": "a" * 64, "2": "b" * 64, "3": "c" * 64}
STEP_TIMEOUT = 90.0


def md_manifest(name: str, version: str, policy: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": name, "version": version, "uri": f"file:///models/{name}-{version}.onnx",
                      "sha256": SHA[version]},
            **spec,
        },
    }  # fmt: skip
    if policy:
        body["spec"]["rolloutPolicyRef"] = {"name": policy}
    return body


def steps_policy(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": name},
        "spec": {"strategy": {"steps": steps}, "analysis": {"interval": "1s"}, "progressDeadline": "5m", **spec},
    }


# shadow, then two canaries; minRequests grow so one recorded count passes exactly one step
CANARY_STEPS = [
    {"shadow": {"mirrorPercent": 100, "minRequests": 100, "maxDuration": "10m"}},
    {"canary": {"weight": 10, "minRequests": 200, "maxDuration": "10m"}},
    {"canary": {"weight": 50, "minRequests": 300, "maxDuration": "10m"}},
]


@dataclass
class Env:
    """One test's world: its namespace, the operator, the pod faker, the verdict files."""

    kubectl: Kubectl
    namespace: str
    operator: OperatorProcess
    pods: PodFaker
    verdicts: Path
    identity: ChartIdentity
    policies: list[str]

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(manifest))

    def policy(self, manifest: dict[str, Any]) -> str:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        self.policies.append(manifest["metadata"]["name"])
        return str(manifest["metadata"]["name"])

    def md(self, name: str) -> dict[str, Any]:
        return dict(self.kubectl.json("get", "md", name, "-n", self.namespace))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.md(name).get("status") or {})

    def wait_status(self, name: str, what: str, check: Any, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            st = self.status(name)
            return st if check(st) else None

        try:
            return wait_for(probe, timeout, f"{name}: {what}")
        except AssertionError as exc:
            detail = f"status: {json.dumps(self.status(name))[:3000]}\npod faker errors: {self.pods.errors[-3:]}"
            raise AssertionError(f"{exc}\n{detail}\noperator log:\n{self.operator.log_tail()}") from None

    def routes(self, name: str) -> dict[str, Any]:
        cm = self.kubectl.json("get", "configmap", f"{name}-routes", "-n", self.namespace)
        return dict(yaml.safe_load(cm["data"]["routes.yaml"]))

    def verdict(self, name: str, verdict: str, requests: int, reason: str = "recorded",
                evidence: dict[str, float] | None = None) -> None:  # fmt: skip
        write_verdict(self.verdicts, self.namespace, name, verdict, requests, reason, evidence)

    def snapshot(self, name: str, snapshot: dict[str, Any]) -> None:
        """The next look judges this snapshot with the real judge (and the rollout's evidence context)."""
        write_recorded(self.verdicts, self.namespace, name, {"snapshot": snapshot})

    def command(self, name: str, verb: str, to_revision: int | None = None) -> str:
        cmd: dict[str, Any] = {"id": f"{verb}-{secrets.token_hex(4)}", "verb": verb}
        if to_revision is not None:
            cmd["toRevision"] = to_revision
        self.kubectl("annotate", "md", name, "-n", self.namespace, "--overwrite",
                     f"mlrollout.io/command={json.dumps(cmd)}")  # fmt: skip
        return str(cmd["id"])

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.kubectl.json(
            "get", "events", "-n", self.namespace, "--field-selector",
            f"involvedObject.name={name},involvedObject.kind=ModelDeployment",
        )["items"]  # fmt: skip
        return sorted(items, key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["creationTimestamp"]))

    def failed_creates(self) -> list[str]:
        """Messages of FailedCreate events (a ReplicaSet whose pod the API server refused)."""
        items = self.kubectl.json("get", "events", "-n", self.namespace, "--field-selector", "reason=FailedCreate")
        return [e.get("message", "") for e in items["items"]]

    def healthy_v1(self, name: str, policy: str | None) -> dict[str, Any]:
        self.apply(md_manifest(name, "1", policy))
        return self.wait_status(name, "Healthy v1", lambda s: s.get("phase") == "Healthy")

    def step(self, name: str, index: int) -> dict[str, Any]:
        return self.wait_status(
            name, f"step {index}", lambda s: (s.get("currentStep") or {}).get("index") == index and s.get("candidate")
        )


@pytest.fixture
def env(control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path) -> Iterator[Env]:
    verdicts = tmp_path / "verdicts"
    verdicts.mkdir()
    # every pod the operator creates in this tier must pass Pod Security "restricted" (else the ReplicaSets
    # cannot create them and nothing becomes Ready)
    kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    with chart_identity(control_plane, kubectl, namespace, tmp_path) as identity:
        operator = OperatorProcess(
            identity.kubeconfig, namespace, verdicts, tmp_path / "operator.log", peering=identity.peering
        )
        world = None
        try:
            with PodFaker(control_plane.kubeconfig, namespace) as pods:
                operator.start()
                world = Env(kubectl, namespace, operator, pods, verdicts, identity, [])
                yield world
        finally:
            operator.stop()
            for policy in world.policies if world else []:
                kubectl("delete", "rolloutpolicy", policy, "--ignore-not-found", "--wait=false", check=False)
    # the chart's trimmed RBAC sufficed: neither kopf nor the reconciler was refused anything
    refused = [ln for ln in operator.log_path.read_text(errors="replace").splitlines() if "forbidden" in ln.lower()]
    assert refused == [], refused[:5]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# -- children and garbage collection -------------------------------------------------------------------------


def test_apply_creates_owned_children_and_delete_collects_them(env: Env) -> None:
    status = env.healthy_v1("wine", None)
    uid = env.md("wine")["metadata"]["uid"]
    rev = status["stable"]["revision"]
    assert status["policy"] == "built-in default (default)" and status["observedGeneration"] == 1
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Available": "True", "Progressing": "False", "Degraded": "False"}
    children = [
        ("deployment", f"wine-{rev}"), ("service", f"wine-{rev}"), ("deployment", "wine"), ("service", "wine"),
        ("configmap", "wine-routes"), ("serviceaccount", "wine-gateway"), ("role", "wine-gateway"),
        ("rolebinding", "wine-gateway"), ("poddisruptionbudget", "wine"),
    ]  # fmt: skip
    for kind, name in children:
        obj = env.kubectl.json("get", kind, name, "-n", env.namespace)
        [owner] = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelDeployment", uid, True), (kind, name)
        assert obj["metadata"]["labels"]["mlrollout.io/model-deployment"] == "wine"
    role = env.kubectl.json("get", "role", "wine-gateway", "-n", env.namespace)
    assert role["rules"][0]["resourceNames"] == ["wine-routes"]
    routes = env.routes("wine")
    assert routes["tracks"] == {"stable": {"upstream": f"http://wine-{rev}.{env.namespace}.svc:8080",
                                           "revision": rev, "weight": 100.0}}  # fmt: skip
    table = env.kubectl("get", "md", "-n", env.namespace).stdout
    assert "PHASE" in table and "SPLIT" in table and "Healthy" in table and "100/0" in table
    # in a namespace enforcing Pod Security "restricted": both pods admitted, no ReplicaSet failed to create one
    pods = env.kubectl.json("get", "pods", "-n", env.namespace, "-l", "mlrollout.io/model-deployment=wine")["items"]
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == {"model-server", "gateway"}
    assert not env.failed_creates()

    # scaling is not a new revision: replicas change in place, no rollout starts
    env.kubectl("patch", "md", "wine", "-n", env.namespace, "--type=merge", "-p", '{"spec": {"replicas": 2}}')
    st = env.wait_status("wine", "generation 2 observed", lambda s: s.get("observedGeneration") == 2)
    assert st["stable"]["revision"] == rev and not st.get("candidate") and st["phase"] == "Healthy"
    wait_for(lambda: env.kubectl.json("get", "deployment", f"wine-{rev}", "-n", env.namespace)["spec"]["replicas"] == 2,
             30, "the stable Deployment scaled in place")  # fmt: skip

    env.kubectl("delete", "md", "wine", "-n", env.namespace, "--wait=true")

    def gone() -> bool:
        kinds = "deployments,services,configmaps,roles,rolebindings,poddisruptionbudgets"
        selector = "mlrollout.io/model-deployment=wine"
        left = env.kubectl("get", kinds, "-n", env.namespace, "-l", selector, "-o", "name").stdout
        return not left.strip()

    wait_for(gone, 120, "garbage collection of the children")


def test_children_drifted_by_someone_else_are_repaired_within_their_bounds(env: Env) -> None:
    """Given an idle Healthy ModelDeployment (its timer passes only every MLROLLOUT_IDLE_INTERVAL, here 40 s,
    and unchanged children are not applied again), When someone scales its gateway Deployment, Then the
    watch of its Deployments takes it off the idle timer and the next tick (1 s here) applies it back, long
    before the idle timer would; When someone deletes a revision Service, Then it is back as soon (Services
    are watched and listed too: one gone is an outage); When someone deletes the route ConfigMap (a child no
    pass reads), Then it is applied again by the first pass after MLROLLOUT_RESYNC_INTERVAL (here 10 s):
    within resync + idle interval. The operator restarted first: it converges."""
    env.operator.stop()
    env.operator.extra_env.update({"MLROLLOUT_IDLE_INTERVAL": "40", "MLROLLOUT_RESYNC_INTERVAL": "10"})
    env.operator.start()
    rev = env.healthy_v1("wine", None)["stable"]["revision"]
    time.sleep(3)  # a few ticks: the passes find it idle

    def gateway_replicas() -> int:
        return int(env.kubectl.json("get", "deployment", "wine", "-n", env.namespace)["spec"]["replicas"])

    env.kubectl("scale", "deployment", "wine", "-n", env.namespace, "--replicas=3")
    wait_for(lambda: gateway_replicas() == 1, 25, "the gateway Deployment applied back (watched, not the idle timer)")

    env.kubectl("delete", "service", f"wine-{rev}", "-n", env.namespace)

    def service_back() -> bool:
        return env.kubectl("get", f"service/wine-{rev}", "-n", env.namespace, check=False).returncode == 0

    wait_for(service_back, 25, "the revision Service applied back (watched, not the idle timer or the resync)")
    env.kubectl("delete", "configmap", "wine-routes", "-n", env.namespace)

    def back() -> bool:
        found = env.kubectl("get", f"service/wine-{rev}", "configmap/wine-routes", "-n", env.namespace, check=False)
        return found.returncode == 0

    wait_for(back, 70, "the Service and the route table applied again within resync + idle interval")
    assert env.routes("wine")["tracks"]["stable"]["revision"] == rev
    assert env.status("wine")["phase"] == "Healthy"


# -- a rollout stepped by verdicts ---------------------------------------------------------------------------


def test_new_revision_steps_routes_as_verdicts_arrive_and_promotes(env: Env) -> None:
    policy = env.policy(steps_policy(unique("steps"), CANARY_STEPS))
    v1 = env.healthy_v1("wine", policy)["stable"]["revision"]
    env.verdict("wine", "continue", 0)
    env.apply(md_manifest("wine", "2", policy))
    st = env.step("wine", 0)
    v2 = st["candidate"]["revision"]
    assert st["phase"] == "Progressing" and st["candidateVersion"] == "2"
    env.kubectl.json("get", "deployment", f"wine-{v2}", "-n", env.namespace)
    routes = env.routes("wine")
    assert routes["mirror"]["revision"] == v2 and routes["mirror"]["percent"] == 100
    assert set(routes["tracks"]) == {"stable"}

    env.verdict("wine", "promote", 150, evidence={"errorRate.harm": 0.6})  # enough for step 0 (100), not step 1
    st = env.step("wine", 1)
    assert st["currentStep"]["carriedIn"] == {"errorRate.harm": 0.6}  # step 0's evidence, kept in status
    routes = env.routes("wine")
    assert routes["tracks"]["candidate"]["weight"] == 10 and routes["tracks"]["stable"]["revision"] == v1
    assert "mirror" not in routes and st["trafficSplit"] == "90/10"
    assert st["lastAnalysis"]["verdict"] == "promote" and st["lastAnalysis"]["metrics"][0]["name"] == "errorRate"
    # the whole rollout is held to the policy's alpha: evidence is carried across the three analysed steps
    assert st["lastAnalysis"]["alpha"] == 0.05

    # the real judge sees where the rollout is: step 1 of 3 (weights 1/2, 1/4, 1/4) carrying 0.6 from step 0
    env.snapshot("wine", {"stable": {"requests": 2000, "errors": 20}, "candidate": {"requests": 220, "errors": 3}})

    def judged(s: dict[str, Any]) -> bool:  # the snapshot's look, not the recorded verdict's before it
        metrics = (s.get("lastAnalysis") or {}).get("metrics") or []
        return any(m["name"] == "errorRate.harm" for m in metrics)

    st = env.wait_status("wine", "a judged look in step 1", judged)
    harm = next(m for m in st["lastAnalysis"]["metrics"] if m["name"] == "errorRate.harm")
    # the rollout's e-value = (0.6 + 1/4) * the step's own + 1/4 (the last step's restart, still to come)
    assert st["currentStep"]["carriedOut"]["errorRate.harm"] == pytest.approx(harm["eValue"] - 0.25, rel=1e-4)
    carried = st["currentStep"]["carriedOut"]

    env.verdict("wine", "promote", 250)
    st = env.step("wine", 2)
    assert st["currentStep"]["carriedIn"] == carried
    assert env.routes("wine")["tracks"]["candidate"]["weight"] == 50

    env.verdict("wine", "promote", 350)
    st = env.wait_status("wine", "promoted", lambda s: s.get("phase") == "Healthy" and not s.get("candidate"))
    assert st["stable"]["revision"] == v2 and st["history"][-1]["outcome"] == "promoted"
    routes = env.routes("wine")
    assert set(routes["tracks"]) == {"stable"} and routes["tracks"]["stable"]["revision"] == v2
    # the promoted Deployment now runs as the stable track
    dep = env.kubectl.json("get", "deployment", f"wine-{v2}", "-n", env.namespace)
    assert dep["spec"]["template"]["metadata"]["labels"]["mlrollout.io/track"] == "stable"
    described = env.kubectl("describe", "md", "wine", "-n", env.namespace).stdout
    for reason in ("RolloutStarted", "StepStarted", "StepPassed", "Promoted"):
        assert reason in described, described
    assert "mlrollout_operator_rollouts_total" in env.operator.metrics()


def test_rollback_verdict_sets_weight_zero_and_marks_degraded(env: Env) -> None:
    policy = env.policy(steps_policy(unique("steps"), CANARY_STEPS))
    env.healthy_v1("wine", policy)
    env.verdict("wine", "promote", 150)
    env.apply(md_manifest("wine", "2", policy))
    env.step("wine", 1)
    assert env.routes("wine")["tracks"]["candidate"]["weight"] == 10

    env.verdict("wine", "rollback", 160, reason="errorRate: candidate 4.1% vs stable 0.9%, harm proven")
    st = env.wait_status("wine", "Degraded", lambda s: s.get("phase") == "Degraded")
    routes = env.routes("wine")
    assert set(routes["tracks"]) == {"stable"} and "mirror" not in routes
    assert st["traffic"]["candidate"] == 0 and not st.get("candidate")
    assert {c["type"]: c["status"] for c in st["conditions"]}["Degraded"] == "True"
    assert st["history"][-1]["outcome"] == "rolledBack" and "harm proven" in st["history"][-1]["reason"]
    # the spec still names v2: the operator did not touch it, and does not roll it out again
    assert env.md("wine")["spec"]["model"]["version"] == "2"
    described = env.kubectl("describe", "md", "wine", "-n", env.namespace).stdout
    assert "AnalysisFailed" in described and "harm proven" in described


def test_crash_looping_candidate_is_rolled_back(env: Env) -> None:
    policy = env.policy(steps_policy(unique("steps"), CANARY_STEPS))
    env.healthy_v1("wine", policy)
    env.apply(md_manifest("wine", "2", policy))
    st = env.wait_status("wine", "candidate", lambda s: s.get("candidate"))
    env.pods.break_revision(st["candidate"]["revision"], "digest")
    st = env.wait_status("wine", "Degraded", lambda s: s.get("phase") == "Degraded")
    assert "CandidateDigestMismatch" in st["history"][-1]["reason"]
    assert "integrity" in st["history"][-1]["reason"]


# -- restart between steps -----------------------------------------------------------------------------------


def test_operator_killed_between_steps_resumes_without_repeating_or_skipping(env: Env) -> None:
    policy = env.policy(steps_policy(unique("steps"), CANARY_STEPS))
    env.healthy_v1("wine", policy)
    env.verdict("wine", "promote", 150)
    env.apply(md_manifest("wine", "2", policy))
    env.step("wine", 1)

    env.operator.kill()
    before = env.status("wine")
    env.verdict("wine", "promote", 250)  # arrives while no operator runs
    assert env.status("wine")["currentStep"] == before["currentStep"]
    env.operator.start()

    env.step("wine", 2)
    assert env.routes("wine")["tracks"]["candidate"]["weight"] == 50
    env.verdict("wine", "promote", 350)
    env.wait_status("wine", "promoted", lambda s: s.get("phase") == "Healthy" and not s.get("candidate"))
    started = [e["message"] for e in env.events("wine") if e["reason"] == "StepStarted"]
    passed = [e["message"] for e in env.events("wine") if e["reason"] == "StepPassed"]
    for index in range(3):
        assert sum(m.startswith(f"step {index} ") for m in started) == 1, started
        assert sum(m.startswith(f"step {index} ") for m in passed) == 1, passed
    assert env.operator.starts == 2


def test_not_healthy_until_the_gateway_is_ready(env: Env) -> None:
    """The model server is ready first; Healthy and Available wait for the gateway clients call."""
    env.pods.withheld.add("gateway")
    env.apply(md_manifest("gw", "1"))
    status = env.wait_status(
        "gw", "waiting for the gateway", lambda s: "waiting for the gateway" in (s.get("message") or "")
    )
    assert status["phase"] == "Pending"
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"]) == ("False", "GatewayUnavailable")
    model = env.kubectl.json("get", "deployment", "-n", env.namespace, "-l", "app.kubernetes.io/component=model-server")
    assert len(model["items"]) == 1 and model["items"][0]["status"].get("readyReplicas", 0) >= 1
    gateway = env.kubectl.json("get", "deployment", "gw", "-n", env.namespace)
    assert not gateway["status"].get("readyReplicas")
    env.pods.withheld.clear()
    status = env.wait_status("gw", "Healthy once the gateway is ready", lambda s: s.get("phase") == "Healthy")
    assert next(c for c in status["conditions"] if c["type"] == "Available")["status"] == "True"
    phases = [e["reason"] for e in env.events("gw") if e["reason"].startswith("Phase")]
    assert phases == ["PhasePending", "PhaseHealthy"], phases


def test_error_rate_slo_null_survives_the_api_server_and_reaches_judge(env: Env) -> None:
    """`errorRate.maxRate: null` (no error-rate SLO) is kept by the real API server (the CRD marks it
    nullable), read by the operator and honoured by `judge`; without it the default SLO applies."""
    steps = [{"shadow": {"mirrorPercent": 100, "minRequests": 100, "maxDuration": "10m"}}]
    no_slo = unique("noslo")
    manifest = steps_policy(no_slo, steps, analysis={"interval": "1s", "metrics": {"errorRate": {"maxRate": None}}})
    # server-side apply sends the null as written (client-side `kubectl apply` strips nulls: docs/api.md)
    env.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
    env.policies.append(no_slo)
    with_slo = env.policy(steps_policy(unique("slo"), steps))
    stored = env.kubectl.json("get", "rolloutpolicy", no_slo)["spec"]["analysis"]["metrics"]
    assert "maxRate" in stored["errorRate"] and stored["errorRate"]["maxRate"] is None
    names: dict[str, list[str]] = {}
    for md, policy in (("noslo", no_slo), ("slo", with_slo)):
        (env.verdicts / f"{env.namespace}.{md}.json").write_text(json.dumps({"snapshot": healthy()}))
        env.healthy_v1(md, policy)
        env.apply(md_manifest(md, "2", policy))
        status = env.wait_status(md, "a judged look", lambda s: (s.get("lastAnalysis") or {}).get("metrics"))
        names[md] = [m["name"] for m in status["lastAnalysis"]["metrics"]]
    assert "errorRate.harm" in names["noslo"] and "errorRate.slo" not in names["noslo"], names
    assert "errorRate.slo" in names["slo"], names


# -- kopf peering: collision protection -----------------------------------------------------------------------


def test_peering_pauses_the_operator_while_a_higher_priority_peer_is_alive(
    env: Env, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """The operator keeps its entry alive in the chart's KopfPeering under the chart's RBAC; while a
    higher-priority operator is alive in the same peering it handles nothing; when that one leaves, it
    resumes and the ModelDeployment applied meanwhile is deployed."""
    me = env.operator.identity
    wait_for(lambda: me in peers(env.kubectl, env.namespace, env.identity.peering), 60, f"{me} in the peering")
    with rival_operator(control_plane.kubeconfig, env.namespace, env.identity.peering, 100, tmp_path) as rival:
        wait_for(
            lambda: "Pausing operations in favour of" in env.operator.log_path.read_text(errors="replace"),
            60,
            f"the operator pausing for the rival\noperator log:\n{env.operator.log_tail()}\nrival log:\n"
            + rival.read_text(errors="replace")[-3000:],
        )
        assert {me, "rival"} <= peers(env.kubectl, env.namespace, env.identity.peering).keys()
        env.apply(md_manifest("peered", "1"))
        # Absence can only be checked over a window: several reconcile intervals (1 s) and watch events.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert not env.status("peered"), "the paused operator wrote status"
            deploys = env.kubectl.json("get", "deployments", "-n", env.namespace)["items"]
            assert deploys == [], "the paused operator created children"
            time.sleep(1)
    env.wait_status("peered", "Healthy once the rival left", lambda s: s.get("phase") == "Healthy")
    assert "rival" not in peers(env.kubectl, env.namespace, env.identity.peering)
    assert "Resuming operations" in env.operator.log_path.read_text(errors="replace")


# -- human commands through the annotation -------------------------------------------------------------------


def test_promote_abort_and_undo_through_the_command_annotation(env: Env) -> None:
    policy = env.policy(steps_policy(unique("steps"), CANARY_STEPS))
    v1 = env.healthy_v1("wine", policy)["stable"]["revision"]
    env.verdict("wine", "continue", 0)
    env.apply(md_manifest("wine", "2", policy))
    env.step("wine", 0)

    cmd = env.command("wine", "promote")
    st = env.step("wine", 1)
    assert st["lastCommand"]["id"] == cmd and st["lastCommand"]["result"] == "accepted"
    cmd = env.command("wine", "promoteFull")
    st = env.wait_status("wine", "v2 stable", lambda s: (s.get("stable") or {}).get("modelVersion") == "2")
    v2 = st["stable"]["revision"]

    cmd = env.command("wine", "undo")
    st = env.wait_status("wine", "undo done", lambda s: (s.get("stable") or {}).get("revision") == v1
                         and not s.get("candidate"))  # fmt: skip
    assert st["lastCommand"]["id"] == cmd and st["heldBack"]["revision"] == v2 and st["phase"] == "Healthy"
    assert env.routes("wine")["tracks"]["stable"]["revision"] == v1

    env.apply(md_manifest("wine", "3", policy))
    env.step("wine", 0)
    cmd = env.command("wine", "abort")
    st = env.wait_status("wine", "aborted", lambda s: s.get("phase") == "Degraded")
    assert st["lastCommand"]["id"] == cmd and st["history"][-1]["outcome"] == "aborted"
    cmd = env.command("wine", "undo", to_revision=99)
    st = env.wait_status("wine", "refused", lambda s: s["lastCommand"]["id"] == cmd)
    assert st["lastCommand"]["result"] == "refused"


# -- policy chosen by namespace label --------------------------------------------------------------------------


def test_policy_selected_by_namespace_label_applies_without_a_reference(env: Env) -> None:
    label = unique("team")
    bg_step = {"blueGreen": {"previewMirrorPercent": 50, "minRequests": 10, "scaleDownDelay": "30s"}}
    manifest = steps_policy(unique("bluegreen"), [bg_step])
    manifest["spec"]["selector"] = {"namespaceSelector": {"matchLabels": {"mlrollout.io/test-team": label}}}
    manifest["spec"]["priority"] = 10
    name = env.policy(manifest)
    env.kubectl("label", "namespace", env.namespace, f"mlrollout.io/test-team={label}")
    st = env.healthy_v1("wine", None)
    assert st["policy"] == f"{name} (selector)"
    env.verdict("wine", "continue", 0)
    env.apply(md_manifest("wine", "2"))
    st = env.step("wine", 0)
    assert st["currentStep"]["kind"] == "blueGreen"
    routes = env.routes("wine")
    assert routes["mode"] == "blueGreen" and routes["mirror"]["percent"] == 50
    env.verdict("wine", "promote", 20)
    st = env.wait_status("wine", "switched", lambda s: (s.get("stable") or {}).get("modelVersion") == "2")
    assert env.routes("wine")["tracks"]["stable"]["revision"] == st["stable"]["revision"]


# -- network policies ------------------------------------------------------------------------------------------


def test_network_policies_follow_spec_network_policy_under_the_charts_rbac(env: Env) -> None:
    """Given a Healthy ModelDeployment, When spec.networkPolicy is switched on with named clients, Then the
    two ingress policies exist, owned by it; When it is switched off, Then the operator deletes them (with
    nothing but the chart's Role: create, patch, deletecollection)."""
    env.healthy_v1("wine", None)
    selector = ["-l", "mlrollout.io/model-deployment=wine"]
    assert env.kubectl.json("get", "networkpolicies", "-n", env.namespace, *selector)["items"] == []
    clients = [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}]
    env.kubectl("patch", "md", "wine", "-n", env.namespace, "--type=merge", "-p",
                json.dumps({"spec": {"networkPolicy": {"enabled": True, "clients": clients}}}))  # fmt: skip

    def policies() -> dict[str, Any]:
        items = env.kubectl.json("get", "networkpolicies", "-n", env.namespace, *selector)["items"]
        return {p["metadata"]["name"]: p for p in items}

    found = wait_for(lambda: p if len(p := policies()) == 2 else None, 60, "the two NetworkPolicies")
    uid = env.md("wine")["metadata"]["uid"]
    assert set(found) == {"wine-gateway", "wine-model-server"}
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == uid for p in found.values())
    assert clients[0] in found["wine-gateway"]["spec"]["ingress"][0]["from"]
    env.kubectl("patch", "md", "wine", "-n", env.namespace, "--type=merge", "-p",
                '{"spec": {"networkPolicy": {"enabled": false}}}')  # fmt: skip
    wait_for(lambda: not policies(), 60, "the NetworkPolicies deleted once switched off")
    assert env.status("wine")["phase"] == "Healthy"


# -- feedback keys ----------------------------------------------------------------------------------------------


def test_quality_gets_the_gateway_a_feedback_key_under_the_charts_rbac(env: Env) -> None:
    """Given a policy with quality on, When a ModelDeployment uses it, Then the operator (with nothing but
    the chart's `create secrets`) creates `<md>-feedback` once, owned by the ModelDeployment, holding one
    32-byte key, and the gateway's pods mount it where the gateway reads its keys."""
    manifest = steps_policy(unique("quality"), CANARY_STEPS)
    manifest["spec"]["analysis"]["metrics"] = {"quality": {"enabled": True}}
    env.healthy_v1("wine", env.policy(manifest))
    secret = wait_for(
        lambda: env.kubectl.json("get", "secrets", "-n", env.namespace, "-l", "mlrollout.io/model-deployment=wine")[
            "items"
        ],
        60,
        "the feedback Secret",
    )
    [secret] = secret
    assert secret["metadata"]["name"] == "wine-feedback"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == env.md("wine")["metadata"]["uid"]
    keys = json.loads(base64.b64decode(secret["data"]["keys"]))
    assert list(keys) == ["1"] and len(base64.b64decode(keys["1"])) == 32
    gateway = env.kubectl.json("get", "deployment", "wine", "-n", env.namespace)["spec"]["template"]["spec"]
    assert gateway["volumes"][0]["secret"] == {"secretName": "wine-feedback", "optional": True, "defaultMode": 420}
    assert gateway["containers"][0]["volumeMounts"][0]["mountPath"] == "/var/run/mlrollout/feedback"


# -- the offline evaluation gate ---------------------------------------------------------------------------------

EVALUATE_STEP = {
    "evaluate": {
        "dataset": {"uri": "http://holdouts.example/wine.csv", "sha256": "d" * 64, "label": "quality"},
        "metric": "accuracy",
        "margin": {"relative": 0.01},
        "maxDuration": "10m",
        "resources": {"cpu": "500m", "memory": "256Mi"},
    }
}


def end_evaluation_pod(env: Env, job: str, report: dict[str, Any], exit_code: int) -> None:
    """Play the kubelet for the Job controller's pod: `mlrollout-evaluate` exited with `exit_code` and left
    `report` in its termination message (the Job controller then marks the Job Complete or Failed)."""
    pod = wait_for(
        lambda: env.kubectl.json("get", "pods", "-n", env.namespace, "-l", f"job-name={job}")["items"],
        60, "the Job controller's pod",
    )[0]  # fmt: skip
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                  "message": json.dumps(report), "startedAt": now, "finishedAt": now}  # fmt: skip
    image = pod["spec"]["containers"][0]["image"]
    body = {"status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "startTime": now, "containerStatuses": [
        {"name": "evaluate", "image": image, "imageID": f"fake://{image}", "ready": False, "started": False,
         "restartCount": 0, "state": {"terminated": terminated}}]}}  # fmt: skip
    env.kubectl("patch", "pod", pod["metadata"]["name"], "-n", env.namespace, "--subresource=status",
                "--type=merge", "-p", json.dumps(body))  # fmt: skip


def test_evaluate_step_runs_a_job_and_a_worse_candidate_is_rolled_back_before_any_traffic(env: Env) -> None:
    """Given a policy whose first step is `evaluate`, When a new revision rolls out, Then the operator (with
    nothing but the chart's RBAC) creates one Job, owned by the ModelDeployment, under a token-less
    ServiceAccount, while the route table sends the candidate nothing; and when the Job's pod ends with a
    failing report, the rollout is rolled back with the report's numbers in status.

    This tier has no kubelet: the real Job controller creates the pod, and the test plays the kubelet's
    part, writing the pod status a kubelet writes when `mlrollout-evaluate` exits 1 with its report in the
    termination message (the report's numbers are the contract's, not computed here: the component tier
    runs the real program on real models); the Job controller then marks the Job failed, as it would."""
    env.pods.withheld.add("evaluation")  # no container runs in this tier: the test ends it below
    policy = env.policy(steps_policy(unique("eval"), [EVALUATE_STEP, *CANARY_STEPS]))
    env.healthy_v1("wine", policy)
    env.verdict("wine", "continue", 0)
    env.apply(md_manifest("wine", "2", policy))

    def running(s: dict[str, Any]) -> bool:
        return (s.get("lastEvaluation") or {}).get("phase") == "Running"

    st = env.wait_status("wine", "the evaluation running", running)
    name = st["lastEvaluation"]["job"]
    assert st["currentStep"]["kind"] == "evaluate" and st["traffic"]["candidate"] == st["traffic"]["mirror"] == 0
    routes = env.routes("wine")
    assert set(routes["tracks"]) == {"stable"} and "mirror" not in routes
    job = env.kubectl.json("get", "job", name, "-n", env.namespace)
    assert job["metadata"]["ownerReferences"][0]["uid"] == env.md("wine")["metadata"]["uid"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 600
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "wine-evaluation" and pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["containers"][0]["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    sa = env.kubectl.json("get", "serviceaccount", "wine-evaluation", "-n", env.namespace)
    assert sa["automountServiceAccountToken"] is False

    report = {
        "kind": "mlrollout.io/evaluation", "version": 1, "verdict": "fail", "metric": "accuracy", "rows": 2000,
        "reason": "FAIL: worse beyond the margin 0.008: accuracy 0.75 vs stable 0.8: -0.05 [-0.07, -0.03], p=2.1e-06",
        "datasetSha256": "d" * 64,
        "checks": [
            {"kind": "stable", "name": "stable", "decision": "fail", "rows": 2000, "reference": 0.8, "candidate": 0.75,
             "effect": -0.05, "interval": [-0.07, -0.03], "alpha": 0.05, "test": "exact McNemar", "pValue": 2.1e-6,
             "margin": 0.008},
            {"kind": "baseline", "name": "majority", "decision": "pass", "rows": 2000, "reference": 0.6875,
             "candidate": 0.75, "effect": 0.0625, "interval": [0.04, 0.08], "alpha": 0.05, "pValue": 1e-9},
        ],
    }  # fmt: skip
    end_evaluation_pod(env, name, report, exit_code=1)

    st = env.wait_status("wine", "rolled back by the evaluation", lambda s: s.get("phase") == "Degraded")
    assert not st.get("candidate") and st["traffic"]["candidate"] == st["traffic"]["mirror"] == 0
    last = st["history"][-1]
    assert last["outcome"] == "rolledBack" and "EvaluationFailed" in last["reason"] and "p=2.1e-06" in last["reason"]
    assert last["evaluation"].startswith("Failed: FAIL")
    ev = st["lastEvaluation"]
    assert ev["phase"] == "Failed" and ev["rows"] == 2000 and ev["datasetSha256"] == "d" * 64
    assert ev["checks"][0]["effect"] == -0.05 and ev["checks"][0]["interval"] == [-0.07, -0.03]
    assert ev["checks"][1]["reference"] == 0.6875
    routes = env.routes("wine")
    assert set(routes["tracks"]) == {"stable"} and "mirror" not in routes
    described = env.kubectl("describe", "md", "wine", "-n", env.namespace).stdout
    assert "EvaluationStarted" in described and "EvaluationFailed" in described


def test_a_candidate_the_evaluation_passes_goes_on_to_shadow(env: Env) -> None:
    """Given the same gated policy, When the Job's pod ends with a passing report (the kubelet's part
    played by the test, as above), Then the Job controller marks the Job Complete, the operator passes the
    evaluate step and the shadow step starts mirroring to the candidate, with the evaluation kept in status."""
    env.pods.withheld.add("evaluation")
    policy = env.policy(steps_policy(unique("eval"), [EVALUATE_STEP, *CANARY_STEPS]))
    env.healthy_v1("wine", policy)
    env.verdict("wine", "continue", 0)
    env.apply(md_manifest("wine", "2", policy))
    st = env.wait_status("wine", "the evaluation running", lambda s: (s.get("lastEvaluation") or {}).get("job"))
    report = {
        "kind": "mlrollout.io/evaluation", "version": 1, "verdict": "pass", "metric": "accuracy", "rows": 2000,
        "reason": "PASS: equivalent: accuracy 0.801 vs stable 0.8", "datasetSha256": "d" * 64,
        "checks": [{"kind": "stable", "name": "stable", "decision": "pass", "rows": 2000, "reference": 0.8,
                    "candidate": 0.801, "effect": 0.001, "interval": [-0.004, 0.006], "alpha": 0.05,
                    "test": "exact McNemar", "pValue": 0.7, "margin": 0.008}],
    }  # fmt: skip
    end_evaluation_pod(env, st["lastEvaluation"]["job"], report, exit_code=0)
    st = env.wait_status("wine", "the shadow step", lambda s: (s.get("currentStep") or {}).get("kind") == "shadow")
    assert st["lastEvaluation"]["phase"] == "Passed" and st["lastEvaluation"]["checks"][0]["pValue"] == 0.7
    job = env.kubectl.json("get", "job", st["lastEvaluation"]["job"], "-n", env.namespace)
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"]), job["status"]
    routes = env.routes("wine")
    assert routes["mirror"]["revision"] == st["candidate"]["revision"] and routes["mirror"]["percent"] == 100
