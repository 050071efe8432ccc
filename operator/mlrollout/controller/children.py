"""Pure builders of a ModelDeployment's children: each returns a manifest for server-side apply.

Every object carries the ModelDeployment as its controller ownerReference (so deleting the
ModelDeployment garbage-collects everything) and the labels from `naming`. Nothing here talks to the API.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from mlrollout.api.common import parse_duration
from mlrollout.api.modeldeployment import (
    Autoscaling,
    GatewayAutoscaling,
    GatewaySettings,
    NetworkIsolation,
    RevisionStatus,
)
from mlrollout.controller import naming
from mlrollout.controller.scaling import (
    CONCURRENCY_METRIC,
    GATEWAY_CONCURRENCY_METRIC,
    GATEWAY_REQUESTS_PER_SECOND_METRIC,
    REQUESTS_PER_SECOND_METRIC,
)
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.store import StoreAccess, locate, store_access
from mlrollout.revision import RevisionTemplate, registry_of
from mlrollout.rollout import lookhistory
from mlrollout.rollout.actions import Role
from mlrollout.traffic.base import Manifest
from mlrollout_serving.contract.process import (
    FEEDBACK_KEYS_DIR,
    FEEDBACK_KEYS_FILE,
    GATEWAY_COMMAND,
    GATEWAY_PORT,
    HEALTH_LIVE,
    HEALTH_READY,
    METRICS_PATH,
    SERVER_COMMAND,
    TERMINATION_LOG,
    GatewayEnv,
    ServerEnv,
    feedback_secret_name,
)
from mlrollout_serving.contract.routes import configmap_name

FEEDBACK_VOLUME = "feedback-keys"


def owner_reference(md: Manifest) -> Manifest:
    """The ModelDeployment as controller owner of a child."""
    meta = md["metadata"]
    return {
        "apiVersion": md.get("apiVersion", "mlrollout.io/v1alpha1"),
        "kind": md.get("kind", "ModelDeployment"),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(md: Manifest, name: str, labels: dict[str, str]) -> Manifest:
    return {
        "name": name,
        "namespace": md["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference(md)],
    }


def looks_configmap(md: Manifest, data: str) -> Manifest:
    """The ConfigMap `<md>-looks` with the current rollout's per-look history (`rollout.lookhistory`)."""
    name = md["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            md, lookhistory.configmap_name(name), {**naming.routing_labels(name), naming.COMPONENT: "looks"}
        ),
        "data": {lookhistory.DATA_KEY: data},
    }


def _server_env(md_name: str, namespace: str, rev: RevisionStatus, tpl: RevisionTemplate, role: Role) -> list[Manifest]:
    model, serving = tpl.model, tpl.serving
    # a models:/ revision carries what the registry resolved it to (pinned when the rollout started)
    env = {
        ServerEnv.MODEL_URI: locate(rev.resolved_uri or model.uri),
        ServerEnv.MODEL_SHA256: rev.sha256,
        ServerEnv.MODEL_NAME: model.name,
        ServerEnv.MODEL_VERSION: rev.model_version,
        ServerEnv.PORT: str(serving.port),
        ServerEnv.NAMESPACE: namespace,
        ServerEnv.MODEL_DEPLOYMENT: md_name,
        ServerEnv.TRACK: role,
        ServerEnv.REVISION: rev.revision,
        ServerEnv.MAX_BODY_BYTES: str(serving.max_request_bytes),
        ServerEnv.MAX_BATCH_SIZE: str(serving.batching.max_batch_size),
        ServerEnv.MAX_BATCH_WAIT_MS: f"{parse_duration(serving.batching.max_delay) * 1000:g}",
        ServerEnv.BATCHING: {None: "auto", True: "on", False: "off"}[serving.batching.enabled],
        ServerEnv.TERMINATION_LOG: TERMINATION_LOG,
    }
    if model.reference_profile:
        env[ServerEnv.REFERENCE_PROFILE] = locate(model.reference_profile)
    if serving.threads is not None:
        env[ServerEnv.INTRA_OP_THREADS] = str(serving.threads)
    return [{"name": str(k), "value": v} for k, v in env.items()]


def server_store_access(rev: RevisionStatus, tpl: RevisionTemplate) -> StoreAccess:
    """What a revision's model servers read (its model, as resolved, and its reference profile), and how
    (a models:/ revision: also the tracking server it was resolved on, `revision.registry_of`)."""
    return store_access(
        (rev.resolved_uri or tpl.model.uri, tpl.model.reference_profile), tpl.model.credentials, registry_of(rev)
    )


def track_labels(md_name: str, revision: str, role: Role) -> dict[str, str]:
    return {
        **naming.base_labels(md_name, naming.SERVER_COMPONENT),
        naming.REVISION: revision,
        naming.TRACK: role,
    }


# Both data-plane pods meet the Pod Security Standard "restricted" (a namespace labelled
# pod-security.kubernetes.io/enforce=restricted admits them): the images' non-root user, the runtime's
# default seccomp profile, no privilege escalation, no capabilities, a read-only root filesystem.
RESTRICTED_POD: Manifest = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
HARDENED_CONTAINER: Manifest = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
# A terminating pod keeps serving while kube-proxy and the gateways stop sending to it: without this
# pause, requests routed in the seconds after SIGTERM met a closed port (503s seen in e2e at promotion).
DRAIN_BEFORE_SIGTERM: Manifest = {"preStop": {"sleep": {"seconds": 5}}}
# the 5 s pause + the servers' own 20 s drain of in-flight requests (--shutdown-grace) + margin
TERMINATION_GRACE_SECONDS = 35


NODE_KEY = "kubernetes.io/hostname"
ZONE_KEY = "topology.kubernetes.io/zone"


def spread(selector: dict[str, str], zones: bool = True) -> list[Manifest]:
    """Prefer one pod per node and (`zones`) an even share per zone; soft rules (ScheduleAnyway), so a small
    cluster still schedules every pod. The scheduler scores a pod's soft spread only on nodes that carry every
    key the pod names, so on nodes without a zone label the zone rule would void the node rule too: the
    operator setting `zone_spread` (chart topologySpread.zones) leaves it out for such clusters."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
        for key in ((NODE_KEY, ZONE_KEY) if zones else (NODE_KEY,))
    ]


def track_deployment(
    md: Manifest, rev: RevisionStatus, role: Role, replicas: int | None, spread_out: bool = False, zones: bool = True
) -> Manifest:
    """The model servers of one revision: `mlrollout-serve` with the model, its digest and identity labels.

    The selector names the revision only, so relabelling a promoted candidate as stable rolls its pods
    (their metrics then say track="stable") without ever changing which pods the Service reaches.
    `replicas` None leaves the count to its HPA (the field is left out of the apply).
    """
    assert rev.template is not None, "a deployed revision always carries its template"
    tpl = RevisionTemplate.from_json(rev.template)
    md_name, namespace = md["metadata"]["name"], md["metadata"]["namespace"]
    labels = track_labels(md_name, rev.revision, role)
    selector = naming.selector(md_name, **{naming.REVISION: rev.revision})
    access = server_store_access(rev, tpl)
    probe = {"httpGet": {"path": HEALTH_READY, "port": naming.HTTP_PORT_NAME}, "periodSeconds": 5}
    container: Manifest = {
        "name": naming.SERVER_CONTAINER,
        "image": tpl.image,
        "command": [SERVER_COMMAND],
        "env": [*_server_env(md_name, namespace, rev, tpl, role), *access.env],
        "ports": [{"name": naming.HTTP_PORT_NAME, "containerPort": tpl.serving.port, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": HEALTH_LIVE, "port": naming.HTTP_PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        # the server writes why it exits, one line, to TERMINATION_LOG (its log's tail if it could not)
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "lifecycle": DRAIN_BEFORE_SIGTERM,
        "securityContext": HARDENED_CONTAINER,
    }
    if tpl.resources is not None:
        container["resources"] = tpl.resources.to_dict()
    access.give(container)
    pod_spec: Manifest = {
        "securityContext": RESTRICTED_POD,
        "containers": [container],
        "automountServiceAccountToken": False,
        "volumes": access.pod_volumes(),
        # web identity: the ServiceAccount's role (its token is projected by the cloud's webhook, not
        # the Kubernetes API token, which stays unmounted)
        "serviceAccountName": access.service_account_name,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "topologySpreadConstraints": spread(selector, zones) if spread_out else None,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(md, naming.track_name(md_name, rev.revision), labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def replicas_only(md: Manifest, deployment: str, replicas: int) -> Manifest:
    """An apply of one Deployment's spec.replicas alone (a revision's or the gateway's): the hand-over to its
    HPA (`scaling.replicas_handover`)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment, "namespace": md["metadata"]["namespace"]},
        "spec": {"replicas": replicas},
    }


def track_service(md: Manifest, rev: RevisionStatus, role: Role) -> Manifest:
    """The address of one revision's model servers (the route table points here)."""
    assert rev.template is not None
    port = RevisionTemplate.from_json(rev.template).serving.port
    md_name = md["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(md, naming.track_name(md_name, rev.revision), track_labels(md_name, rev.revision, role)),
        "spec": {
            "selector": naming.selector(md_name, **{naming.REVISION: rev.revision}),
            "ports": [{"name": naming.HTTP_PORT_NAME, "port": port, "targetPort": naming.HTTP_PORT_NAME}],
        },
    }


def _gateway_settings(md: Manifest) -> GatewaySettings:
    return GatewaySettings.model_validate(((md.get("spec") or {}).get("gateway")) or {})


def gateway_autoscaling(md: Manifest, settings: OperatorSettings) -> GatewayAutoscaling | None:
    """spec.gateway.autoscaling; else, unless spec.gateway.replicas is set, the operator's default (chart
    gatewayAutoscaling; None when not set): a ModelDeployment opts out of the default with fixed replicas."""
    own = _gateway_settings(md)
    if own.autoscaling is not None:
        return own.autoscaling
    return settings.gateway_autoscaling if own.replicas is None else None


def gateway_replicas(md: Manifest, settings: OperatorSettings) -> int:
    """The gateway's replicas when the operator sets them: spec.gateway.replicas, else the operator's default
    (chart gatewayReplicas); with autoscaling, minReplicas (a new Deployment's, before its HPA takes over)."""
    scaling = gateway_autoscaling(md, settings)
    if scaling is not None:
        return scaling.min_replicas
    replicas = _gateway_settings(md).replicas
    return replicas if replicas is not None else settings.gateway_replicas


def gateway_children(md: Manifest, settings: OperatorSettings, hpa_owned: bool = False) -> list[Manifest]:
    """The gateway (Deployment + Service named after the ModelDeployment) and its least-privilege identity.
    `hpa_owned`: the gateway's HPA holds spec.replicas, so the field is left out of the apply."""
    md_name, namespace = md["metadata"]["name"], md["metadata"]["namespace"]
    scaling = gateway_autoscaling(md, settings)
    replicas = gateway_replicas(md, settings)
    # from the spec, not the pods running now, so the HPA's choices never change the pod template
    wide = (scaling.max_replicas if scaling is not None else replicas) > 1
    resources = _gateway_settings(md).resources
    labels = naming.base_labels(md_name, naming.GATEWAY_COMPONENT)
    ident = naming.gateway_identity(md_name)
    configmap = configmap_name(md_name)
    selector = naming.selector(md_name, **{naming.COMPONENT: naming.GATEWAY_COMPONENT})
    health = {"httpGet": {"path": HEALTH_READY, "port": naming.HTTP_PORT_NAME}, "periodSeconds": 5}
    env = {
        GatewayEnv.ROUTES_CONFIGMAP: configmap,
        GatewayEnv.PORT: str(GATEWAY_PORT),
        GatewayEnv.NAMESPACE: namespace,
        GatewayEnv.MODEL_DEPLOYMENT: md_name,
        GatewayEnv.FEEDBACK_KEYS: f"{FEEDBACK_KEYS_DIR}/{FEEDBACK_KEYS_FILE}",
    }
    # the replica's own address goes into the feedback ids it mints, so a label reaches the replica that
    # holds the answer's shadow twin
    pod_ip = {"name": str(GatewayEnv.POD_IP), "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    container: Manifest = {
        "name": "gateway",
        "image": settings.gateway_image,
        "command": [GATEWAY_COMMAND],
        "env": [*({"name": str(k), "value": v} for k, v in env.items()), pod_ip],
        "volumeMounts": [{"name": FEEDBACK_VOLUME, "mountPath": FEEDBACK_KEYS_DIR, "readOnly": True}],
        "ports": [{"name": naming.HTTP_PORT_NAME, "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "readinessProbe": health,
        "livenessProbe": {"httpGet": {"path": HEALTH_LIVE, "port": naming.HTTP_PORT_NAME}, "periodSeconds": 10},
        "lifecycle": DRAIN_BEFORE_SIGTERM,
        "securityContext": HARDENED_CONTAINER,
        "resources": resources.to_dict() if resources is not None else None,
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(md, ident, labels),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(md, ident, labels),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [configmap],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(md, ident, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ident},
            "subjects": [{"kind": "ServiceAccount", "name": ident, "namespace": namespace}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(md, naming.gateway_name(md_name), labels),
            "spec": {
                "replicas": None if hpa_owned else replicas,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": ident,
                        "securityContext": RESTRICTED_POD,
                        "containers": [container],
                        # optional: until the operator creates the Secret (quality enabled), the gateway
                        # mints no ids and refuses labels as `disabled`; it notices the Secret within seconds
                        "volumes": [
                            {
                                "name": FEEDBACK_VOLUME,
                                "secret": {"secretName": feedback_secret_name(md_name), "optional": True},
                            }
                        ],
                        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                        "topologySpreadConstraints": spread(selector, settings.zone_spread) if wide else None,
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(md, naming.gateway_name(md_name), labels),
            "spec": {
                "selector": selector,
                "ports": [{"name": naming.HTTP_PORT_NAME, "port": GATEWAY_PORT, "targetPort": naming.HTTP_PORT_NAME}],
            },
        },
    ]


def feedback_secret(md: Manifest, key: bytes, key_id: int = 1) -> Manifest:
    """The Secret of the keys that sign and check feedback ids (created once, never applied again: a new
    key on every pass would void every id in flight). `key` comes from the caller so this stays pure."""
    md_name = md["metadata"]["name"]
    keys = {str(key_id): base64.b64encode(key).decode("ascii")}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(md, feedback_secret_name(md_name), naming.base_labels(md_name, naming.GATEWAY_COMPONENT)),
        "type": "Opaque",
        "stringData": {FEEDBACK_KEYS_FILE: json.dumps(keys)},
    }


def mesh_entry_service(md: Manifest, port: int) -> Manifest:
    """For the istio provider: the Service named after the ModelDeployment that clients call and the
    VirtualService takes over (it selects every model server of the ModelDeployment; the mesh splits)."""
    md_name = md["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(md, naming.gateway_name(md_name), naming.base_labels(md_name, naming.SERVER_COMPONENT)),
        "spec": {
            "selector": naming.selector(md_name, **{naming.COMPONENT: naming.SERVER_COMPONENT}),
            "ports": [{"name": naming.HTTP_PORT_NAME, "port": port, "targetPort": naming.HTTP_PORT_NAME}],
        },
    }


def _budget(meta: Manifest, selector: dict[str, str]) -> Manifest:
    """At most one pod of the selection evicted at a time. maxUnavailable (never minAvailable) so that a drain
    can always go on: with one pod the budget allows its eviction, with n pods one at a time; and pods that are
    not ready may always be evicted (unhealthyPodEvictionPolicy), so a crash-looping pod never blocks a drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {
            "maxUnavailable": 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector},
        },
    }


def disruption_budget(md: Manifest) -> Manifest:
    """The gateway's budget, named after the ModelDeployment (`<md>`). Its selector is the gateway's pods only:
    every track has its own budget, and a pod under two budgets cannot be evicted at all (the eviction API
    refuses it), so this one, which once covered every pod of the ModelDeployment, was narrowed in place."""
    md_name = md["metadata"]["name"]
    labels = naming.base_labels(md_name, naming.GATEWAY_COMPONENT)
    return _budget(_meta(md, md_name, labels), naming.selector(md_name, **{naming.COMPONENT: naming.GATEWAY_COMPONENT}))


def track_budget(md: Manifest, revision: str, role: Role, deployment_uid: str) -> Manifest:
    """One revision's budget, `<md>-<revision>`, owned by that revision's Deployment so that it goes with it
    (no delete needed; blockOwnerDeletion off, so no rights on deployments/finalizers are needed either)."""
    md_name = md["metadata"]["name"]
    name = naming.track_name(md_name, revision)
    meta = {
        "name": name,
        "namespace": md["metadata"]["namespace"],
        "labels": track_labels(md_name, revision, role),
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": deployment_uid,
             "controller": True, "blockOwnerDeletion": False}
        ],
    }  # fmt: skip
    return _budget(meta, naming.selector(md_name, **{naming.REVISION: revision}))


def _hpa_metric(scaling: Autoscaling, pods_metrics: tuple[str, str]) -> Manifest:
    """The HPA's one metric; `pods_metrics`: the Pods metric names of requestsPerSecond and concurrency."""
    if scaling.metric == "cpu":
        utilization = max(1, round(scaling.target))
        cpu = {"type": "Utilization", "averageUtilization": utilization}
        return {"type": "Resource", "resource": {"name": "cpu", "target": cpu}}
    name = pods_metrics[0] if scaling.metric == "requestsPerSecond" else pods_metrics[1]
    # a Kubernetes quantity in thousandths: 0.5 requests in flight per pod is "500m"
    value = f"{max(1, round(scaling.target * 1000))}m"
    target = {"type": "AverageValue", "averageValue": value}
    return {"type": "Pods", "pods": {"metric": {"name": name}, "target": target}}


def _hpa(meta: Manifest, deployment: str, scaling: Autoscaling, pods_metrics: tuple[str, str]) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [_hpa_metric(scaling, pods_metrics)],
        },
    }


def autoscaler(md: Manifest, stable_revision: str, scaling: Autoscaling) -> Manifest:
    """The stable track's HorizontalPodAutoscaler, `<md>`: one per ModelDeployment, retargeted at promotion
    (same object, new scaleTargetRef), owned by the ModelDeployment."""
    md_name = md["metadata"]["name"]
    meta = _meta(md, md_name, naming.base_labels(md_name, naming.SERVER_COMPONENT))
    target = naming.track_name(md_name, stable_revision)
    return _hpa(meta, target, scaling, (REQUESTS_PER_SECOND_METRIC, CONCURRENCY_METRIC))


def gateway_autoscaler(md: Manifest, scaling: Autoscaling) -> Manifest:
    """The gateway's HorizontalPodAutoscaler, `<md>-gateway`, owned by the ModelDeployment; requestsPerSecond
    and concurrency are the gateway's own series (every request it answers, whichever track served it)."""
    md_name = md["metadata"]["name"]
    meta = _meta(md, naming.gateway_autoscaler_name(md_name), naming.base_labels(md_name, naming.GATEWAY_COMPONENT))
    pods_metrics = (GATEWAY_REQUESTS_PER_SECOND_METRIC, GATEWAY_CONCURRENCY_METRIC)
    return _hpa(meta, naming.gateway_name(md_name), scaling, pods_metrics)


def service_monitor(md: Manifest, interval: str = "15s") -> Manifest:
    """Prometheus Operator scrape config for the model servers and gateway; honorLabels keeps identity labels."""
    md_name = md["metadata"]["name"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(md, md_name, naming.base_labels(md_name, naming.SERVER_COMPONENT)),
        "spec": {
            "selector": {"matchLabels": naming.selector(md_name, **{naming.MANAGED_BY: "mlrollout"})},
            "endpoints": [
                {"port": naming.HTTP_PORT_NAME, "path": METRICS_PATH, "honorLabels": True, "interval": interval}
            ],
        },
    }


def _labels_selector(labels: dict[str, str]) -> Manifest:
    return {"matchLabels": dict(labels)} if labels else {}


def prometheus_peer(settings: OperatorSettings) -> Manifest:
    """The Prometheus pods that scrape /metrics (empty labels select every namespace or every pod)."""
    peer: Manifest = {"namespaceSelector": _labels_selector(settings.prometheus_namespace_labels)}
    if settings.prometheus_pod_labels:
        peer["podSelector"] = _labels_selector(settings.prometheus_pod_labels)
    return peer


def _ingress_policy(md: Manifest, component: str, sources: list[Manifest] | None) -> Manifest:
    """Ingress to one component's pods on their `http` port (both the API and /metrics), from `sources`
    (None: from anywhere). Egress is not restricted: see docs/operator.md, "Network policies"."""
    md_name = md["metadata"]["name"]
    rule: Manifest = {"ports": [{"protocol": "TCP", "port": naming.HTTP_PORT_NAME}]}
    if sources is not None:
        rule["from"] = sources
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(md, naming.network_policy_name(md_name, component), naming.base_labels(md_name, component)),
        "spec": {
            "podSelector": {"matchLabels": naming.selector(md_name, **{naming.COMPONENT: component})},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def network_policies(
    md: Manifest, isolation: NetworkIsolation, provider: str, settings: OperatorSettings
) -> list[Manifest]:
    """Ingress NetworkPolicies of one ModelDeployment.

    builtin: the gateway admits the clients (any source when `clients` is absent), Prometheus and the
    namespace's gateways (a fallback chain's backup is called by another ModelDeployment's gateway); the
    model servers admit only this gateway and Prometheus. gatewayAPI/istio: the mesh or the Gateway's
    proxies call the model servers directly, so they admit the clients and Prometheus.
    """
    md_name = md["metadata"]["name"]
    prometheus = prometheus_peer(settings)
    clients = None if isolation.clients is None else [c.to_dict() for c in isolation.clients]
    if provider != "builtin":
        servers_from = None if clients is None else [*clients, prometheus]
        return [_ingress_policy(md, naming.SERVER_COMPONENT, servers_from)]
    gateways = {naming.MANAGED_BY: "mlrollout", naming.COMPONENT: naming.GATEWAY_COMPONENT}
    gateway_from = None if clients is None else [*clients, prometheus, {"podSelector": {"matchLabels": gateways}}]
    own_gateway = {
        "podSelector": {"matchLabels": naming.selector(md_name, **{naming.COMPONENT: naming.GATEWAY_COMPONENT})}
    }
    return [
        _ingress_policy(md, naming.GATEWAY_COMPONENT, gateway_from),
        _ingress_policy(md, naming.SERVER_COMPONENT, [own_gateway, prometheus]),
    ]


def static_children(
    md: Manifest, settings: OperatorSettings, with_service_monitor: bool, gateway_hpa_owned: bool = False
) -> list[Manifest]:
    """Children that do not depend on the rollout's state."""
    out = [*gateway_children(md, settings, gateway_hpa_owned), disruption_budget(md)]
    if with_service_monitor:
        out.append(service_monitor(md))
    return out


def describe(manifest: Manifest) -> str:
    """`Kind/name`, for logs and errors."""
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def manifest_key(manifest: Manifest) -> tuple[str, str, str]:
    return (str(manifest["apiVersion"]), str(manifest["kind"]), str(manifest["metadata"]["name"]))


def strip_none(value: Any) -> Any:
    """Drop None values recursively (server-side apply treats null as 'remove this field')."""
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value
