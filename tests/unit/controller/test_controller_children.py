"""Pure builders: children manifests, the builtin router's route table, the provider registry."""

from __future__ import annotations

import dataclasses
import os
from typing import Any
from unittest import mock

import pytest
import yaml
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.api.fallbackpolicy import FallbackPolicySpec
from mlrollout.controller import children, naming
from mlrollout.controller.settings import OperatorSettings
from mlrollout.policy import fallback_settings
from mlrollout.revision import revision_of, template_of
from mlrollout.traffic.base import Backend, NullRouter, RouteIntent
from mlrollout.traffic.builtin import BuiltinRouter
from mlrollout.traffic.registry import UnknownProvider, router_for
from mlrollout_serving.contract.routes import BackupModel, Sticky
from mlrollout_serving.gateway import cli as gateway_cli
from mlrollout_serving.gateway.routes import route_table_from_configmap
from mlrollout_serving.server import config as server_config

MD: dict[str, Any] = {
    "apiVersion": "mlrollout.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "wine", "namespace": "ml", "uid": "1234-uid"},
}


def env_of(dep: dict[str, Any]) -> dict[str, str]:
    container = dep["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_track_deployment_runs_the_model_server_with_model_digest_profile_and_identity() -> None:
    s = spec("2", "b", resources={"limits": {"memory": "512Mi"}})
    s.model.reference_profile = "file:///profiles/wine.json"
    rev = revision_of(s, IMAGE)
    dep = children.track_deployment(MD, rev, "candidate", replicas=3)
    assert dep["metadata"]["name"] == f"wine-{rev.revision}"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    assert dep["spec"]["replicas"] == 3
    env = env_of(dep)
    assert env["MLROLLOUT_MODEL_URI"] == "file:///models/wine-2.onnx"
    assert env["MLROLLOUT_MODEL_SHA256"] == "b" * 64
    assert env["MLROLLOUT_REFERENCE_PROFILE"] == "file:///profiles/wine.json"
    assert (env["MLROLLOUT_NAMESPACE"], env["MLROLLOUT_MODEL_DEPLOYMENT"]) == ("ml", "wine")
    assert (env["MLROLLOUT_TRACK"], env["MLROLLOUT_REVISION"]) == ("candidate", rev.revision)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["command"] == ["mlrollout-serve"]
    assert container["resources"] == {"limits": {"memory": "512Mi"}}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # the model server reads what the operator sets: its own parser, given the container's environment
    settings = server_config.parse([], env=env)
    assert (settings.model_uri, settings.sha256, settings.port) == ("file:///models/wine-2.onnx", "b" * 64, 8080)
    assert settings.identity == {"namespace": "ml", "model_deployment": "wine", "track": "candidate",
                                 "revision": rev.revision}  # fmt: skip
    assert settings.termination_log == container["terminationMessagePath"] == "/dev/termination-log"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels[naming.TRACK] == "candidate" and labels[naming.REVISION] == rev.revision
    # the selector must not contain the track: relabelling on promotion keeps the same pods selected
    assert naming.TRACK not in dep["spec"]["selector"]["matchLabels"]


def test_promotion_relabels_without_renaming() -> None:
    rev = revision_of(spec("2", "b"), IMAGE)
    cand = children.track_deployment(MD, rev, "candidate", 1)
    stable = children.track_deployment(MD, rev, "stable", 1)
    assert cand["metadata"]["name"] == stable["metadata"]["name"]
    assert cand["spec"]["selector"] == stable["spec"]["selector"]
    assert env_of(stable)["MLROLLOUT_TRACK"] == "stable"


def test_pvc_uri_becomes_a_read_only_claim_mount() -> None:
    s = spec("2", "b")
    s.model.uri = "pvc://models/wine/v2.onnx"
    s.model.reference_profile = "pvc://models/wine/profile.json"
    dep = children.track_deployment(MD, revision_of(s, IMAGE), "stable", 1)
    pod = dep["spec"]["template"]["spec"]
    claim = {"name": "claim-0", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    assert pod["volumes"][0] == claim and len(pod["volumes"]) == 2  # the claim (once) and /tmp
    assert {"name": "claim-0", "mountPath": "/mnt/models/models", "readOnly": True} in pod["containers"][0][
        "volumeMounts"
    ]
    assert env_of(dep)["MLROLLOUT_MODEL_URI"] == "file:///mnt/models/models/wine/v2.onnx"
    assert env_of(dep)["MLROLLOUT_REFERENCE_PROFILE"] == "file:///mnt/models/models/wine/profile.json"


def test_gateway_children_are_named_after_the_model_deployment_with_least_privilege() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in children.gateway_children(MD, OperatorSettings())}
    assert set(objs) == {
        ("ServiceAccount", "wine-gateway"),
        ("Role", "wine-gateway"),
        ("RoleBinding", "wine-gateway"),
        ("Deployment", "wine"),
        ("Service", "wine"),
    }
    rules = objs[("Role", "wine-gateway")]["rules"]
    assert rules == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["wine-routes"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    gw = objs[("Deployment", "wine")]["spec"]["template"]["spec"]
    assert gw["serviceAccountName"] == "wine-gateway"
    # the gateway reads what the operator sets: its own parser, given the container's environment
    env = {e["name"]: e["value"] for e in gw["containers"][0]["env"]}
    with mock.patch.dict(os.environ, env, clear=True):
        args = gateway_cli.parse_args([])
    assert (args.routes_configmap, args.namespace, args.model_deployment) == ("wine-routes", "ml", "wine")
    assert args.port == gw["containers"][0]["ports"][0]["containerPort"]
    for obj in objs.values():
        assert obj["metadata"]["ownerReferences"][0]["name"] == "wine"
        assert obj["metadata"]["labels"][naming.MANAGED_BY] == "mlrollout"


def test_static_children_include_a_pdb_and_a_service_monitor_only_when_asked() -> None:
    kinds = [o["kind"] for o in children.static_children(MD, OperatorSettings(), with_service_monitor=False)]
    assert "PodDisruptionBudget" in kinds and "ServiceMonitor" not in kinds
    kinds = [o["kind"] for o in children.static_children(MD, OperatorSettings(), with_service_monitor=True)]
    assert "ServiceMonitor" in kinds


def test_revision_hash_ignores_replicas_and_policy_but_not_the_model_image_or_serving() -> None:
    base = revision_of(spec("1", "a"), IMAGE).revision
    assert revision_of(spec("1", "a", replicas=7, paused=True, rolloutPolicyRef={"name": "x"}), IMAGE).revision == base
    assert revision_of(spec("1", "a", traffic={"provider": "istio"}), IMAGE).revision == base
    assert revision_of(spec("1", "b"), IMAGE).revision != base
    assert revision_of(spec("1", "a"), "other:image").revision != base
    assert revision_of(spec("1", "a", image=IMAGE), "other:image").revision == base  # explicit image wins
    assert revision_of(spec("1", "a", serving={"port": 9000}), IMAGE).revision != base
    assert revision_of(spec("1", "a", resources={"requests": {"cpu": "1"}}), IMAGE).revision != base
    assert template_of(spec("1", "a"), IMAGE).from_json(template_of(spec("1", "a"), IMAGE).to_json()).image == IMAGE


# -- routers -----------------------------------------------------------------------------------------------

STABLE = Backend("wine-aaaa", 8080, "aaaa")
CANDIDATE = Backend("wine-bbbb", 8080, "bbbb")


def intent(**changes: Any) -> RouteIntent:
    base = RouteIntent(
        namespace="ml",
        name="wine",
        stable=STABLE,
        candidate=CANDIDATE,
        candidate_weight=0,
        mirror_percent=0,
        version=4,
        owner=children.owner_reference(MD),
        labels=naming.routing_labels("wine"),
    )
    return dataclasses.replace(base, **changes)


def table(i: RouteIntent) -> Any:
    [cm] = BuiltinRouter().manifests(i)
    assert cm["metadata"]["name"] == "wine-routes" and cm["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    return route_table_from_configmap(cm)


def test_builtin_router_writes_a_table_the_gateway_accepts_for_each_phase() -> None:
    t = table(intent(candidate=None))
    assert set(t.tracks) == {"stable"} and t.tracks["stable"].weight == 100 and t.mirror is None
    t = table(intent(mirror_percent=100))
    assert set(t.tracks) == {"stable"} and t.mirror is not None and t.mirror.percent == 100
    assert t.mirror.upstream == "http://wine-bbbb.ml.svc:8080" and t.mirror.revision == "bbbb"
    t = table(intent(candidate_weight=25))
    assert t.tracks["stable"].weight == 75 and t.tracks["candidate"].weight == 25 and t.version == 4
    t = table(intent(mode="blueGreen", mirror_percent=50))
    assert t.mode == "blueGreen" and t.tracks["stable"].weight == 100
    t = table(intent(mode="ab", sticky=Sticky(header="X-User"), candidate_weight=50))
    assert t.sticky is not None and t.sticky.header == "x-user"


def test_builtin_router_carries_the_fallback_policy() -> None:
    spec_ = FallbackPolicySpec.model_validate(
        {
            "requestTimeout": "750ms",
            "circuitBreaker": {"consecutiveFailures": 3, "openDuration": "10s"},
            "chain": [{"action": "stable"}, {"action": "backup", "backup": "wine-simple"}, {"action": "refuse"}],
        }
    )
    backup_url = naming.gateway_url("ml", "wine-simple")
    assert backup_url == "http://wine-simple.ml.svc:8080"
    t = table(
        intent(fallback=fallback_settings(spec_, {"wine-simple": BackupModel(name="wine-simple", upstream=backup_url)}))
    )
    assert t.fallback.request_timeout_seconds == 0.75
    assert t.fallback.circuit_breaker.consecutive_failures == 3
    assert [s.action for s in t.fallback.chain] == ["stable", "backup", "refuse"]
    backup = t.fallback.chain[1].backup
    assert backup is not None and backup.upstream == "http://wine-simple.ml.svc:8080"
    assert backup.served_name == "wine-simple"  # no model name known: the ModelDeployment's name


def test_backup_is_called_by_the_model_name_it_serves() -> None:
    spec_ = FallbackPolicySpec.model_validate({"chain": [{"action": "backup", "backup": "wine-simple"}]})
    lite = BackupModel(name="wine-simple", upstream=naming.gateway_url("ml", "wine-simple"), model_name="wine-lite")
    t = table(intent(fallback=fallback_settings(spec_, {"wine-simple": lite})))
    backup = t.fallback.chain[0].backup
    assert backup is not None and backup.served_name == "wine-lite"


def test_refusals_say_what_the_policy_says_and_low_confidence_may_go_to_a_backup() -> None:
    spec_ = FallbackPolicySpec.model_validate(
        {
            "chain": [{"action": "refuse", "message": "wine is resting; try later"}],
            "confidenceThreshold": 0.6,
            "lowConfidenceAction": {"action": "backup", "backup": "wine-simple"},
        }
    )
    simple = BackupModel(name="wine-simple", upstream=naming.gateway_url("ml", "wine-simple"))
    t = table(intent(fallback=fallback_settings(spec_, {"wine-simple": simple})))
    assert t.fallback.chain[0].message == "wine is resting; try later"
    low = t.fallback.low_confidence_action
    assert low is not None and low.backup == simple


def test_builtin_router_writes_nothing_without_stable() -> None:
    assert BuiltinRouter().manifests(intent(stable=None)) == []


def test_registry_maps_provider_names_to_routers() -> None:
    assert isinstance(router_for("builtin"), BuiltinRouter)
    assert isinstance(router_for("null"), NullRouter)
    assert router_for("gatewayAPI", {"MLROLLOUT_GATEWAYAPI_GATEWAY": "edge"}).name == "gatewayAPI"
    assert router_for("istio", {}).name == "istio"
    with pytest.raises(UnknownProvider, match="unknown traffic provider"):
        router_for("nginx")


def test_configmap_yaml_is_stable_for_the_same_intent() -> None:
    a = BuiltinRouter().manifests(intent(candidate_weight=5))[0]["data"]["routes.yaml"]
    b = BuiltinRouter().manifests(intent(candidate_weight=5))[0]["data"]["routes.yaml"]
    assert a == b and yaml.safe_load(a)["tracks"]["candidate"]["weight"] == 5


def test_istio_entry_service_selects_every_model_server_of_the_model_deployment() -> None:
    svc = children.mesh_entry_service(MD, 8080)
    assert svc["metadata"]["name"] == "wine"
    assert svc["spec"]["selector"] == {naming.MODEL_DEPLOYMENT: "wine", naming.COMPONENT: naming.SERVER_COMPONENT}


def test_serving_and_gateway_pods_keep_serving_while_endpoints_drop_them() -> None:
    """A preStop pause before SIGTERM, within a grace period that covers the servers' own drain."""
    deployments = [
        children.track_deployment(MD, revision_of(spec("1", "a"), IMAGE), "stable", 1),
        next(o for o in children.gateway_children(MD, OperatorSettings()) if o["kind"] == "Deployment"),
    ]
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
        assert pod["terminationGracePeriodSeconds"] >= 5 + 20
