"""The reconcile handler against KMock (the kopf author's Kubernetes API mock server), over real HTTP.

Fast feedback for the I/O half: the Kubernetes adapter's paths, server-side apply bodies, status writes
through the subresource, Events. The emulator stores JSON and merges patches; it has no controllers, so
readiness is written into the Deployment status by the test (the cluster tier does the real thing).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.unit.controller.kmock_support import ApplyingEmulator, declare_operator_resources
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.analysis import AnalysisTarget
from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.collect import BackendCounter
from mlrollout.analysis.queries import BACKEND_SPLIT_PRESETS
from mlrollout.analysis.snapshot import Split
from mlrollout.api.analysis import Judgement, MetricResult, Samples, TrackPair
from mlrollout.api.modeldeployment import PHASES, GatewayAutoscaling
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.controller import metrics, naming
from mlrollout.controller.kube import Conflict, Kube, cut_short
from mlrollout.controller.reconcile import Reconciled, Reconciler
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.verdicts import RecordedVerdicts
from mlrollout.kubehttp import api_exception
from mlrollout.revision import revision_of
from mlrollout.rollout import lookhistory
from mlrollout_serving.contract import startup

MD = "mlrollout.io/v1alpha1/modeldeployments"
DEPLOYMENTS = "apps/v1/deployments"
LOG = logging.getLogger("test.kmock")


pytestmark = pytest.mark.kmock(cls=ApplyingEmulator)


def md_body(version: str = "1", sha: str = "a", **spec_extra: Any) -> dict[str, Any]:
    model = {"name": "wine", "version": version, "uri": f"file:///models/wine-{version}.onnx", "sha256": sha * 64}
    return {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "wine", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {"model": model, "rolloutPolicyRef": {"name": "fast"}, **spec_extra},
    }


FAST_POLICY: dict[str, Any] = {
    "apiVersion": "mlrollout.io/v1alpha1",
    "kind": "RolloutPolicy",
    "metadata": {"name": "fast"},
    "spec": {
        "strategy": {"steps": [{"canary": {"weight": 20, "minRequests": 10}}]},
        "analysis": {"interval": "1s"},
    },
}


@pytest.fixture
def cluster(kmock: Any) -> Any:
    declare_operator_resources(kmock)
    # a namespace fetch looks like a namespaced listing to the emulator's URL parser: answer it directly
    kmock["get /api/v1/namespaces/ml"] << {"metadata": {"name": "ml", "labels": {"team": "a"}}}
    kmock.objects["mlrollout.io/v1alpha1/rolloutpolicies", None, "fast"] = FAST_POLICY
    kmock.objects[MD, "ml", "wine"] = md_body()
    return kmock


def reconciler(server: Any, verdicts: Path) -> Reconciler:
    api = client.ApiClient(client.Configuration(host=str(server.url).rstrip("/")))
    settings = OperatorSettings(serving_image=IMAGE, gateway_image="gw:test")
    return Reconciler(Kube(api), RecordedVerdicts(str(verdicts)), settings)


async def run(rec: Reconciler, now: datetime) -> Reconciled | None:
    return await asyncio.to_thread(rec.reconcile, "ml", "wine", LOG, now)


def make_ready(server: Any, name: str) -> None:
    dep = server.objects[DEPLOYMENTS, "ml", name]
    replicas = dep["spec"]["replicas"]
    dep.patch({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "readyReplicas": replicas,
                                                         "updatedReplicas": replicas}})  # fmt: skip


async def test_reconcile_creates_children_writes_status_and_walks_a_rollout(cluster: Any, tmp_path: Path) -> None:
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    rev1 = revision_of(spec("1", "a"), IMAGE).revision

    out = await run(rec, t0)
    assert out is not None and out.phase == "Pending" and "Deploying" in out.events
    dep = cluster.objects[DEPLOYMENTS, "ml", f"wine-{rev1}"]
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    for resource, name in [
        ("v1/services", f"wine-{rev1}"),
        ("v1/services", "wine"),
        (DEPLOYMENTS, "wine"),
        ("v1/configmaps", "wine-routes"),
        ("v1/serviceaccounts", "wine-gateway"),
        ("rbac.authorization.k8s.io/v1/roles", "wine-gateway"),
        ("rbac.authorization.k8s.io/v1/rolebindings", "wine-gateway"),
        ("policy/v1/poddisruptionbudgets", "wine"),
    ]:
        assert cluster.objects[resource, "ml", name]["metadata"]["labels"][naming.MANAGED_BY] == "mlrollout"
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert status["phase"] == "Pending" and status["policy"] == "fast (reference)"
    assert status["observedGeneration"] == 1
    posted = cluster.posted_events
    assert {"Deploying", "PhasePending"} <= {e["reason"] for e in posted}  # every transition posts an Event
    assert all(e["involvedObject"]["uid"] == "uid-1" for e in posted)

    make_ready(cluster, f"wine-{rev1}")
    out = await run(rec, t0 + timedelta(seconds=5))
    # the model answers, but clients call the gateway: not Healthy, not Available until it is ready too
    assert out is not None and out.phase == "Pending"
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert "waiting for the gateway" in status["message"]
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert available["status"] == "False" and available["reason"] == "GatewayUnavailable"
    make_ready(cluster, "wine")
    out = await run(rec, t0 + timedelta(seconds=6))
    assert out is not None and out.phase == "Healthy"
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert next(c for c in status["conditions"] if c["type"] == "Available")["status"] == "True"

    # a new revision: candidate created, routes step on a recorded promote verdict
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body("2", "b")["spec"], "metadata": {"generation": 2}})
    rev2 = revision_of(spec("2", "b"), IMAGE).revision
    out = await run(rec, t0 + timedelta(seconds=10))
    assert out is not None and out.phase == "Progressing" and "RolloutStarted" in out.events
    make_ready(cluster, f"wine-{rev2}")
    out = await run(rec, t0 + timedelta(seconds=11))
    routes = cluster.objects["v1/configmaps", "ml", "wine-routes"]["data"]["routes.yaml"]
    assert "weight: 20" in routes and rev2 in routes
    (tmp_path / "ml.wine.json").write_text(
        json.dumps({"verdict": "promote", "reason": "recorded", "samples": {"stable": 500, "candidate": 50}})
    )
    out = await run(rec, t0 + timedelta(seconds=13))
    assert out is not None and "Promoted" in out.events and out.phase == "Healthy"
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert status["stable"]["revision"] == rev2 and status["lastAnalysis"]["verdict"] == "promote"
    assert status["lastAnalysis"]["alpha"] == 0.05  # one analysed step: the policy's whole alpha
    # the spec was never written by the operator
    assert cluster.objects[MD, "ml", "wine"]["spec"]["model"]["version"] == "2"


async def test_missing_referenced_policy_degrades_with_the_policy_named(cluster: Any, tmp_path: Path) -> None:
    body = md_body()
    body["spec"]["rolloutPolicyRef"] = {"name": "nope"}
    cluster.objects[MD, "ml", "wine"] = body
    out = await run(reconciler(cluster, tmp_path), datetime(2026, 11, 26, tzinfo=UTC))
    assert out is not None and out.phase == "Degraded" and out.events == ("PolicyError",)
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert "nope" in status["message"]
    assert [c["reason"] for c in status["conditions"] if c["type"] == "Degraded"] == ["PolicyError"]


class ConflictOnce(Kube):
    """A status write that loses a race once, as when kopf patches its annotations in between."""

    conflicts = 1

    def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            raise Conflict("the object has been modified")
        return super().replace_status(obj)


async def test_a_lost_status_race_posts_no_events_and_the_retry_posts_them_once(cluster: Any, tmp_path: Path) -> None:
    rec = reconciler(cluster, tmp_path)
    rec.kube = ConflictOnce(rec.kube.api)  # type: ignore[attr-defined]
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    with pytest.raises(Conflict):
        await run(rec, t0)
    assert not getattr(cluster, "posted_events", [])
    assert "status" not in cluster.objects[MD, "ml", "wine"]
    out = await run(rec, t0 + timedelta(seconds=1))
    assert out is not None and out.phase == "Pending"
    reasons = [e["reason"] for e in cluster.posted_events]
    assert reasons.count("Deploying") == 1 and reasons.count("PhasePending") == 1


async def test_a_spec_that_does_not_validate_degrades_instead_of_crash_looping(cluster: Any, tmp_path: Path) -> None:
    body = md_body()
    body["spec"]["model"]["sha256"] = "not-a-digest"
    cluster.objects[MD, "ml", "wine"] = body
    out = await run(reconciler(cluster, tmp_path), datetime(2026, 11, 26, tzinfo=UTC))
    assert out is not None and out.phase == "Degraded" and out.events == ("InvalidSpec",)
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert "sha256" in status["message"]
    assert (DEPLOYMENTS, "ml", "wine") not in cluster.objects  # nothing deployed from an invalid spec


NETWORK_POLICIES = "networking.k8s.io/v1/networkpolicies"


def network_policies(cluster: Any) -> set[str]:
    """Names of the NetworkPolicies the emulator holds (not deleted)."""
    return {
        key[2]
        for key in cluster.objects
        if (key[0].group, key[0].plural) == ("networking.k8s.io", "networkpolicies")
        and not cluster.objects[key].deleted
    }


async def test_network_policies_follow_the_spec_and_go_when_switched_off(cluster: Any, tmp_path: Path) -> None:
    """Given the operator's default (off), When a ModelDeployment turns spec.networkPolicy on, Then both
    policies are applied with it as owner; When it turns them off again, Then they are deleted (a policy
    left behind would keep isolating pods the user opened up)."""
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    unrelated = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": "users-own", "namespace": "ml", "labels": {"team": "a"}}, "spec": {}}  # fmt: skip
    cluster.objects[NETWORK_POLICIES, "ml", "users-own"] = unrelated
    await run(rec, t0)
    assert network_policies(cluster) == {"users-own"}
    cluster.objects[MD, "ml", "wine"].patch({"spec": {"networkPolicy": {"enabled": True}}})
    await run(rec, t0 + timedelta(seconds=1))
    assert network_policies(cluster) == {"users-own", "wine-gateway", "wine-model-server"}
    for name in ("wine-gateway", "wine-model-server"):
        pol = cluster.objects[NETWORK_POLICIES, "ml", name]
        assert pol["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert pol["spec"]["policyTypes"] == ["Ingress"]
    cluster.objects[MD, "ml", "wine"].patch({"spec": {"networkPolicy": {"enabled": False}}})
    await run(rec, t0 + timedelta(seconds=2))
    assert network_policies(cluster) == {"users-own"}


async def test_the_operator_default_turns_network_policies_on(cluster: Any, tmp_path: Path) -> None:
    rec = reconciler(cluster, tmp_path)
    rec.settings = dataclasses.replace(rec.settings, network_policies=True)
    await run(rec, datetime(2026, 11, 26, 6, 0, tzinfo=UTC))
    assert network_policies(cluster) == {"wine-gateway", "wine-model-server"}


class NoNetworkPolicyRights(Kube):
    """A hand-made Role from before NetworkPolicies existed: the cleanup's deletecollection is refused."""

    def delete_labelled(self, api_version: str, kind: str, namespace: str, selector: str) -> None:
        raise api_exception(403, "Forbidden", '{"message": "cannot deletecollection"}')


async def test_rbac_without_network_policies_warns_once_and_rolls_out(
    cluster: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = reconciler(cluster, tmp_path)
    rec.kube = NoNetworkPolicyRights(rec.kube.api)  # type: ignore[attr-defined]
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    for seconds in (0, 1):
        out = await run(rec, t0 + timedelta(seconds=seconds))
        assert out is not None and out.phase == "Pending"
    warnings = [r.getMessage() for r in caplog.records if "NetworkPolicies not cleaned up" in r.getMessage()]
    assert len(warnings) == 1 and "cannot deletecollection" in warnings[0]


SECRETS = "v1/secrets"
QUALITY_POLICY = {
    **FAST_POLICY,
    "spec": {**FAST_POLICY["spec"], "analysis": {"interval": "1s", "metrics": {"quality": {"enabled": True}}}},
}


def feedback_secret(cluster: Any) -> dict[str, Any] | None:
    try:
        obj = cluster.objects[SECRETS, "ml", "wine-feedback"]
    except KeyError:
        return None
    return None if obj.deleted else dict(obj.raw)


async def test_quality_creates_the_feedback_keys_once_and_never_rewrites_them(
    cluster: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    assert feedback_secret(cluster) is None  # quality off (the default): no keys, the gateway mints no ids

    cluster.objects["mlrollout.io/v1alpha1/rolloutpolicies", None, "fast"] = QUALITY_POLICY
    caplog.set_level(logging.INFO)
    await run(rec, t0 + timedelta(seconds=1))
    secret = feedback_secret(cluster)
    assert secret is not None and secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    keys = json.loads(secret["stringData"]["keys"])
    assert list(keys) == ["1"] and len(base64.b64decode(keys["1"])) == 32
    assert keys["1"] not in caplog.text  # the key is never logged

    # someone rotates (adds key 2); a new operator process must not replace the Secret with a fresh key
    rotated = {**secret, "stringData": {"keys": json.dumps({**keys, "2": base64.b64encode(b"k" * 32).decode()})}}
    cluster.objects[SECRETS, "ml", "wine-feedback"] = rotated
    fresh = reconciler(cluster, tmp_path)
    await run(fresh, t0 + timedelta(seconds=2))
    assert json.loads(feedback_secret(cluster)["stringData"]["keys"]) == json.loads(rotated["stringData"]["keys"])  # type: ignore[index]


class NoSecretRights(Kube):
    """A Role from before feedback existed: creating the Secret is refused."""

    def create(self, manifest: dict[str, Any]) -> bool:
        raise api_exception(403, "Forbidden", '{"message": "cannot create secrets"}')


async def test_rbac_without_secrets_warns_once_and_rolls_out_without_labels(
    cluster: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.objects["mlrollout.io/v1alpha1/rolloutpolicies", None, "fast"] = QUALITY_POLICY
    rec = reconciler(cluster, tmp_path)
    rec.kube = NoSecretRights(rec.kube.api)  # type: ignore[attr-defined]
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    for seconds in (0, 1):
        out = await run(rec, t0 + timedelta(seconds=seconds))
        assert out is not None and out.phase == "Pending"
    warnings = [r.getMessage() for r in caplog.records if "feedback keys not created" in r.getMessage()]
    assert len(warnings) == 1 and "cannot create secrets" in warnings[0]


class RecordingVerdicts:
    """A verdict source that keeps what each look was asked about."""

    def __init__(self) -> None:
        self.targets: list[AnalysisTarget] = []

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: StepEvidence
    ) -> Judgement:
        self.targets.append(target)
        return Judgement(verdict="continue", reason="recorded")


@pytest.mark.parametrize(("traffic", "sticky"), [({}, False), ({"traffic": {"sticky": {"header": "x-user"}}}, True)])
async def test_each_look_asks_about_the_split_the_route_table_states(
    cluster: Any, traffic: dict[str, Any], sticky: bool
) -> None:
    """The configured split reaches the snapshot from status.traffic (a sticky key makes it an A/B split)."""
    api = client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))
    verdicts = RecordingVerdicts()
    rec = Reconciler(Kube(api), verdicts, OperatorSettings(serving_image=IMAGE, gateway_image="gw:test"))
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body(**traffic)["spec"]})
    await run(rec, t0)
    make_ready(cluster, f"wine-{revision_of(spec('1', 'a'), IMAGE).revision}")
    make_ready(cluster, "wine")
    await run(rec, t0 + timedelta(seconds=1))
    cluster.objects[MD, "ml", "wine"].patch(
        {"spec": md_body("2", "b", **traffic)["spec"], "metadata": {"generation": 2}}
    )
    await run(rec, t0 + timedelta(seconds=2))
    make_ready(cluster, f"wine-{revision_of(spec('2', 'b'), IMAGE).revision}")
    await run(rec, t0 + timedelta(seconds=3))  # the 20% canary starts
    await run(rec, t0 + timedelta(seconds=5))  # a look one interval later
    assert verdicts.targets and verdicts.targets[-1].split == Split(0.8, 0.2, 0.0, sticky)


class PassingVerdicts(RecordingVerdicts):
    """Every look passes its step (enough candidate requests for any minRequests here)."""

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: StepEvidence
    ) -> Judgement:
        self.targets.append(target)
        return Judgement(verdict="promote", reason="recorded", samples=Samples(stable=1000, candidate=1000))


async def test_each_look_asks_for_the_quality_design_its_step_configures(cluster: Any) -> None:
    """A shadow step then a canary: the shadow's looks are paired (pairs asked for, the 100 % mirror in the
    split), the canary's unpaired, each from the step's kind (looks.quality_design), never from the counts."""
    steps = [{"shadow": {"mirrorPercent": 100, "minRequests": 10}}, {"canary": {"weight": 20, "minRequests": 10}}]
    cluster.objects["mlrollout.io/v1alpha1/rolloutpolicies", None, "fast"].patch(
        {"spec": {"strategy": {"steps": steps}}}
    )
    api = client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))
    verdicts = PassingVerdicts()
    rec = Reconciler(Kube(api), verdicts, OperatorSettings(serving_image=IMAGE, gateway_image="gw:test"))
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    make_ready(cluster, f"wine-{revision_of(spec('1', 'a'), IMAGE).revision}")
    make_ready(cluster, "wine")
    await run(rec, t0 + timedelta(seconds=1))
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body("2", "b")["spec"], "metadata": {"generation": 2}})
    await run(rec, t0 + timedelta(seconds=2))
    make_ready(cluster, f"wine-{revision_of(spec('2', 'b'), IMAGE).revision}")
    await run(rec, t0 + timedelta(seconds=3))  # the shadow step starts
    await run(rec, t0 + timedelta(seconds=5))  # its look passes it: the canary starts
    await run(rec, t0 + timedelta(seconds=7))  # the canary's look
    seen = [(t.design, t.paired, t.split) for t in verdicts.targets]
    assert seen[:2] == [("paired", True, Split(1.0, 0.0, 1.0)), ("unpaired", False, Split(0.8, 0.2))], seen


async def test_a_mesh_provider_look_reads_model_servers_and_leaves_the_split_uncounted(cluster: Any) -> None:
    """istio: the look reads the model servers' series, says the split cannot be counted (no routed counts of
    ours to read) and status.routing lists the split check as not applied."""
    cluster.resources["networking.istio.io/v1/virtualservices"].kind = "VirtualService"
    api = client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))
    verdicts = RecordingVerdicts()
    rec = Reconciler(Kube(api), verdicts, OperatorSettings(serving_image=IMAGE, gateway_image="gw:test"))
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    mesh: dict[str, Any] = {"traffic": {"provider": "istio"}}
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body(**mesh)["spec"]})
    await run(rec, t0)
    make_ready(cluster, f"wine-{revision_of(spec('1', 'a'), IMAGE).revision}")
    await run(rec, t0 + timedelta(seconds=1))
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body("2", "b", **mesh)["spec"], "metadata": {"generation": 2}})
    await run(rec, t0 + timedelta(seconds=2))
    make_ready(cluster, f"wine-{revision_of(spec('2', 'b'), IMAGE).revision}")
    await run(rec, t0 + timedelta(seconds=3))  # the 20% canary starts
    out = await run(rec, t0 + timedelta(seconds=5))  # a look one interval later
    assert verdicts.targets, out
    target = verdicts.targets[-1]
    assert (target.source, target.gateway_in_path, target.paired, target.design) == ("model", False, False, "unpaired")
    assert target.split == Split(0.8, 0.2)  # configured; collect marks it uncounted (test_analysis_collect)
    routing = cluster.objects[MD, "ml", "wine"]["status"]["routing"]
    assert routing["provider"] == "istio"
    assert any(line.startswith("traffic-split check (istio routes): not checked") for line in routing["notApplied"])


async def test_a_gateway_api_look_counts_the_split_from_the_implementations_counter_when_given(cluster: Any) -> None:
    """gatewayAPI with the operator's per-backend counter (gatewayAPI.splitQuery: traefik): the look names the
    HTTPRoute's backendRefs (each revision's Service and port) for collect to count the split, and
    status.routing no longer lists the split check as not applied."""
    for kind in ("HTTPRoute", "Gateway"):
        cluster.resources[f"gateway.networking.k8s.io/v1/{kind.lower()}s"].kind = kind
    cluster.resources["gateway.networking.k8s.io/v1/gatewayclasses"].kind = "GatewayClass"
    api = client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))
    verdicts = RecordingVerdicts()
    settings = OperatorSettings.from_env({"MLROLLOUT_GATEWAYAPI_SPLIT_QUERY": "traefik"})
    rec = Reconciler(Kube(api), verdicts, dataclasses.replace(settings, serving_image=IMAGE, gateway_image="gw:t"))
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    provider: dict[str, Any] = {"traffic": {"provider": "gatewayAPI"}}
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body(**provider)["spec"]})
    await run(rec, t0)
    stable = revision_of(spec("1", "a"), IMAGE).revision
    make_ready(cluster, f"wine-{stable}")
    await run(rec, t0 + timedelta(seconds=1))
    body = md_body("2", "b", **provider)
    cluster.objects[MD, "ml", "wine"].patch({"spec": body["spec"], "metadata": {"generation": 2}})
    await run(rec, t0 + timedelta(seconds=2))
    candidate = revision_of(spec("2", "b"), IMAGE).revision
    make_ready(cluster, f"wine-{candidate}")
    await run(rec, t0 + timedelta(seconds=3))  # the 20% canary starts
    out = await run(rec, t0 + timedelta(seconds=5))  # a look one interval later
    assert verdicts.targets, out
    target = verdicts.targets[-1]
    assert (target.source, target.gateway_in_path, target.split) == ("model", False, Split(0.8, 0.2))
    port = body["spec"].get("serving", {}).get("port", 8080)
    assert target.backend_counter == BackendCounter(
        BACKEND_SPLIT_PRESETS["traefik"], (f"wine-{stable}", port), (f"wine-{candidate}", port)
    )
    routing = cluster.objects[MD, "ml", "wine"]["status"]["routing"]
    assert routing["provider"] == "gatewayAPI"
    assert not any(line.startswith("traffic-split check") for line in routing.get("notApplied") or []), routing


def operator_sample(name: str, **labels: str) -> float | None:
    """A sample of the operator's registry for the ModelDeployment ml/wine (None: no such label set)."""
    return metrics.REGISTRY.get_sample_value(name, {"namespace": "ml", "model_deployment": "wine", **labels})


def current_phase() -> dict[str, float | None]:
    return {phase: operator_sample("mlrollout_operator_phase", phase=phase) for phase in PHASES}


async def test_operator_series_follow_the_phase_count_looks_and_end_with_the_model_deployment(
    cluster: Any, tmp_path: Path
) -> None:
    """Through the reconcile the handlers call: the phase gauge is 1 for status.phase and 0 for every other
    phase, a look counts its verdict (and is timed under the same labels), a passed step is timed per
    ModelDeployment, and a deleted ModelDeployment's series are gone from the exposition."""
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    looks_before = operator_sample("mlrollout_operator_looks_total", verdict="promote") or 0.0
    timed_before = operator_sample("mlrollout_operator_analysis_duration_seconds_count", verdict="promote") or 0.0
    steps_before = operator_sample("mlrollout_operator_step_duration_seconds_count", kind="canary") or 0.0

    await run(rec, t0)
    assert current_phase() == {p: 1.0 if p == "Pending" else 0.0 for p in PHASES}
    make_ready(cluster, f"wine-{revision_of(spec('1', 'a'), IMAGE).revision}")
    make_ready(cluster, "wine")
    await run(rec, t0 + timedelta(seconds=1))
    assert current_phase() == {p: 1.0 if p == "Healthy" else 0.0 for p in PHASES}
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body("2", "b")["spec"], "metadata": {"generation": 2}})
    await run(rec, t0 + timedelta(seconds=2))
    assert current_phase() == {p: 1.0 if p == "Progressing" else 0.0 for p in PHASES}
    make_ready(cluster, f"wine-{revision_of(spec('2', 'b'), IMAGE).revision}")
    await run(rec, t0 + timedelta(seconds=3))  # the 20% canary starts
    assert operator_sample("mlrollout_operator_looks_total", verdict="promote") == looks_before  # no look due yet
    recorded = {"verdict": "promote", "reason": "recorded", "samples": {"stable": 500, "candidate": 50}}
    (tmp_path / "ml.wine.json").write_text(json.dumps(recorded))
    out = await run(rec, t0 + timedelta(seconds=5))  # a look one interval later: promoted
    assert out is not None and "Promoted" in out.events
    assert current_phase() == {p: 1.0 if p == "Healthy" else 0.0 for p in PHASES}
    assert operator_sample("mlrollout_operator_looks_total", verdict="promote") == looks_before + 1
    assert operator_sample("mlrollout_operator_analysis_duration_seconds_count", verdict="promote") == timed_before + 1
    assert operator_sample("mlrollout_operator_step_duration_seconds_count", kind="canary") == steps_before + 1

    # another ModelDeployment's series stay; ml/wine's go once it is gone (the handler may never be told)
    metrics.set_phase("ml", "other", "Healthy")
    cluster.objects[MD, "ml", "wine"].delete()
    assert await run(rec, t0 + timedelta(seconds=6)) is None
    exposed = [
        sample.labels
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("model_deployment") == "wine"
    ]
    assert exposed == []
    assert (
        metrics.REGISTRY.get_sample_value(
            "mlrollout_operator_phase", {"namespace": "ml", "model_deployment": "other", "phase": "Healthy"}
        )
        == 1.0
    )
    metrics.forget("ml", "other")


class EvidenceVerdicts:
    """A verdict source whose n-th look reports growing evidence on one metric."""

    def __init__(self) -> None:
        self.count = 0

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: StepEvidence
    ) -> Judgement:
        self.count += 1
        metric = MetricResult(
            name="errorRate", decision="inconclusive", estimate=TrackPair(stable=0.01, candidate=0.01 * self.count),
            effect=0.01 * (self.count - 1), interval=[-0.02, 0.01 * self.count], e_value=float(self.count),
            threshold=0.02,
        )  # fmt: skip
        return Judgement(verdict="continue", reason=f"look {self.count}", metrics=[metric], alpha=0.05)


async def test_each_look_of_the_rollout_is_kept_in_the_looks_configmap(cluster: Any) -> None:
    """Every look of the current candidate is appended to `<md>-looks` (owned by the ModelDeployment), with
    the split and step it was taken in; a pass without a look adds nothing."""
    api = client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))
    rec = Reconciler(Kube(api), EvidenceVerdicts(), OperatorSettings(serving_image=IMAGE, gateway_image="gw:test"))
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    make_ready(cluster, f"wine-{revision_of(spec('1', 'a'), IMAGE).revision}")
    make_ready(cluster, "wine")
    await run(rec, t0 + timedelta(seconds=1))
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body("2", "b")["spec"], "metadata": {"generation": 2}})
    await run(rec, t0 + timedelta(seconds=2))
    candidate = revision_of(spec("2", "b"), IMAGE).revision
    make_ready(cluster, f"wine-{candidate}")
    await run(rec, t0 + timedelta(seconds=3))  # the 20% canary starts
    for seconds in (5, 6, 7, 7):  # a look is due every second: the second pass at 7 s takes none
        await run(rec, t0 + timedelta(seconds=seconds))
    stored = cluster.objects["v1/configmaps", "ml", "wine-looks"]
    assert stored["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    history = lookhistory.decode(stored["data"]["looks.json"])
    assert history is not None and history.candidate == candidate
    assert [p.reason for p in history.looks] == ["look 1", "look 2", "look 3"]
    first = history.looks[0]
    assert (first.step_kind, first.stable_percent, first.candidate_percent, first.alpha) == ("canary", 80, 20, 0.05)
    assert [(m.name, m.candidate, m.e_value, m.interval) for m in history.looks[1].metrics] == [
        ("errorRate", 0.02, 2.0, (-0.02, 0.02))
    ]


HPAS = "autoscaling/v2/horizontalpodautoscalers"


def hpas(cluster: Any) -> set[str]:
    """Names of the HPAs the emulator holds (not deleted)."""
    return {
        key[2]
        for key in cluster.objects
        if (key[0].group, key[0].plural) == ("autoscaling", "horizontalpodautoscalers")
        and not cluster.objects[key].deleted
    }


async def test_an_hpa_whose_status_write_was_lost_is_deleted_when_autoscaling_is_switched_off(
    cluster: Any, tmp_path: Path
) -> None:
    """The HPA is applied, then the pass's status write loses a race (status never says autoscaling), then
    the user removes spec.autoscaling: the HPA must still go, or it keeps scaling the stable against the
    operator's spec.replicas."""
    cluster.resources[HPAS].kind = "HorizontalPodAutoscaler"
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    for name in [n for (res, ns, n) in list(cluster.objects.keys()) if res == DEPLOYMENTS]:
        make_ready(cluster, name)
        cluster.objects[DEPLOYMENTS, "ml", name].patch({"metadata": {"uid": f"uid-{name}"}})  # as an API server would
    out = await run(rec, t0 + timedelta(seconds=1))
    assert out is not None and out.phase == "Healthy"
    autoscaling = {"minReplicas": 1, "maxReplicas": 3, "metric": "requestsPerSecond", "target": 50}
    cluster.objects[MD, "ml", "wine"].patch({"metadata": {"generation": 2}, "spec": {"autoscaling": autoscaling}})
    kube = rec.kube
    rec.kube = ConflictOnce(kube.api)  # type: ignore[attr-defined]
    with pytest.raises(Conflict):
        await run(rec, t0 + timedelta(seconds=2))
    assert hpas(cluster) == {"wine"}
    assert "autoscaling" not in cluster.objects[MD, "ml", "wine"].get("status", {})
    cluster.objects[MD, "ml", "wine"].patch({"metadata": {"generation": 3}, "spec": {"autoscaling": None}})
    await run(rec, t0 + timedelta(seconds=3))
    assert hpas(cluster) == set()


def downloading_pod(cluster: Any, revision: str, name: str) -> None:
    """A scheduled pod of ``revision`` whose model server runs and is not ready (what the kubelet reports
    while the model downloads)."""
    cluster.objects["v1/pods", "ml", name] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "creationTimestamp": "2026-11-26T06:00:00Z",
                     "labels": {**naming.base_labels("wine", naming.SERVER_COMPONENT), naming.REVISION: revision}},
        "spec": {"nodeName": "node-1"},
        "status": {"containerStatuses": [{"name": naming.SERVER_CONTAINER, "ready": False, "restartCount": 0,
                                          "state": {"running": {"startedAt": "2026-11-26T06:00:01Z"}}}]},
    }  # fmt: skip


async def test_a_downloading_pods_log_tail_is_the_progress_in_status(cluster: Any, tmp_path: Path) -> None:
    """The log is asked for bounded (tailLines, limitBytes, one container) and its last progress line, written
    by the server's own formatter, is in the message while the revision is not ready; not asked once ready."""
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    rev1 = revision_of(spec("1", "a"), IMAGE).revision
    await run(rec, t0)
    downloading_pod(cluster, rev1, "wine-1-abc")
    line = startup.downloading("s3://m/wine.onnx", 412 << 20, 900 << 20, rate=8 << 20)
    record = logging.LogRecord("mlrollout_serving.server.download", logging.INFO, __file__, 1, "%s", (line,), None)
    tail = f"{logging.Formatter(startup.LOG_FORMAT).format(record)}\n".encode()
    log_path = "get /api/v1/namespaces/ml/pods/wine-1-abc/log"
    cluster[log_path] << tail
    out = await run(rec, t0 + timedelta(seconds=5))
    assert out is not None and out.phase == "Pending"
    message = cluster.objects[MD, "ml", "wine"]["status"]["message"]
    assert message == "revision 1 (1) starting; downloading the model: 412.0 of 900.0 MiB (45%)"
    [asked] = list(cluster[log_path])
    assert dict(asked.params) == {"container": "server", "tailLines": "20", "limitBytes": "8192"}
    make_ready(cluster, f"wine-{rev1}")
    await run(rec, t0 + timedelta(seconds=6))
    assert len(list(cluster[log_path])) == 1  # a ready track's pods are not asked


def kubelet_log(lines: list[str]) -> Any:
    """The kubelet's answer to a log read: the last `tailLines` lines, then at most `limitBytes` bytes of
    them from their start (the API reference: limitBytes "may not display a complete final line")."""

    def answer(request: Any) -> bytes:
        tail = lines[-int(request.params.get("tailLines", len(lines))) :]
        body = "".join(f"{line}\n" for line in tail).encode()
        return body[: int(request.params["limitBytes"])] if "limitBytes" in request.params else body

    return answer


async def test_a_log_tail_over_the_byte_limit_still_shows_the_newest_progress(cluster: Any, tmp_path: Path) -> None:
    """Long lines (a presigned https:// URI is often 1,000 characters): 20 of them pass limitBytes, which
    cuts the newest lines off the end of the tail, not the oldest off its start."""
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    rev1 = revision_of(spec("1", "a"), IMAGE).revision
    await run(rec, t0)
    downloading_pod(cluster, rev1, "wine-1-abc")
    uri = "https://models.example.com/wine.onnx?X-Amz-Signature=" + "a" * 900
    formatter = logging.Formatter(startup.LOG_FORMAT)
    lines = []
    for mib in range(10, 31):
        line = startup.downloading(uri, mib << 20, 100 << 20, rate=8 << 20)
        record = logging.LogRecord("mlrollout_serving.server.download", logging.INFO, __file__, 1, "%s", (line,), None)
        lines.append(formatter.format(record))
    log_path = "get /api/v1/namespaces/ml/pods/wine-1-abc/log"
    cluster[log_path] << kubelet_log(lines)
    await run(rec, t0 + timedelta(seconds=5))
    message = cluster.objects[MD, "ml", "wine"]["status"]["message"]
    assert message.endswith("downloading the model: 30.0 of 100.0 MiB (30%)"), message
    assert [dict(r.params)["tailLines"] for r in cluster[log_path]] == ["20", "5"]  # still bounded: 2 reads


def test_a_log_read_was_cut_when_it_reached_the_limit_or_ends_inside_a_line() -> None:
    assert not cut_short("", 8192)
    assert not cut_short("a line\nanother\n", 8192)
    assert cut_short("a line\nano", 8192)
    assert cut_short("x" * 8191 + "\n", 8192)


class NoPodLogRights(Kube):
    """A hand-made Role from before the operator read logs: pods/log is refused."""

    def pod_log_tail(self, namespace: str, pod: str, container: str) -> str:
        raise api_exception(403, "Forbidden", '{"message": "cannot get resource pods/log"}')


async def test_rbac_without_pod_logs_warns_once_and_shows_no_progress(
    cluster: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = reconciler(cluster, tmp_path)
    rec.kube = NoPodLogRights(rec.kube.api)  # type: ignore[attr-defined]
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    downloading_pod(cluster, revision_of(spec("1", "a"), IMAGE).revision, "wine-1-abc")
    for seconds in (1, 2):
        out = await run(rec, t0 + timedelta(seconds=seconds))
        assert out is not None and out.phase == "Pending"
    assert cluster.objects[MD, "ml", "wine"]["status"]["message"] == "revision 1 (1) starting"
    warnings = [r.getMessage() for r in caplog.records if "start-up progress not shown" in r.getMessage()]
    assert len(warnings) == 1 and "pods/log" in warnings[0]


class CountingKube(Kube):
    """The real adapter, counting the writes a pass sends."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.applied: list[tuple[str, str]] = []
        self.cleanups = 0

    def apply(self, manifest: dict[str, Any], field_manager: str = naming.FIELD_MANAGER) -> dict[str, Any] | None:
        self.applied.append((manifest["kind"], manifest["metadata"]["name"]))
        return super().apply(manifest, field_manager)

    def delete_labelled(self, api_version: str, kind: str, namespace: str, selector: str) -> None:
        self.cleanups += 1
        super().delete_labelled(api_version, kind, namespace, selector)

    def taken(self) -> tuple[list[tuple[str, str]], int]:
        out = (self.applied, self.cleanups)
        self.applied, self.cleanups = [], 0
        return out


async def test_an_unchanged_pass_sends_no_apply_and_drift_is_repaired_within_the_resync_interval(
    cluster: Any, tmp_path: Path
) -> None:
    """Given a ModelDeployment whose children were applied, When nothing changed, Then the next pass sends
    no apply and no NetworkPolicy cleanup; When someone deletes a Deployment and a Service, Then the next
    pass applies them (both are listed by every pass: a Service gone is an outage); When someone deletes the
    route ConfigMap, Then it is applied again once the resync interval has passed, with every other child;
    a new operator process applies everything."""
    rec = reconciler(cluster, tmp_path)
    kube = rec.kube = CountingKube(rec.kube.api)  # type: ignore[attr-defined]
    clock = [1000.0]
    rec.clock = lambda: clock[0]
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    rev1 = revision_of(spec("1", "a"), IMAGE).revision
    await run(rec, t0)
    first, cleanups = kube.taken()
    assert ("Deployment", f"wine-{rev1}") in first and ("ConfigMap", "wine-routes") in first and cleanups == 1
    make_ready(cluster, f"wine-{rev1}")
    make_ready(cluster, "wine")
    out = await run(rec, t0 + timedelta(seconds=5))  # the generations the emulator now reports differ
    assert out is not None and out.phase == "Healthy" and out.idle
    kube.taken()

    clock[0] += 10
    out = await run(rec, t0 + timedelta(seconds=15))
    assert out is not None and out.phase == "Healthy"
    assert kube.taken() == ([], 0)  # nothing changed: nothing sent

    cluster.objects[DEPLOYMENTS, "ml", "wine"].delete()
    cluster.objects["v1/services", "ml", "wine"].delete()
    cluster.objects["v1/configmaps", "ml", "wine-routes"].delete()
    clock[0] += 10
    await run(rec, t0 + timedelta(seconds=25))
    assert sorted(kube.taken()[0]) == [("Deployment", "wine"), ("Service", "wine")]  # at once; the routes not yet
    assert not cluster.objects["v1/services", "ml", "wine"].deleted
    assert cluster.objects["v1/configmaps", "ml", "wine-routes"].deleted  # not observed by a pass: the resync
    make_ready(cluster, "wine")

    clock[0] += rec.settings.resync_interval
    await run(rec, t0 + timedelta(seconds=30 + rec.settings.resync_interval))
    applied_again, cleanups = kube.taken()
    assert ("ConfigMap", "wine-routes") in applied_again and ("Service", "wine") in applied_again and cleanups == 1
    assert not cluster.objects["v1/configmaps", "ml", "wine-routes"].deleted

    restarted = reconciler(cluster, tmp_path)  # a restart forgets: the first pass applies everything
    kube2 = restarted.kube = CountingKube(restarted.kube.api)  # type: ignore[attr-defined]
    await run(restarted, t0 + timedelta(seconds=40 + rec.settings.resync_interval))
    assert set(first) <= set(kube2.taken()[0])


async def test_a_route_change_is_applied_at_once_and_switching_policies_off_deletes_them_once(
    cluster: Any, tmp_path: Path
) -> None:
    """A spec change that changes the route table is applied in the pass that sees it; NetworkPolicies
    switched on and off again are deleted once, and applied again when switched back on."""
    rec = reconciler(cluster, tmp_path)
    kube = rec.kube = CountingKube(rec.kube.api)  # type: ignore[attr-defined]
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    kube.taken()
    cluster.objects[MD, "ml", "wine"].patch({"spec": {"traffic": {"sticky": {"header": "x-user"}}}})
    await run(rec, t0 + timedelta(seconds=1))
    sent, _ = kube.taken()
    assert ("ConfigMap", "wine-routes") in sent
    assert "x-user" in cluster.objects["v1/configmaps", "ml", "wine-routes"]["data"]["routes.yaml"]

    cluster.objects[MD, "ml", "wine"].patch({"spec": {"networkPolicy": {"enabled": True}}})
    await run(rec, t0 + timedelta(seconds=2))
    assert network_policies(cluster) == {"wine-gateway", "wine-model-server"}
    cluster.objects[MD, "ml", "wine"].patch({"spec": {"networkPolicy": {"enabled": False}}})
    for seconds in (3, 4):
        await run(rec, t0 + timedelta(seconds=seconds))
    assert network_policies(cluster) == set()
    assert kube.taken()[1] == 1  # one deletecollection, not one per pass
    cluster.objects[MD, "ml", "wine"].patch({"spec": {"networkPolicy": {"enabled": True}}})
    await run(rec, t0 + timedelta(seconds=5))
    assert network_policies(cluster) == {"wine-gateway", "wine-model-server"}  # the memo forgot the deleted


class RecordingKube(Kube):
    """The real adapter, recording each apply (kind, name, field manager, body) and each delete."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.applies: list[tuple[str, str, str, dict[str, Any]]] = []
        self.deletes: list[tuple[str, str]] = []

    def apply(self, manifest: dict[str, Any], field_manager: str = naming.FIELD_MANAGER) -> dict[str, Any] | None:
        self.applies.append((manifest["kind"], manifest["metadata"]["name"], field_manager, manifest))
        return super().apply(manifest, field_manager)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.deletes.append((kind, name))
        super().delete(api_version, kind, namespace, name)

    def taken(self) -> tuple[list[tuple[str, str, str, dict[str, Any]]], list[tuple[str, str]]]:
        out = (self.applies, self.deletes)
        self.applies, self.deletes = [], []
        return out


def gateway_applies(applies: list[tuple[str, str, str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """field manager -> the body it applied to the gateway Deployment `wine`."""
    return {manager: body for kind, name, manager, body in applies if (kind, name) == ("Deployment", "wine")}


def owned_by(manager: str) -> list[dict[str, Any]]:
    """managedFields as the API server writes them: `manager` owns spec.replicas."""
    return [{"manager": manager, "operation": "Update" if "controller" in manager else "Apply",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}}]  # fmt: skip


async def test_the_gateway_hpa_is_applied_owned_handed_the_replicas_and_deleted_once_when_switched_off(
    cluster: Any, tmp_path: Path
) -> None:
    """Given spec.gateway.autoscaling, Then the HPA `<md>-gateway` targets the gateway Deployment, owned by
    the ModelDeployment, and the new gateway starts at minReplicas; When the operator still owns the field,
    Then a second manager sets it and the operator's apply leaves it out; When the HPA scaled, Then nothing
    about replicas is sent; When autoscaling is switched off, Then the HPA is deleted once (not every pass)
    and gateway.replicas is applied again."""
    cluster.resources[HPAS].kind = "HorizontalPodAutoscaler"
    gateway_hpa = {"minReplicas": 2, "maxReplicas": 5, "metric": "concurrency", "target": 8}
    cluster.objects[MD, "ml", "wine"].patch({"spec": {"gateway": {"autoscaling": gateway_hpa}}})
    rec = reconciler(cluster, tmp_path)
    kube = rec.kube = RecordingKube(rec.kube.api)  # type: ignore[attr-defined]
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    applies, deletes = kube.taken()
    assert ("HorizontalPodAutoscaler", "wine-gateway") not in deletes
    assert hpas(cluster) == {"wine-gateway"}  # the track has no HPA: spec.autoscaling is not set
    hpa = cluster.objects[HPAS, "ml", "wine-gateway"]
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "wine"}
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "mlrollout_gateway_concurrency"
    assert gateway_applies(applies)[naming.FIELD_MANAGER]["spec"]["replicas"] == 2  # created at minReplicas

    # the server says the operator's apply owns spec.replicas: hand it over, without a dip
    cluster.objects[DEPLOYMENTS, "ml", "wine"].patch({"metadata": {"managedFields": owned_by(naming.FIELD_MANAGER)}})
    await run(rec, t0 + timedelta(seconds=1))
    sent = gateway_applies(kube.taken()[0])
    assert sent[naming.REPLICAS_FIELD_MANAGER]["spec"] == {"replicas": 2}
    assert "replicas" not in sent[naming.FIELD_MANAGER]["spec"]
    assert set(sent[naming.FIELD_MANAGER]["spec"]) == {"selector", "template"}

    # the HPA scaled it to 4 (its field now): the operator sends nothing about replicas and keeps the 4
    cluster.objects[DEPLOYMENTS, "ml", "wine"].patch(
        {"metadata": {"generation": 7, "managedFields": owned_by("kube-controller-manager")}, "spec": {"replicas": 4}}
    )
    await run(rec, t0 + timedelta(seconds=2))
    sent = gateway_applies(kube.taken()[0])
    assert naming.REPLICAS_FIELD_MANAGER not in sent
    assert all("replicas" not in body["spec"] for body in sent.values())
    assert cluster.objects[DEPLOYMENTS, "ml", "wine"]["spec"]["replicas"] == 4

    # switched off: the HPA goes (once per generation, not every pass) and gateway.replicas rules again
    cluster.objects[MD, "ml", "wine"].patch(
        {"metadata": {"generation": 2}, "spec": {"gateway": {"autoscaling": None, "replicas": 3}}}
    )
    await run(rec, t0 + timedelta(seconds=3))
    applies, deletes = kube.taken()
    assert deletes.count(("HorizontalPodAutoscaler", "wine-gateway")) == 1
    assert hpas(cluster) == set()
    assert gateway_applies(applies)[naming.FIELD_MANAGER]["spec"]["replicas"] == 3
    await run(rec, t0 + timedelta(seconds=4))
    assert ("HorizontalPodAutoscaler", "wine-gateway") not in kube.taken()[1]

    # switched on again: applied again (the memo forgot the deleted HPA)
    cluster.objects[MD, "ml", "wine"].patch(
        {"metadata": {"generation": 3}, "spec": {"gateway": {"autoscaling": gateway_hpa, "replicas": None}}}
    )
    await run(rec, t0 + timedelta(seconds=5))
    assert hpas(cluster) == {"wine-gateway"}


async def test_the_operators_gateway_autoscaling_default_applies_unless_replicas_are_fixed(
    cluster: Any, tmp_path: Path
) -> None:
    cluster.resources[HPAS].kind = "HorizontalPodAutoscaler"
    api = client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))
    default = GatewayAutoscaling(min_replicas=3, max_replicas=9, metric="requestsPerSecond", target=150)
    settings = OperatorSettings(serving_image=IMAGE, gateway_image="gw:test", gateway_autoscaling=default)
    rec = Reconciler(Kube(api), RecordedVerdicts(str(tmp_path)), settings)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    hpa = cluster.objects[HPAS, "ml", "wine-gateway"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "mlrollout_gateway_requests_per_second"
    assert cluster.objects[DEPLOYMENTS, "ml", "wine"]["spec"]["replicas"] == 3
    cluster.objects[MD, "ml", "wine"].patch({"metadata": {"generation": 2}, "spec": {"gateway": {"replicas": 1}}})
    await run(rec, t0 + timedelta(seconds=1))
    assert hpas(cluster) == set()


class NoGatewayHpaDelete(Kube):
    """A hand-made Role that may not delete the gateway's HPA."""

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        if (kind, name) == ("HorizontalPodAutoscaler", "wine-gateway"):
            raise api_exception(403, "Forbidden", '{"message": "cannot delete horizontalpodautoscalers"}')
        super().delete(api_version, kind, namespace, name)


async def test_rbac_without_the_gateway_hpa_delete_warns_once_per_generation_and_rolls_out(
    cluster: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.resources[HPAS].kind = "HorizontalPodAutoscaler"
    rec = reconciler(cluster, tmp_path)
    rec.kube = NoGatewayHpaDelete(rec.kube.api)  # type: ignore[attr-defined]
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    for seconds in (0, 1, 2):
        out = await run(rec, t0 + timedelta(seconds=seconds))
        assert out is not None and out.phase == "Pending"
    warnings = [r.getMessage() for r in caplog.records if "gateway's HPA wine-gateway not cleaned up" in r.getMessage()]
    assert len(warnings) == 1 and "cannot delete" in warnings[0]


async def test_the_stable_and_the_gateway_each_get_their_own_hpa(cluster: Any, tmp_path: Path) -> None:
    cluster.resources[HPAS].kind = "HorizontalPodAutoscaler"
    track = {"minReplicas": 3, "maxReplicas": 8, "metric": "requestsPerSecond", "target": 20}
    gateway = {"minReplicas": 2, "maxReplicas": 4, "metric": "requestsPerSecond", "target": 300}
    cluster.objects[MD, "ml", "wine"].patch({"spec": {"autoscaling": track, "gateway": {"autoscaling": gateway}}})
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    await run(rec, t0)
    for name in [n for (res, ns, n) in list(cluster.objects.keys()) if res == DEPLOYMENTS]:
        make_ready(cluster, name)
        cluster.objects[DEPLOYMENTS, "ml", name].patch({"metadata": {"uid": f"uid-{name}"}})  # as an API server would
    await run(rec, t0 + timedelta(seconds=1))
    rev = revision_of(spec("1", "a"), IMAGE).revision
    assert hpas(cluster) == {"wine", "wine-gateway"}
    stable, gw = cluster.objects[HPAS, "ml", "wine"], cluster.objects[HPAS, "ml", "wine-gateway"]
    assert stable["spec"]["scaleTargetRef"]["name"] == f"wine-{rev}"
    assert stable["spec"]["metrics"][0]["pods"]["metric"]["name"] == "mlrollout_model_inference_requests_per_second"
    assert gw["spec"]["scaleTargetRef"]["name"] == "wine"
    assert gw["spec"]["metrics"][0]["pods"]["metric"]["name"] == "mlrollout_gateway_requests_per_second"
    # each Deployment starts at its own HPA's minReplicas
    assert cluster.objects[DEPLOYMENTS, "ml", f"wine-{rev}"]["spec"]["replicas"] == 3
    assert cluster.objects[DEPLOYMENTS, "ml", "wine"]["spec"]["replicas"] == 2


def _hpa_says(cluster: Any, active: str, current: int, desired: int, message: str = "") -> None:
    """What kube-controller-manager's HPA controller writes into the gateway HPA's status."""
    condition = {"type": "ScalingActive", "status": active, "reason": "FailedGetPodsMetric", "message": message}
    cluster.objects[HPAS, "ml", "wine-gateway"].patch(
        {"status": {"currentReplicas": current, "desiredReplicas": desired, "conditions": [condition]}}
    )


async def test_the_gateway_hpas_counts_and_a_metric_it_cannot_read_are_in_status(cluster: Any, tmp_path: Path) -> None:
    """Given spec.gateway.autoscaling, Then status.gatewayAutoscaling copies the gateway HPA's counts and its
    ScalingActive, the condition GatewayScalingActive says it (Unknown before the HPA reports, False with
    MetricUnavailable and a Warning Event when it cannot read its metric, True with a Normal Event when it
    can again), beside the stable's ScalingActive, which is absent without spec.autoscaling; When the gateway's
    autoscaling is switched off, Then both the status field and the condition go."""
    cluster.resources[HPAS].kind = "HorizontalPodAutoscaler"
    gateway_hpa = {"minReplicas": 2, "maxReplicas": 5, "metric": "requestsPerSecond", "target": 100}
    cluster.objects[MD, "ml", "wine"].patch({"spec": {"gateway": {"autoscaling": gateway_hpa}}})
    rec = reconciler(cluster, tmp_path)
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)

    def status() -> dict[str, Any]:
        st: dict[str, Any] = cluster.objects[MD, "ml", "wine"]["status"]
        return st

    def condition(kind: str) -> dict[str, Any] | None:
        return next((c for c in status().get("conditions") or [] if c["type"] == kind), None)

    def events(reason: str) -> list[dict[str, Any]]:
        return [e for e in getattr(cluster, "posted_events", []) if e["reason"] == reason]

    await run(rec, t0)
    assert status()["gatewayAutoscaling"] == {"target": "wine", "scalingActive": "Unknown", "message": ""}
    pending = condition("GatewayScalingActive")
    assert pending is not None and (pending["status"], pending["reason"]) == ("Unknown", "HPAPending")
    assert condition("ScalingActive") is None and "autoscaling" not in status()

    words = (
        "the HPA was unable to compute the replica count: unable to get metric mlrollout_gateway_requests_per_second"
    )
    _hpa_says(cluster, "False", 2, 2, words)
    await run(rec, t0 + timedelta(seconds=1))
    assert status()["gatewayAutoscaling"] == {
        "target": "wine", "currentReplicas": 2, "desiredReplicas": 2, "scalingActive": "False",
        "message": f"FailedGetPodsMetric: {words}",
    }  # fmt: skip
    inactive = condition("GatewayScalingActive")
    assert inactive is not None and (inactive["status"], inactive["reason"]) == ("False", "MetricUnavailable")
    assert inactive["message"].startswith("the gateway's HPA cannot scale wine, its replicas stay where they are")
    [warning] = events("GatewayAutoscalingInactive")
    assert warning["type"] == "Warning"
    await run(rec, t0 + timedelta(seconds=2))
    assert len(events("GatewayAutoscalingInactive")) == 1  # said once, not every pass

    _hpa_says(cluster, "True", 3, 4)
    await run(rec, t0 + timedelta(seconds=3))
    assert (status()["gatewayAutoscaling"]["currentReplicas"], status()["gatewayAutoscaling"]["desiredReplicas"]) == (
        3,
        4,
    )
    active = condition("GatewayScalingActive")
    assert active is not None and (active["status"], active["reason"]) == ("True", "HPAScaling")
    assert [e["type"] for e in events("GatewayAutoscalingActive")] == ["Normal"]

    cluster.objects[MD, "ml", "wine"].patch(
        {"metadata": {"generation": 2}, "spec": {"gateway": {"autoscaling": None, "replicas": 2}}}
    )
    await run(rec, t0 + timedelta(seconds=4))
    assert "gatewayAutoscaling" not in status()
    assert condition("GatewayScalingActive") is None
