"""Gateway API provider: one `HTTPRoute` that weights the stable and candidate Services and mirrors.

The route is named after the ModelDeployment and attached to a Gateway the platform team runs (its name
and namespace are settings, given to the constructor). Live traffic is split with `backendRefs` weights;
shadow traffic is a `RequestMirror` filter to the candidate. Gateway API v1.3 put a mirror share into the
standard channel as `percent` (or `fraction`); the router writes whichever form the installed CRD accepts,
which the controller learns once with `mirror_style_of(crd)`.

An implementation that cannot mirror must never see a RequestMirror filter: Gateway API lets it answer
every request of such a rule with a 500 (Traefik 3.6 does). The controller reads what the implementation
supports from its GatewayClass' ``status.supportedFeatures`` (``gatewayapi_status``) and builds the router
with ``mirror_style="none"`` (no mirror) or ``"full"`` (every request, no share); the state machine holds a
step that needs a mirror the implementation lacks.

Sticky (A/B) keys are not expressed: session persistence is only in Gateway API's experimental channel;
use the built-in gateway for sticky experiments (the API refuses sticky with this provider).
"""

from __future__ import annotations

from typing import Any, Final, Literal

from mlrollout.traffic.base import NO_GATEWAY, Backend, Manifest, RouteIntent

API_VERSION: Final = "gateway.networking.k8s.io/v1"
CRD_NAME: Final = "httproutes.gateway.networking.k8s.io"

MirrorStyle = Literal["percent", "fraction", "full", "none"]
"""How a RequestMirror share is written (percent, fraction), or that only every request (full) or nothing
(none) can be mirrored."""


def mirror_style_of(crd: Manifest) -> MirrorStyle | None:
    """How the installed HTTPRoute CRD lets a RequestMirror filter say "this share": percent, fraction, or
    None when it cannot (before Gateway API v1.3 a mirror copied every request)."""
    for version in crd.get("spec", {}).get("versions", []):
        if version.get("name") != "v1" or not version.get("served"):
            continue
        mirror = _dig(
            version,
            "schema", "openAPIV3Schema", "properties", "spec", "properties", "rules", "items", "properties",
            "filters", "items", "properties", "requestMirror", "properties",
        )  # fmt: skip
        if isinstance(mirror, dict):
            if "percent" in mirror:
                return "percent"
            if "fraction" in mirror:
                return "fraction"
    return None


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class GatewayApiRouter:
    """Writes an HTTPRoute attached to one Gateway (optionally one of its listeners)."""

    name = "gatewayAPI"
    capabilities = NO_GATEWAY

    def __init__(
        self,
        gateway_name: str,
        gateway_namespace: str | None = None,
        section_name: str | None = None,
        mirror_style: MirrorStyle | None = "percent",  # None: as "full" (a CRD without a share field)
    ) -> None:
        self.gateway_name = gateway_name
        self.gateway_namespace = gateway_namespace
        self.section_name = section_name
        self.mirror_style = mirror_style

    def manifests(self, intent: RouteIntent) -> list[Manifest]:
        """One HTTPRoute; nothing while there is no stable Service to send traffic to."""
        if intent.stable is None:
            return []
        return [self.http_route(intent)]

    def http_route(self, intent: RouteIntent) -> Manifest:
        """The HTTPRoute for `intent` (requires a stable backend)."""
        assert intent.stable is not None
        candidate_weight = intent.candidate_weight if intent.candidate is not None else 0
        backends = [_backend_ref(intent.stable, 100 - candidate_weight)]
        if intent.candidate is not None:
            backends.append(_backend_ref(intent.candidate, candidate_weight))
        rule: Manifest = {"backendRefs": backends}
        if intent.candidate is not None and intent.mirror_percent > 0:
            mirror = self._mirror_filter(intent.candidate, intent.mirror_percent)
            if mirror is not None:
                rule["filters"] = [mirror]
        parent: Manifest = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": self.gateway_name}
        if self.gateway_namespace:
            parent["namespace"] = self.gateway_namespace
        if self.section_name:
            parent["sectionName"] = self.section_name
        return {
            "apiVersion": API_VERSION,
            "kind": "HTTPRoute",
            "metadata": intent.metadata(intent.name),
            "spec": {"parentRefs": [parent], "rules": [rule]},
        }

    def _mirror_filter(self, candidate: Backend, percent: int) -> Manifest | None:
        """The RequestMirror filter, or None where it cannot be what the rollout asks: the implementation
        mirrors nothing, or only every request while a share is wanted (copying every request instead
        could overload the candidate). The state machine holds such a step (`Routing.cannot_mirror`)."""
        mirror: Manifest = {"backendRef": {"name": candidate.service, "port": candidate.port}}
        if self.mirror_style == "none":
            return None
        if percent < 100:
            if self.mirror_style == "percent":
                mirror["percent"] = percent
            elif self.mirror_style == "fraction":
                mirror["fraction"] = {"numerator": percent, "denominator": 100}
            else:
                return None
        return {"type": "RequestMirror", "requestMirror": mirror}


def _backend_ref(backend: Backend, weight: int) -> Manifest:
    return {"group": "", "kind": "Service", "name": backend.service, "port": backend.port, "weight": weight}
