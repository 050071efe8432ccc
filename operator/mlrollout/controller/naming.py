"""Names and labels of everything the operator creates for one ModelDeployment (one place, so they agree).

Per revision: Deployment and Service `<md>-<revision>` (the revision hash is content-addressed, so a
promotion never renames anything: the route table switches atomically from one Service to another).
Per ModelDeployment: the gateway Deployment and Service named `<md>` (the address clients call), the route
ConfigMap `<md>-routes` (named by `contract.routes.configmap_name`), the gateway's ServiceAccount, Role and
RoleBinding `<md>-gateway`, the PodDisruptionBudget and ServiceMonitor `<md>`, the HorizontalPodAutoscalers
`<md>` (stable track) and `<md>-gateway` (when autoscaled), the look history ConfigMap
`<md>-looks` (named by `rollout.lookhistory.configmap_name`), and (when enabled) the NetworkPolicies `<md>-gateway` and
`<md>-model-server`.
"""

from __future__ import annotations

from typing import Final

from mlrollout.traffic.base import service_url
from mlrollout_serving.contract.process import GATEWAY_PORT

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
NAME: Final = "app.kubernetes.io/name"
INSTANCE: Final = "app.kubernetes.io/instance"
COMPONENT: Final = "app.kubernetes.io/component"
MODEL_DEPLOYMENT: Final = "mlrollout.io/model-deployment"
TRACK: Final = "mlrollout.io/track"
REVISION: Final = "mlrollout.io/revision"
FIELD_MANAGER: Final = "mlrollout-operator"
REPLICAS_FIELD_MANAGER: Final = "mlrollout-operator-replicas"
"""Sets an autoscaled stable's replicas only when they must change, so that the HPA owns them otherwise
(the Kubernetes documentation's hand-over of a field to an HPA, docs/operator.md "Autoscaling")."""
SERVER_COMPONENT: Final = "model-server"
GATEWAY_COMPONENT: Final = "gateway"
HTTP_PORT_NAME: Final = "http"
SERVER_CONTAINER: Final = "server"
"""The model server's container in a revision's pods (the operator reads its start-up log lines)."""


def track_name(md: str, revision: str) -> str:
    """Deployment and Service of one revision (a DNS label: at most 63 characters)."""
    return f"{md[: 63 - len(revision) - 1]}-{revision}"


def gateway_name(md: str) -> str:
    """The gateway's Deployment and Service: the ModelDeployment's own name, so clients call `<md>`."""
    return md[:63]


def gateway_url(namespace: str, md: str) -> str:
    """The address clients (and other gateways, for a backup model) call for one ModelDeployment."""
    return service_url(namespace, gateway_name(md), GATEWAY_PORT)


def gateway_identity(md: str) -> str:
    """ServiceAccount, Role and RoleBinding of the gateway."""
    return f"{md[:55]}-gateway"


def gateway_autoscaler_name(md: str) -> str:
    """The gateway's HorizontalPodAutoscaler (the stable track's is `<md>`)."""
    return gateway_identity(md)


def network_policy_name(md: str, component: str) -> str:
    """The ingress NetworkPolicy of one component's pods (`<md>-gateway`, `<md>-model-server`)."""
    return f"{md[: 63 - len(component) - 1]}-{component}"


def label_value(md: str) -> str:
    """A ModelDeployment's name as a label value (names may be 253 characters, label values 63)."""
    return md[:63]


def selector(md: str, **labels: str) -> dict[str, str]:
    """The labels that select one ModelDeployment's objects (plus any given, e.g. a revision)."""
    return {MODEL_DEPLOYMENT: label_value(md), **labels}


def routing_labels(md: str) -> dict[str, str]:
    """Labels on routing objects (route ConfigMap, HTTPRoute, VirtualService)."""
    return {MANAGED_BY: "mlrollout", MODEL_DEPLOYMENT: label_value(md)}


def base_labels(md: str, component: str) -> dict[str, str]:
    """Labels on every child: who manages it, which ModelDeployment it belongs to, what it is."""
    return {
        **routing_labels(md),
        INSTANCE: label_value(md),
        COMPONENT: component,
        NAME: "mlrollout-gateway" if component == GATEWAY_COMPONENT else "mlrollout-serve",
    }


def child_selector(md: str) -> str:
    """Label selector (string form) matching every child of one ModelDeployment."""
    return f"{MANAGED_BY}=mlrollout,{MODEL_DEPLOYMENT}={label_value(md)}"
