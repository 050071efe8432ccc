"""Pure builders: children manifests, the builtin router's route table, the provider registry."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json
import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.api.fallbackpolicy import FallbackPolicySpec
from mlrollout.api.modeldeployment import NetworkIsolation
from mlrollout.controller import children, naming
from mlrollout.controller.kube import crd_name, plural
from mlrollout.controller.settings import OperatorSettings
from mlrollout.policy import fallback_settings
from mlrollout.revision import revision_of, template_of
from mlrollout.traffic.base import Backend, NullRouter, RouteIntent
from mlrollout.traffic.builtin import BuiltinRouter
from mlrollout.traffic.registry import UnknownProvider, router_for
from mlrollout_serving.contract.process import FEEDBACK_KEYS_DIR, FEEDBACK_KEYS_FILE
from mlrollout_serving.contract.routes import BackupModel, Sticky
from mlrollout_serving.gateway import cli as gateway_cli
from mlrollout_serving.gateway.feedback import load_keys
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
    env = {e["name"]: e["value"] for e in gw["containers"][0]["env"] if "value" in e}
    with mock.patch.dict(os.environ, {**env, "MLROLLOUT_POD_IP": "10.244.0.7"}, clear=True):
        args = gateway_cli.parse_args([])
    assert (args.routes_configmap, args.namespace, args.model_deployment) == ("wine-routes", "ml", "wine")
    assert args.replica == int(ipaddress.IPv4Address("10.244.0.7"))
    assert args.port == gw["containers"][0]["ports"][0]["containerPort"]
    for obj in objs.values():
        assert obj["metadata"]["ownerReferences"][0]["name"] == "wine"
        assert obj["metadata"]["labels"][naming.MANAGED_BY] == "mlrollout"


def test_gateway_pods_mount_the_feedback_keys_and_know_their_own_address(tmp_path: Path) -> None:
    gw = next(o for o in children.gateway_children(MD, OperatorSettings()) if o["kind"] == "Deployment")
    pod = gw["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"name": "MLROLLOUT_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    [mount] = container["volumeMounts"]
    [volume] = pod["volumes"]
    assert mount == {"name": volume["name"], "mountPath": FEEDBACK_KEYS_DIR, "readOnly": True}
    # optional: the pods start before the Secret exists, and without it when quality is off
    assert volume["secret"] == {"secretName": "wine-feedback", "optional": True}
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    with mock.patch.dict(os.environ, env, clear=True):
        args = gateway_cli.parse_args([])
    assert args.feedback_keys == f"{FEEDBACK_KEYS_DIR}/{FEEDBACK_KEYS_FILE}"


def test_the_feedback_secret_holds_one_key_the_gateway_reads(tmp_path: Path) -> None:
    key = bytes(range(32))
    secret = children.feedback_secret(MD, key)
    assert secret["metadata"]["name"] == "wine-feedback" and secret["type"] == "Opaque"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"  # deleted with the ModelDeployment
    # what the kubelet projects into the mounted volume, read by the gateway's own loader
    path = tmp_path / FEEDBACK_KEYS_FILE
    path.write_text(secret["stringData"][FEEDBACK_KEYS_FILE])
    keys = load_keys(str(path))
    assert keys is not None and keys.current == 1 and keys.keys == {1: key}
    assert base64.b64decode(json.loads(path.read_text())["1"]) == key


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
    assert t.step_started_at is None  # no step: the gateway counts every label
    t = table(intent(candidate_weight=50, step_started_at=1_796_400_000.5))
    assert t.step_started_at == 1_796_400_000.5  # the gateway scores labels of answers served since


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


# -- Pod Security "restricted" and NetworkPolicies ---------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The checks of the Pod Security Standard "restricted" (Kubernetes v1.34) that a pod spec can fail.
    The cluster tier has the real admission plugin judge the same pods (tests/cluster/test_pod_security.py)."""
    found: list[str] = []
    psc = pod.get("securityContext") or {}
    if any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        found.append("host namespaces")
    found += [f"volume {v['name']}" for v in pod.get("volumes", []) if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{c['name']}: allowPrivilegeEscalation != false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{c['name']}: capabilities")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            found.append(f"{c['name']}: runAsNonRoot != true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            found.append(f"{c['name']}: runAsUser=0")
        if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") not in (
            "RuntimeDefault",
            "Localhost",
        ):
            found.append(f"{c['name']}: seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{c['name']}: hostPort")
    return found


def test_model_server_and_gateway_pods_meet_pod_security_restricted() -> None:
    """A namespace enforcing `restricted` must admit every pod the operator creates (the seccomp profile was
    missing); the root filesystem stays read-only."""
    s = spec("2", "b")
    s.model.uri = "pvc://models/wine/v2.onnx"
    gateway = next(o for o in children.gateway_children(MD, OperatorSettings()) if o["kind"] == "Deployment")
    for dep in (children.track_deployment(MD, revision_of(s, IMAGE), "stable", 1), gateway):
        pod = dep["spec"]["template"]["spec"]
        assert restricted_violations(pod) == [], dep["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_restricted_check_finds_what_the_old_pods_lacked() -> None:
    """The check above fails the pod spec as it was before the fix (no seccomp profile)."""
    pod = children.track_deployment(MD, revision_of(spec("1", "a"), IMAGE), "stable", 1)["spec"]["template"]["spec"]
    old = {**pod, "securityContext": {k: v for k, v in pod["securityContext"].items() if k != "seccompProfile"}}
    assert restricted_violations(old) == ["server: seccompProfile"]


def policies_by_name(isolation: dict[str, Any] | None = None, provider: str = "builtin",
                     settings: OperatorSettings | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    iso = NetworkIsolation.model_validate({"enabled": True, **(isolation or {})})
    out = children.network_policies(MD, iso, provider, settings or OperatorSettings())
    return {p["metadata"]["name"]: p for p in out}


PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
OWN_GATEWAY = {"podSelector": {"matchLabels": {naming.MODEL_DEPLOYMENT: "wine", naming.COMPONENT: "gateway"}}}
HTTP_ONLY = [{"protocol": "TCP", "port": "http"}]


def test_network_policies_admit_clients_to_the_gateway_and_only_gateway_and_prometheus_to_the_servers() -> None:
    pols = policies_by_name()
    assert set(pols) == {"wine-gateway", "wine-model-server"}
    for pol in pols.values():
        assert pol["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
        assert pol["metadata"]["labels"][naming.MANAGED_BY] == "mlrollout"
        assert pol["spec"]["policyTypes"] == ["Ingress"]  # egress stays open: model downloads, the API server
    gateway, servers = pols["wine-gateway"]["spec"], pols["wine-model-server"]["spec"]
    assert gateway["podSelector"] == OWN_GATEWAY["podSelector"]
    assert gateway["ingress"] == [{"ports": HTTP_ONLY}]  # no clients given: any source, on the one port
    assert servers["podSelector"] == {
        "matchLabels": {naming.MODEL_DEPLOYMENT: "wine", naming.COMPONENT: "model-server"}
    }
    assert servers["ingress"] == [{"ports": HTTP_ONLY, "from": [OWN_GATEWAY, PROMETHEUS]}]
    # the selectors select what the builders label: the gateway's pods and every revision's model servers
    gw_pods = next(o for o in children.gateway_children(MD, OperatorSettings()) if o["kind"] == "Deployment")
    track = children.track_deployment(MD, revision_of(spec("1", "a"), IMAGE), "candidate", 1)
    for selector, dep in ((gateway["podSelector"], gw_pods), (servers["podSelector"], track)):
        assert selector["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        assert {"name": "http"}.items() <= dep["spec"]["template"]["spec"]["containers"][0]["ports"][0].items()


def test_named_clients_and_the_namespaces_gateways_reach_the_gateway() -> None:
    clients = [
        {"namespaceSelector": {"matchLabels": {"team": "shop"}}},
        {"podSelector": {"matchLabels": {"app": "web"}}},
    ]
    gateway = policies_by_name({"clients": clients})["wine-gateway"]["spec"]
    backups = {"podSelector": {"matchLabels": {naming.MANAGED_BY: "mlrollout", naming.COMPONENT: "gateway"}}}
    assert gateway["ingress"] == [{"ports": HTTP_ONLY, "from": [*clients, PROMETHEUS, backups]}]


def test_prometheus_is_selected_by_the_operator_settings() -> None:
    settings = OperatorSettings.from_env(
        {
            "MLROLLOUT_PROMETHEUS_NAMESPACE_LABELS": "team=obs, tier=system",
            "MLROLLOUT_PROMETHEUS_POD_LABELS": "app=prom",
        }
    )
    servers = policies_by_name(settings=settings)["wine-model-server"]["spec"]
    assert servers["ingress"][0]["from"][1] == {
        "namespaceSelector": {"matchLabels": {"team": "obs", "tier": "system"}},
        "podSelector": {"matchLabels": {"app": "prom"}},
    }
    # empty: every namespace, every pod there
    anywhere = OperatorSettings.from_env(
        {"MLROLLOUT_PROMETHEUS_NAMESPACE_LABELS": "", "MLROLLOUT_PROMETHEUS_POD_LABELS": ""}
    )
    assert children.prometheus_peer(anywhere) == {"namespaceSelector": {}}


def test_with_a_mesh_or_gateway_api_the_servers_admit_the_clients() -> None:
    """gatewayAPI/istio: no mlrollout gateway; the mesh or the Gateway's proxies call the servers."""
    for provider in ("gatewayAPI", "istio"):
        open_ = policies_by_name(provider=provider)
        assert list(open_) == ["wine-model-server"]
        assert open_["wine-model-server"]["spec"]["ingress"] == [{"ports": HTTP_ONLY}]
        clients = [{"namespaceSelector": {"matchLabels": {"gateway": "yes"}}}]
        closed = policies_by_name({"clients": clients}, provider)["wine-model-server"]["spec"]
        assert closed["ingress"] == [{"ports": HTTP_ONLY, "from": [*clients, PROMETHEUS]}]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLROLLOUT_NETWORK_POLICIES": "yes"}, "MLROLLOUT_NETWORK_POLICIES must be true or false"),
        ({"MLROLLOUT_PROMETHEUS_POD_LABELS": "app"}, "MLROLLOUT_PROMETHEUS_POD_LABELS must look like key=value"),
        ({"MLROLLOUT_PROMETHEUS_NAMESPACE_LABELS": "=x"}, "MLROLLOUT_PROMETHEUS_NAMESPACE_LABELS must look like"),
    ],
)
def test_network_policy_settings_refuse_what_they_cannot_mean(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorSettings.from_env(env)


def test_network_policies_are_off_unless_the_operator_or_the_model_deployment_turns_them_on() -> None:
    assert OperatorSettings().network_policies is False
    assert OperatorSettings.from_env({"MLROLLOUT_NETWORK_POLICIES": "True"}).network_policies is True
    assert NetworkIsolation().enabled is None  # absent: the operator's default


def test_a_client_must_select_something() -> None:
    with pytest.raises(ValueError, match="a client sets namespaceSelector or podSelector"):
        NetworkIsolation.model_validate({"clients": [{}]})


def test_resource_names_of_the_kinds_the_operator_writes() -> None:
    """The API paths are built from the kind; `networkpolicys` answered 404."""
    assert [plural(k) for k in ("Deployment", "NetworkPolicy", "PodDisruptionBudget", "HTTPRoute", "Gateway")] == [
        "deployments", "networkpolicies", "poddisruptionbudgets", "httproutes", "gateways"
    ]  # fmt: skip
    assert plural("GatewayClass") == "gatewayclasses"  # `gatewayclasss` was refused (403) by the real API server
    assert crd_name("networking.istio.io/v1", "VirtualService") == "virtualservices.networking.istio.io"
