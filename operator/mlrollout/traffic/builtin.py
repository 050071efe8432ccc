"""Built-in provider: the route table of mlrollout's own gateway, in the ConfigMap the gateway watches.

The table's schema is the contract's (`mlrollout_serving.contract.routes.RouteTable`): building it here
validates the table exactly as the gateway will, so the operator can never write a table the gateway would
refuse.
"""

from __future__ import annotations

import yaml

from mlrollout.traffic.base import BUILTIN_GATEWAY, Manifest, RouteIntent
from mlrollout_serving.contract.routes import (
    CONFIGMAP_KEY,
    Mirror,
    RouteTable,
    Track,
    configmap_name,
)


class BuiltinRouter:
    """Renders the RouteTable for mlrollout's gateway into its ConfigMap."""

    name = "builtin"
    capabilities = BUILTIN_GATEWAY

    def route_table(self, intent: RouteIntent) -> RouteTable:
        """The table for `intent` (requires a stable backend)."""
        assert intent.stable is not None
        ns = intent.namespace
        weight = intent.candidate_weight if intent.candidate is not None else 0
        tracks: dict[str, Track] = {
            "stable": Track(upstream=intent.stable.url(ns), revision=intent.stable.revision, weight=100 - weight)
        }
        if intent.candidate is not None and weight > 0:
            tracks["candidate"] = Track(
                upstream=intent.candidate.url(ns), revision=intent.candidate.revision, weight=weight
            )
        mirror = None
        if intent.candidate is not None and intent.mirror_percent > 0:
            mirror = Mirror(
                upstream=intent.candidate.url(ns),
                revision=intent.candidate.revision,
                percent=intent.mirror_percent,
            )
        return RouteTable(
            version=intent.version,
            mode=intent.mode,
            tracks=tracks,
            mirror=mirror,
            sticky=intent.sticky,
            fallback=intent.fallback,
            step_started_at=intent.step_started_at,
        )

    def manifests(self, intent: RouteIntent) -> list[Manifest]:
        """The route ConfigMap; nothing while there is no stable Service to send traffic to."""
        if intent.stable is None:
            return []
        table = self.route_table(intent)
        meta = intent.metadata(configmap_name(intent.name), **{"app.kubernetes.io/component": "routes"})
        body = yaml.safe_dump(table.to_wire(), sort_keys=True)
        return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {CONFIGMAP_KEY: body}}]
