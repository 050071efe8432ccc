"""Istio provider: one `VirtualService` for the ModelDeployment's Service, weighted, with a mirror.

The VirtualService takes over the host clients already call (the Service named after the ModelDeployment)
and splits it between the stable and candidate Services by weight; shadow traffic uses `mirror` with an
explicit `mirrorPercentage` (Istio mirrors 100% when the percentage is absent, never what we want by
accident). Hosts are fully qualified so the object means the same from any namespace.

Sticky (A/B) keys are not expressed: Istio's consistent hashing picks pods within one Service, not between
two; use the built-in gateway for sticky experiments.
"""

from __future__ import annotations

from typing import Final

from mlrollout.traffic.base import NO_GATEWAY, Backend, Manifest, RouteIntent

API_VERSION: Final = "networking.istio.io/v1"


class IstioRouter:
    """Writes a VirtualService for the mesh (or for the given Istio gateways)."""

    name = "istio"
    capabilities = NO_GATEWAY

    def __init__(self, gateways: tuple[str, ...] = (), cluster_domain: str = "cluster.local") -> None:
        self.gateways = gateways
        self.cluster_domain = cluster_domain

    def manifests(self, intent: RouteIntent) -> list[Manifest]:
        """One VirtualService; nothing while there is no stable Service to send traffic to."""
        if intent.stable is None:
            return []
        return [self.virtual_service(intent)]

    def virtual_service(self, intent: RouteIntent) -> Manifest:
        """The VirtualService for `intent` (requires a stable backend)."""
        assert intent.stable is not None
        candidate_weight = intent.candidate_weight if intent.candidate is not None else 0
        routes = [self._destination(intent.namespace, intent.stable, 100 - candidate_weight)]
        if intent.candidate is not None:
            routes.append(self._destination(intent.namespace, intent.candidate, candidate_weight))
        http: Manifest = {"name": "mlrollout", "route": routes}
        if intent.candidate is not None and intent.mirror_percent > 0:
            http["mirror"] = self._destination(intent.namespace, intent.candidate, None)["destination"]
            http["mirrorPercentage"] = {"value": float(intent.mirror_percent)}
        spec: Manifest = {"hosts": [self.host(intent.name, intent.namespace)], "http": [http]}
        if self.gateways:
            spec["gateways"] = list(self.gateways)
        return {
            "apiVersion": API_VERSION,
            "kind": "VirtualService",
            "metadata": intent.metadata(intent.name),
            "spec": spec,
        }

    def host(self, service: str, namespace: str) -> str:
        """A Service's fully qualified name in the mesh."""
        return f"{service}.{namespace}.svc.{self.cluster_domain}"

    def _destination(self, namespace: str, backend: Backend, weight: int | None) -> Manifest:
        route: Manifest = {
            "destination": {"host": self.host(backend.service, namespace), "port": {"number": backend.port}}
        }
        if weight is not None:
            route["weight"] = weight
        return route
