"""The Helm chart: lint, render, install on the real API server, and least-privilege RBAC.

The permission tables below ARE the specification of what the operator may do; the rendered chart
must grant exactly these (nothing more), and the API server must agree (``kubectl auth can-i``).
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.cluster.kube import CHART, Helm, Kubectl
from tests.support import dashboard

from mlrollout.analysis.queries import BACKEND_SPLIT_PRESETS
from mlrollout.controller.settings import OperatorSettings
from mlrollout.traffic.gatewayapi import GatewayApiRouter
from mlrollout.traffic.istio import IstioRouter
from mlrollout.traffic.registry import router_for

pytestmark = pytest.mark.cluster

CREATE_PATCH = frozenset({"create", "patch"})
READ = frozenset({"get", "list", "watch"})

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)

# Cluster-wide, whatever the watched namespaces: listing the cluster-scoped policies.
CLUSTER_PERMS: dict[tuple[str, str], frozenset[str]] = {
    ("mlrollout.io", "rolloutpolicies"): frozenset({"list"}),
    ("mlrollout.io", "fallbackpolicies"): frozenset({"list"}),
}
# In each watched namespace (every namespace when watchNamespaces is empty). docs/operator.md says why each.
NAMESPACED_PERMS: dict[tuple[str, str], frozenset[str]] = {
    ("mlrollout.io", "modeldeployments"): frozenset({"get", "list", "watch", "patch"}),
    ("mlrollout.io", "modeldeployments/status"): frozenset({"update"}),
    ("mlrollout.io", "modeldeployments/finalizers"): frozenset({"update"}),
    ("apps", "deployments"): CREATE_PATCH | {"delete", "list", "watch"},
    ("", "services"): CREATE_PATCH | {"delete", "list", "watch"},
    ("", "configmaps"): CREATE_PATCH | READ,
    ("", "serviceaccounts"): CREATE_PATCH,
    ("rbac.authorization.k8s.io", "roles"): CREATE_PATCH,
    ("rbac.authorization.k8s.io", "rolebindings"): CREATE_PATCH,
    ("policy", "poddisruptionbudgets"): CREATE_PATCH,
    ("autoscaling", "horizontalpodautoscalers"): CREATE_PATCH | {"get", "delete"},
    ("networking.k8s.io", "networkpolicies"): CREATE_PATCH | {"deletecollection"},
    ("", "pods"): frozenset({"list"}),
    ("", "pods/log"): frozenset({"get"}),
    ("batch", "jobs"): frozenset({"create", "get", "delete"}),
    ("", "namespaces"): frozenset({"get"}),
    ("", "events"): frozenset({"create"}),
    ("", "secrets"): frozenset({"create", "get"}),
}
# kopf peering (collision protection, on by default): the ClusterKopfPeering when watching every namespace,
# else the KopfPeering in each watched namespace.
PEER = frozenset({"get", "list", "watch", "patch"})
CLUSTER_PEERING_PERMS: dict[tuple[str, str], frozenset[str]] = {("kopf.dev", "clusterkopfpeerings"): PEER}
NAMESPACED_PEERING_PERMS: dict[tuple[str, str], frozenset[str]] = {("kopf.dev", "kopfpeerings"): PEER}
OPTIONAL_PERMS: dict[str, dict[tuple[str, str], frozenset[str]]] = {
    "rbac.gatewayAPI": {
        ("gateway.networking.k8s.io", "httproutes"): CREATE_PATCH | {"get", "delete"},
        ("gateway.networking.k8s.io", "gateways"): frozenset({"get"}),
    },
    "rbac.istio": {("networking.istio.io", "virtualservices"): CREATE_PATCH | {"delete"}},
    "rbac.serviceMonitors": {("monitoring.coreos.com", "servicemonitors"): CREATE_PATCH},
}
# rbac.gatewayAPI: what the Gateway's implementation supports (its GatewayClass, cluster-scoped).
GATEWAY_CLASS_CHECK: dict[tuple[str, str], frozenset[str]] = {
    ("gateway.networking.k8s.io", "gatewayclasses"): frozenset({"get"})
}
# rbac.serviceMonitors: whether the ServiceMonitor CRD exists (that one CRD only, by resourceNames).
CRD_CHECK: dict[tuple[str, str], frozenset[str]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"get"})
}
# A sample of what the operator must NOT be able to do: (verb, resource[.group], subresource).
FORBIDDEN: list[tuple[str, str, str]] = [
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("update", "secrets", ""),
    ("patch", "secrets", ""),
    ("delete", "secrets", ""),
    ("delete", "modeldeployments.mlrollout.io", ""),
    ("update", "modeldeployments.mlrollout.io", ""),
    ("create", "modeldeployments.mlrollout.io", ""),
    ("patch", "modeldeployments.mlrollout.io", "status"),
    ("delete", "modeldeployments.mlrollout.io", "status"),
    ("get", "rolloutpolicies.mlrollout.io", ""),
    ("watch", "rolloutpolicies.mlrollout.io", ""),
    ("patch", "rolloutpolicies.mlrollout.io", ""),
    ("delete", "rolloutpolicies.mlrollout.io", ""),
    ("create", "fallbackpolicies.mlrollout.io", ""),
    ("update", "fallbackpolicies.mlrollout.io", ""),
    ("create", "pods", ""),
    ("delete", "pods", ""),
    ("get", "pods", ""),
    ("create", "pods", "exec"),
    ("create", "pods", "log"),
    ("update", "deployments.apps", ""),
    ("get", "deployments.apps", ""),
    ("get", "services", ""),
    ("delete", "configmaps", ""),
    ("update", "configmaps", ""),
    ("delete", "serviceaccounts", ""),
    ("get", "serviceaccounts", ""),
    ("delete", "roles.rbac.authorization.k8s.io", ""),
    ("delete", "rolebindings.rbac.authorization.k8s.io", ""),
    ("delete", "poddisruptionbudgets.policy", ""),
    ("update", "horizontalpodautoscalers.autoscaling", ""),
    ("list", "horizontalpodautoscalers.autoscaling", ""),
    ("delete", "networkpolicies.networking.k8s.io", ""),
    ("get", "networkpolicies.networking.k8s.io", ""),
    ("list", "replicasets.apps", ""),
    ("delete", "replicasets.apps", ""),
    ("create", "statefulsets.apps", ""),
    ("patch", "events", ""),
    ("delete", "events", ""),
    ("create", "events.events.k8s.io", ""),
    ("list", "namespaces", ""),
    ("delete", "namespaces", ""),
    ("create", "namespaces", ""),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("update", "leases.coordination.k8s.io", ""),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("escalate", "roles.rbac.authorization.k8s.io", ""),
    ("bind", "roles.rbac.authorization.k8s.io", ""),
    ("get", "nodes", ""),
    ("create", "serviceaccounts", "token"),
    ("*", "*", ""),
]


def expand(perms: Mapping[tuple[str, str], Iterable[str]]) -> set[Rule]:
    return {(group, resource, verb) for (group, resource), verbs in perms.items() for verb in verbs}


def rules_of(docs: Iterable[Mapping[str, Any]], kind: str, name_suffix: str) -> set[Rule]:
    found: set[Rule] = set()
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"].endswith(name_suffix):
            for rule in doc["rules"]:
                for group, resource, verb in itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"]):
                    found.add((group, resource, verb))
    return found


def by_kind(docs: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


VARIANTS = {
    "default": [],
    "watch-namespaces": ["watchNamespaces={team-a,team-b}"],
    "standalone": ["peering.enabled=false"],
    "all-options": [
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prometheus",
        "networkPolicy.enabled=true",
        "rbac.gatewayAPI=true",
        "rbac.istio=true",
        "rbac.serviceMonitors=true",
        "logLevel=debug",
        "defaultTrafficProvider=istio",
        "grafanaDashboard.enabled=true",
    ],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_passes_strict(helm: Helm, variant: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for s in VARIANTS[variant]:
        args += ["--set", s]
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out, out


def test_helm_rejects_invalid_values(helm: Helm) -> None:
    bad_level = helm("template", "x", str(CHART), "--set", "logLevel=verbose", check=False)
    assert bad_level.returncode != 0 and "logLevel" in bad_level.stderr
    bad_provider = helm("template", "x", str(CHART), "--set", "defaultTrafficProvider=nginx", check=False)
    assert bad_provider.returncode != 0 and "defaultTrafficProvider" in bad_provider.stderr
    # values.schema.json: a misspelt key is an error, not silently ignored.
    typo = helm("template", "x", str(CHART), "--set", "prometheusURL=http://p:9090", check=False)
    assert typo.returncode != 0 and "prometheusURL" in typo.stderr
    bad_ns = helm("template", "x", str(CHART), "--set", "watchNamespaces={Team_A}", check=False)
    assert bad_ns.returncode != 0 and "watchNamespaces" in bad_ns.stderr


def test_operator_deployment_is_hardened(helm: Helm) -> None:
    docs = helm.template("prometheusUrl=http://prom.example:9090", "watchNamespaces={ml}")
    [deploy] = by_kind(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    health_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    liveness = container["command"][container["command"].index("run") + 1 :]
    assert f"--liveness=http://0.0.0.0:{health_port}/healthz" in liveness
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    cmd = container["command"]
    assert cmd[:2] == ["kopf", "run"]
    assert cmd[-2:] == ["-m", "mlrollout.controller.handlers"]
    assert "--peering=mlrollout" in cmd and "--namespace=ml" in cmd and "--all-namespaces" not in cmd
    assert "--standalone" not in cmd
    assert not {"--debug", "--verbose", "--quiet"} & set(cmd)  # info is kopf's default level
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLROLLOUT_PROMETHEUS_URL"] == "http://prom.example:9090"
    assert env["MLROLLOUT_WATCH_NAMESPACES"] == "ml"
    assert env["MLROLLOUT_LOG_LEVEL"] == "info"
    assert env["MLROLLOUT_DEFAULT_TRAFFIC_PROVIDER"] == "builtin"
    assert pod["serviceAccountName"] == by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]


@pytest.mark.parametrize(("level", "flag"), [("debug", "--debug"), ("warning", "--quiet"), ("error", "--quiet")])
def test_log_level_maps_to_kopf_flag(helm: Helm, level: str, flag: str) -> None:
    docs = helm.template(f"logLevel={level}")
    cmd = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert flag in cmd
    env = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLROLLOUT_LOG_LEVEL", "value": level} in env


def test_peering_is_the_default_and_standalone_is_opt_out(helm: Helm) -> None:
    peered = helm.template("peering.name=mlr-peering", "peering.priority=5")
    [deploy] = by_kind(peered, "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    cmd = container["command"]
    assert "--peering=mlr-peering" in cmd and "--priority=5" in cmd and "--standalone" not in cmd
    # kopf names this process in the peering object after POD_ID: the pod's name.
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    [peering] = by_kind(peered, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "mlr-peering" and not by_kind(peered, "KopfPeering")
    # The peering CRDs live in crds/ (installed before the templates, shared, never deleted).
    assert not by_kind(peered, "CustomResourceDefinition")
    with_crds = [d for d in yaml.safe_load_all(helm("template", "x", str(CHART), "--include-crds").stdout) if d]
    crds = {d["metadata"]["name"] for d in by_kind(with_crds, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    namespaced = helm.template("watchNamespaces={team-a,team-b}")
    assert {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in by_kind(namespaced, "KopfPeering")} == {
        ("team-a", "mlrollout"),
        ("team-b", "mlrollout"),
    }
    assert not by_kind(namespaced, "ClusterKopfPeering")
    standalone = helm.template("peering.enabled=false")
    cmd = by_kind(standalone, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--standalone" in cmd and not any(c.startswith(("--peering", "--priority")) for c in cmd)
    assert not by_kind(standalone, "ClusterKopfPeering") and not by_kind(standalone, "KopfPeering")
    assert not any(r[0] == "kopf.dev" for r in rules_of(standalone, "ClusterRole", ""))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rbac_is_exactly_the_least_privilege_tables(helm: Helm, variant: str) -> None:
    sets = VARIANTS[variant]
    docs = helm.template(*sets)
    for doc in docs:
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    cluster = expand(CLUSTER_PERMS)
    namespaced = expand(NAMESPACED_PERMS)
    for flag, perms in OPTIONAL_PERMS.items():
        if f"{flag}=true" in sets:
            namespaced |= expand(perms)
    if "rbac.gatewayAPI=true" in sets:
        cluster |= expand(GATEWAY_CLASS_CHECK)
    if "rbac.serviceMonitors=true" in sets:
        cluster |= expand(CRD_CHECK)
        [crd_rule] = [r for d in docs for r in d.get("rules", []) if "customresourcedefinitions" in r["resources"]]
        assert crd_rule["resourceNames"] == ["servicemonitors.monitoring.coreos.com"]
    watched = "watchNamespaces={team-a,team-b}" in sets
    if "peering.enabled=false" not in sets:
        if watched:
            namespaced |= expand(NAMESPACED_PEERING_PERMS)
        else:
            cluster |= expand(CLUSTER_PEERING_PERMS)
    assert rules_of(docs, "ClusterRole", "-cluster") == cluster
    assert not by_kind(docs, "Role") or watched  # kopf uses no leases: no Role in the release namespace
    bindings = by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
    if watched:
        # the production mode: a Role per watched namespace, and no grant of these rights anywhere else
        assert rules_of(docs, "ClusterRole", "-namespaced") == set()
        roles = {d["metadata"]["namespace"]: d for d in by_kind(docs, "Role")}
        assert set(roles) == {"team-a", "team-b"}
        for role in roles.values():
            assert rules_of([role], "Role", "mlr-mlrollout") == namespaced
        assert {(b["metadata"]["namespace"], b["roleRef"]["kind"], b["roleRef"]["name"])
                for b in by_kind(docs, "RoleBinding")} == {("team-a", "Role", "mlr-mlrollout"),
                                                             ("team-b", "Role", "mlr-mlrollout")}  # fmt: skip
        assert [b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == ["mlr-mlrollout-cluster"]
    else:
        assert rules_of(docs, "ClusterRole", "-namespaced") == namespaced
        namespaced_bindings = [b for b in bindings if b["roleRef"]["name"].endswith("-namespaced")]
        assert [b["kind"] for b in namespaced_bindings] == ["ClusterRoleBinding"]


def test_notes_point_cluster_wide_installs_to_the_namespaced_mode(helm: Helm) -> None:
    cluster_wide = helm("install", "x", str(CHART), "--dry-run=client").stdout
    assert "watchNamespaces is empty" in cluster_wide and "watchNamespaces={team-a,team-b}" in cluster_wide
    namespaced = helm("install", "x", str(CHART), "--dry-run=client", "--set", "watchNamespaces={ml}").stdout
    assert "watchNamespaces is empty" not in namespaced


def test_operator_settings_for_network_policies(helm: Helm) -> None:
    """The chart's values reach the operator in the syntax its settings parse."""
    docs = helm.template(
        "modelNetworkPolicies.enabled=true",
        "modelNetworkPolicies.prometheus.namespaceLabels.team=obs",
        "modelNetworkPolicies.prometheus.podLabels=null",
    )
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = OperatorSettings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.network_policies is True
    assert settings.prometheus_namespace_labels == {"kubernetes.io/metadata.name": "monitoring", "team": "obs"}
    assert settings.prometheus_pod_labels == {}
    default = by_kind(helm.template(), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    defaults = OperatorSettings.from_env({e["name"]: e["value"] for e in default if "value" in e})
    assert defaults.network_policies is False
    assert defaults.prometheus_namespace_labels == OperatorSettings().prometheus_namespace_labels
    assert defaults.prometheus_pod_labels == OperatorSettings().prometheus_pod_labels
    bad = helm("template", "x", str(CHART), "--set", "modelNetworkPolicies.prometheus.podLabels.app=a\\,b", check=False)
    assert bad.returncode != 0 and "podLabels" in bad.stderr


def test_operator_settings_for_the_gateway_api_split(helm: Helm) -> None:
    """gatewayAPI.splitQuery reaches the operator as the template its settings check (a preset or one of its
    own); unset, the variable is absent and the split of gatewayAPI rollouts is not checked."""

    def settings(*args: str) -> OperatorSettings:
        out = helm("template", "x", str(CHART), *args).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        env = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        return OperatorSettings.from_env({e["name"]: e["value"] for e in env if "value" in e})

    traefik = settings("--set", "gatewayAPI.splitQuery=traefik")
    assert traefik.gatewayapi_split_query == BACKEND_SPLIT_PRESETS["traefik"]
    cluster = "outbound|{{port}}||{{service}}.{{namespace}}.svc.cluster.local"
    own = f'envoy_cluster_upstream_rq_total{{cluster_name="{cluster}"}}'
    assert settings("--set-string", f"gatewayAPI.splitQuery={own}").gatewayapi_split_query == own
    assert settings().gatewayapi_split_query == ""


def test_operator_settings_for_the_gateways_autoscaling(helm: Helm) -> None:
    """gatewayAutoscaling reaches the operator as the JSON its settings check; empty, the variable is absent
    (gatewayReplicas rules); cpu is refused by the schema (no gateway cpu request to measure against)."""

    def env_of(*args: str) -> dict[str, str]:
        out = helm("template", "x", str(CHART), *args).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        env = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        return {e["name"]: e["value"] for e in env if "value" in e}

    sets = "gatewayAutoscaling.minReplicas=2,gatewayAutoscaling.maxReplicas=10,gatewayAutoscaling.target=200"
    env = env_of("--set", f"{sets},gatewayAutoscaling.metric=requestsPerSecond")
    scaling = OperatorSettings.from_env(env).gateway_autoscaling
    assert scaling is not None
    assert (scaling.min_replicas, scaling.max_replicas, scaling.metric, scaling.target) == (
        2, 10, "requestsPerSecond", 200
    )  # fmt: skip
    default = env_of()
    assert "MLROLLOUT_GATEWAY_AUTOSCALING" not in default
    assert OperatorSettings.from_env(default).gateway_autoscaling is None
    cpu = helm("template", "x", str(CHART), "--set", f"{sets},gatewayAutoscaling.metric=cpu", check=False)
    assert cpu.returncode != 0 and "gatewayAutoscaling" in cpu.stderr
    partial = helm("template", "x", str(CHART), "--set", "gatewayAutoscaling.metric=concurrency", check=False)
    assert partial.returncode != 0 and "gatewayAutoscaling" in partial.stderr  # maxReplicas and target missing
    # zone spread: on by default, off for clusters without zone labels
    assert OperatorSettings.from_env(default).zone_spread is True
    assert OperatorSettings.from_env(env_of("--set", "topologySpread.zones=false")).zone_spread is False


def test_operator_settings_for_intervals_and_traffic_providers(helm: Helm) -> None:
    """The idle and resync intervals, the Gateway the HTTPRoutes attach to and the Istio gateways are chart
    values (before they could only be set through extraEnv); each reaches the setting that reads it."""

    def env_of(*args: str) -> dict[str, str]:
        out = helm("template", "x", str(CHART), *args).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        env = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        return {e["name"]: e["value"] for e in env if "value" in e}

    default = env_of()
    settings = OperatorSettings.from_env(default)
    assert (settings.idle_interval, settings.resync_interval) == (60.0, 300.0)
    assert settings.batch_window == settings.reconcile_interval == 10.0  # analysisBatchWindow null
    route = router_for("gatewayAPI", default)
    assert isinstance(route, GatewayApiRouter)
    assert (route.gateway_name, route.gateway_namespace, route.section_name) == ("mlrollout", None, None)
    mesh = router_for("istio", default)
    assert isinstance(mesh, IstioRouter) and mesh.gateways == ()

    env = env_of(
        "--set", "idleInterval=30,resyncInterval=600,analysisBatchWindow=0",
        "--set", "gatewayAPI.gateway=public,gatewayAPI.gatewayNamespace=edge,gatewayAPI.sectionName=https",
        "--set", "istio.gateways={edge/public,edge/internal}",
    )  # fmt: skip
    settings = OperatorSettings.from_env(env)
    assert (settings.idle_interval, settings.resync_interval, settings.batch_window) == (30.0, 600.0, 0.0)
    assert OperatorSettings.from_env(env_of("--set", "analysisBatchWindow=15")).batch_window == 15.0
    route = router_for("gatewayAPI", env)
    assert isinstance(route, GatewayApiRouter)
    assert (route.gateway_name, route.gateway_namespace, route.section_name) == ("public", "edge", "https")
    mesh = router_for("istio", env)
    assert isinstance(mesh, IstioRouter) and mesh.gateways == ("edge/public", "edge/internal")
    # set through extraEnv before these values existed: that entry wins, and the name is not rendered twice
    # (two entries of one name break the upgrade's patch of the Deployment)
    legacy = helm("template", "x", str(CHART), "--set", "extraEnv[0].name=MLROLLOUT_GATEWAYAPI_GATEWAY",
                  "--set", "extraEnv[0].value=edge", "--set", "gatewayAPI.gateway=public").stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(legacy) if d]
    env_list = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env_list]
    assert len(names) == len(set(names))
    assert {e["name"]: e.get("value") for e in env_list}["MLROLLOUT_GATEWAYAPI_GATEWAY"] == "edge"
    for bad in ("idleInterval=-1", "resyncInterval=-1", "analysisBatchWindow=-1", "gatewayAPI.gateway="):
        refused = helm("template", "x", str(CHART), "--set", bad, check=False)
        assert refused.returncode != 0 and bad.split("=")[0].split(".")[0] in refused.stderr, bad


def test_service_monitor_scrapes_the_operator_metrics_service(helm: Helm) -> None:
    docs = helm.template("serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom", "metrics.port=9200")
    [sm] = by_kind(docs, "ServiceMonitor")
    [svc] = by_kind(docs, "Service")
    [deploy] = by_kind(docs, "Deployment")
    assert sm["metadata"]["labels"]["release"] == "prom"
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc["metadata"]["labels"].items()
    [endpoint] = sm["spec"]["endpoints"]
    [port] = svc["spec"]["ports"]
    assert endpoint["port"] == port["name"] and port["port"] == 9200
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert {"name": port["targetPort"], "containerPort": 9200, "protocol": "TCP"} in container["ports"]
    assert {"name": "MLROLLOUT_METRICS_PORT", "value": "9200"} in container["env"]
    assert svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()


def test_grafana_dashboard_is_off_by_default_and_carries_the_sidecar_label(helm: Helm) -> None:
    assert not by_kind(helm.template(), "ConfigMap")
    [cm] = by_kind(helm.template("grafanaDashboard.enabled=true"), "ConfigMap")
    assert cm["metadata"]["namespace"] == "mlrollout-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(cm["data"]) == ["mlrollout.json"]
    assert json.loads(cm["data"]["mlrollout.json"]) == dashboard.load()  # the file, byte for byte in meaning
    custom = helm.template(
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.label=dashboards.example.com/grafana",
        "grafanaDashboard.labelValue=mlrollout",
        "grafanaDashboard.namespace=monitoring",
        "grafanaDashboard.annotations.grafana_folder=ML",
        "grafanaDashboard.labels.team=ml",
    )
    [cm] = by_kind(custom, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    labels = cm["metadata"]["labels"]
    assert labels["dashboards.example.com/grafana"] == "mlrollout" and labels["team"] == "ml"
    assert "grafana_dashboard" not in labels
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
    bad = helm("template", "x", str(CHART), "--set", "grafanaDashboard.label=not a label", check=False)
    assert bad.returncode != 0 and "grafanaDashboard" in bad.stderr


# --- on the real API server --------------------------------------------------------------------


def can_i(kubectl: Kubectl, sa: str, verb: str, resource: str, namespace: str, sub: str = "") -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={sa}", "-n", namespace]
    if sub:
        args.append(f"--subresource={sub}")
    proc = kubectl(*args, check=False)
    answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert answer in ("yes", "no"), f"can-i {args}: {proc.stdout} {proc.stderr}"
    return answer == "yes"


def can_i_rule(kubectl: Kubectl, sa: str, rule: Rule, namespace: str) -> bool:
    group, resource, verb = rule
    base, _, sub = resource.partition("/")
    return can_i(kubectl, sa, verb, f"{base}.{group}" if group else base, namespace, sub)


def check_all(kubectl: Kubectl, sa: str, rules: Iterable[tuple[Rule, str]]) -> dict[str, bool]:
    """can-i for each (rule, namespace), four kubectl processes at a time."""
    items = sorted(rules)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda item: can_i_rule(kubectl, sa, item[0], item[1]), items))
    return {f"{verb} {group}/{res} in {ns}": ok for ((group, res, verb), ns), ok in zip(items, answers, strict=True)}


@dataclass(frozen=True)
class Installed:
    release: str
    namespace: str
    service_account: str


@pytest.fixture
def installed(helm: Helm, kubectl: Kubectl, namespace: str) -> Iterator[Installed]:
    """`helm install` of the chart (default values) into the test's namespace; uninstalled after.

    The peering name is the one value changed: the ClusterKopfPeering is cluster-scoped and owned by its
    release, so each test's release gets its own (users keep the default, shared by every installation)."""
    release = f"mlr-{secrets.token_hex(3)}"
    helm("install", release, str(CHART), "--namespace", namespace, "--set", "image.tag=test",
         "--set", f"peering.name={release}")  # fmt: skip
    try:
        yield Installed(release, namespace, f"system:serviceaccount:{namespace}:{release}-mlrollout")
    finally:
        helm("uninstall", release, "--namespace", namespace, check=False)


def test_helm_install_creates_the_operator_objects(kubectl: Kubectl, installed: Installed) -> None:
    ns, release = installed.namespace, installed.release
    deploy = kubectl.json("-n", ns, "get", "deployment", f"{release}-mlrollout")
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    kubectl("-n", ns, "get", "serviceaccount", f"{release}-mlrollout")
    kubectl("get", "clusterrole", f"{release}-mlrollout-cluster", f"{release}-mlrollout-namespaced")
    kubectl("get", "clusterrolebinding", f"{release}-mlrollout-cluster", f"{release}-mlrollout-namespaced")
    # The chart's CRDs are the generated ones, which the session already installed.
    for crd in ("modeldeployments", "rolloutpolicies", "fallbackpolicies"):
        kubectl("get", "crd", f"{crd}.mlrollout.io")
    # Peering by default: kopf's CRDs from the chart's crds/, the ClusterKopfPeering the operator joins.
    kubectl("get", "crd", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
    kubectl("get", "clusterkopfpeering", release)


def test_installed_rbac_is_sufficient(kubectl: Kubectl, installed: Installed, namespace: str) -> None:
    elsewhere = "default"
    checks = [(r, elsewhere) for r in expand(CLUSTER_PERMS) | expand(NAMESPACED_PERMS) | expand(CLUSTER_PEERING_PERMS)]
    answers = check_all(kubectl, installed.service_account, checks)
    assert [k for k, ok in answers.items() if not ok] == []


def test_installed_rbac_is_minimal(kubectl: Kubectl, installed: Installed, namespace: str) -> None:
    sa = installed.service_account
    allowed = [
        f"{verb} {res}/{sub} in {ns}"
        for verb, res, sub in FORBIDDEN
        for ns in ("default", namespace)
        if can_i(kubectl, sa, verb, res, ns, sub)
    ]
    assert allowed == []


def test_rendered_chart_applies_with_watched_namespaces(
    helm: Helm, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """`helm template | kubectl apply`: grants land only in the watched namespace."""
    watched = f"{namespace}-w"
    kubectl("create", "namespace", watched)
    release = f"mlr-{secrets.token_hex(3)}"
    manifest = tmp_path / "rendered.yaml"
    docs = helm.template(
        f"watchNamespaces={{{watched}}}", "networkPolicy.enabled=true", namespace=namespace, release=release
    )
    manifest.write_text(yaml.safe_dump_all(docs))
    # `helm template` users apply the chart's crds/ first (kopf's peering CRDs here), as Helm would.
    kubectl("apply", "-f", str(CHART / "crds" / "kopf.dev_peerings.yaml"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/kopfpeerings.kopf.dev")
    try:
        kubectl("apply", "-f", str(manifest))
        sa = f"system:serviceaccount:{namespace}:{release}-mlrollout"
        kubectl("-n", namespace, "get", "networkpolicy", f"{release}-mlrollout")
        kubectl("-n", watched, "get", "role,rolebinding", f"{release}-mlrollout")
        answers = check_all(kubectl, sa, [(r, watched) for r in expand(NAMESPACED_PERMS)])
        assert [k for k, ok in answers.items() if not ok] == []
        answers = check_all(kubectl, sa, [(r, ns) for r in expand(NAMESPACED_PERMS) for ns in ("default", namespace)])
        assert [k for k, ok in answers.items() if ok] == []  # not elsewhere, not even in its own namespace
        policies = ("mlrollout.io", "rolloutpolicies", "list")
        assert can_i_rule(kubectl, sa, policies, "default")  # cluster-scoped: readable everywhere
        # the namespace's own labels (policy selection): that namespace only
        assert can_i(kubectl, sa, "get", f"namespaces/{watched}", watched)
        assert not can_i(kubectl, sa, "get", "namespaces/default", "default")
        # Peering: a KopfPeering in the watched namespace, keep-alives allowed there only.
        kubectl("-n", watched, "get", "kopfpeering", "mlrollout")
        peering = ("kopf.dev", "kopfpeerings", "patch")
        assert can_i_rule(kubectl, sa, peering, watched) and not can_i_rule(kubectl, sa, peering, "default")
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(manifest), check=False)
        kubectl("delete", "namespace", watched, "--wait=false", check=False)
