"""The router factory: a provider name (spec.traffic.provider) to its router. The core never names one.

Gateway API and Istio routers are imported lazily, so a cluster without them never loads their modules.
Their settings come from the operator's environment:
`MLROLLOUT_GATEWAYAPI_GATEWAY` / `MLROLLOUT_GATEWAYAPI_NAMESPACE` / `MLROLLOUT_GATEWAYAPI_SECTION`
(the Gateway an HTTPRoute attaches to) and `MLROLLOUT_ISTIO_GATEWAYS` (comma-separated, optional).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mlrollout.traffic.base import NullRouter, TrafficRouter
from mlrollout.traffic.builtin import BuiltinRouter

PROVIDERS = ("builtin", "gatewayAPI", "istio", "null")


class UnknownProvider(ValueError):
    """A provider name no router answers to."""


def router_for(name: str, env: Mapping[str, str] | None = None, mirror: str | None = None) -> TrafficRouter:
    """The router for a provider name; raises UnknownProvider for anything else. ``mirror`` is what the
    Gateway API implementation can mirror (``percent``, ``full``, ``none``; None: not said, a share assumed)."""
    e = os.environ if env is None else env
    if name == "builtin":
        return BuiltinRouter()
    if name == "null":
        return NullRouter()
    if name == "gatewayAPI":
        from mlrollout.traffic.gatewayapi import GatewayApiRouter

        return GatewayApiRouter(
            gateway_name=e.get("MLROLLOUT_GATEWAYAPI_GATEWAY", "mlrollout"),
            gateway_namespace=e.get("MLROLLOUT_GATEWAYAPI_NAMESPACE") or None,
            section_name=e.get("MLROLLOUT_GATEWAYAPI_SECTION") or None,
            mirror_style="none" if mirror == "none" else "full" if mirror == "full" else "percent",
        )
    if name == "istio":
        from mlrollout.traffic.istio import IstioRouter

        gateways = tuple(g for g in e.get("MLROLLOUT_ISTIO_GATEWAYS", "").split(",") if g)
        return IstioRouter(gateways=gateways)
    raise UnknownProvider(f"unknown traffic provider {name!r}; use one of {', '.join(PROVIDERS)}")
