"""The one interface every traffic provider implements, and the facts it is given.

A router is pure: from what the rollout wants (`RouteIntent`) it returns the Kubernetes objects that make
it so (a route ConfigMap for the built-in gateway, an HTTPRoute, a VirtualService). The controller applies
them with server-side apply and owns them; the router never talks to the API. That keeps every provider
unit-testable and lets the cluster tier validate the objects against the real CRDs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from mlrollout_serving.contract.routes import FallbackSettings, Mode, Sticky

Manifest = dict[str, Any]


def service_url(namespace: str, service: str, port: int) -> str:
    """A Service's in-cluster address (resolved through the pod's DNS search path)."""
    return f"http://{service}.{namespace}.svc:{port}"


@dataclass(frozen=True)
class Backend:
    """One track's Service: where its model servers answer."""

    service: str
    port: int
    revision: str

    def url(self, namespace: str) -> str:
        """The Service's in-cluster address."""
        return service_url(namespace, self.service, self.port)


@dataclass(frozen=True)
class RouteIntent:
    """What the rollout wants from the data plane right now."""

    namespace: str
    name: str  # the ModelDeployment; also the name clients call
    stable: Backend | None
    candidate: Backend | None
    candidate_weight: int  # 0..100 of live traffic to the candidate
    mirror_percent: int  # 0..100 of live traffic copied to the candidate (responses dropped)
    mode: Mode = "canary"
    sticky: Sticky | None = None
    fallback: FallbackSettings = field(default_factory=FallbackSettings)
    version: int = 1  # monotonically increasing; the gateway reports the version it applied
    step_started_at: float | None = None  # unix seconds the current rollout step started (None: no step)
    owner: Manifest | None = None  # ownerReference of the ModelDeployment, set on every object
    labels: Mapping[str, str] = field(default_factory=dict)  # the operator's labels for routing objects

    def metadata(self, name: str, **extra_labels: str) -> Manifest:
        """Metadata of a routing object: the operator's labels, the route version, the owner."""
        meta: Manifest = {
            "name": name,
            "namespace": self.namespace,
            "labels": {**self.labels, **extra_labels},
            "annotations": {"mlrollout.io/route-version": str(self.version)},
        }
        if self.owner is not None:
            meta["ownerReferences"] = [self.owner]
        return meta


@dataclass(frozen=True)
class Capabilities:
    """What only mlrollout's own gateway does, per provider (docs/traffic.md has the table and why).

    Weights, and mirroring where the implementation supports it, every provider expresses; these need the
    built-in gateway in the request path.
    """

    gateway_series: bool  # the gateway's mlrollout_gateway_* series (what clients see) exist
    fallback: bool  # a FallbackPolicy is applied (timeouts, circuit breaker, stable/backup/default/refuse)
    sticky: bool  # spec.traffic.sticky keys pin a client to a track (A/B)
    feedback: bool  # feedback ids and the feedback endpoint: the labels quality evidence needs


BUILTIN_GATEWAY: Final = Capabilities(gateway_series=True, fallback=True, sticky=True, feedback=True)
"""mlrollout's gateway does all of it."""
NO_GATEWAY: Final = Capabilities(gateway_series=False, fallback=False, sticky=False, feedback=False)
"""A Gateway API implementation or a mesh routes; the model servers' own series are the evidence."""


class TrafficRouter(Protocol):
    """A traffic provider: builtin gateway, Gateway API, Istio, or the null router."""

    name: str
    capabilities: Capabilities

    def manifests(self, intent: RouteIntent) -> list[Manifest]:
        """The objects that route traffic as `intent` says; applying them twice changes nothing."""
        ...


class NullRouter:
    """Routes nothing: for tests of the core, and for clusters where routing is managed elsewhere."""

    name = "null"
    capabilities = NO_GATEWAY

    def manifests(self, intent: RouteIntent) -> list[Manifest]:
        """Nothing to apply."""
        return []
