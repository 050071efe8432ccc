"""Built-in provider: the route table of mlrollout's own gateway, in the ConfigMap the gateway watches.

The table's schema is the contract's (`mlrollout_serving.contract.routes.RouteTable`): building it here
validates the table exactly as the gateway will, so the operator can never write a table the gateway would
refuse.
"""

from __future__ import annotations

from typing import Any

import yaml

from mlrollout.traffic.base import FallbackSetting, Manifest, RouteIntent
from mlrollout_serving.contract.routes import (
    CONFIGMAP_KEY,
    FallbackSettings,
    Mirror,
    RouteTable,
    Sticky,
    Track,
    configmap_name,
)


def _fallback(setting: FallbackSetting) -> FallbackSettings:
    low = setting.low_confidence_action
    return FallbackSettings.model_validate(
        {
            "requestTimeoutSeconds": setting.request_timeout_seconds,
            "circuitBreaker": {
                "consecutiveFailures": setting.consecutive_failures,
                "openSeconds": setting.open_seconds,
            },
            "confidenceThreshold": setting.confidence_threshold,
            "chain": list(setting.chain),
            "lowConfidenceAction": low,
        }
    )


class BuiltinRouter:
    """Renders the RouteTable for mlrollout's gateway into its ConfigMap."""

    name = "builtin"

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
        sticky = None
        if intent.sticky is not None:
            sticky = Sticky(header=intent.sticky.header, json_field=intent.sticky.json_field)
        data: dict[str, Any] = {
            "version": intent.version,
            "mode": intent.mode,
            "tracks": tracks,
            "mirror": mirror,
            "sticky": sticky,
            "fallback": _fallback(intent.fallback),
        }
        return RouteTable.model_validate(data)

    def manifests(self, intent: RouteIntent) -> list[Manifest]:
        """The route ConfigMap; nothing while there is no stable Service to send traffic to."""
        if intent.stable is None:
            return []
        table = self.route_table(intent)
        meta: Manifest = {
            "name": configmap_name(intent.name),
            "namespace": intent.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "mlrollout",
                "mlrollout.io/model-deployment": intent.name[:63],
                "app.kubernetes.io/component": "routes",
            },
        }
        if intent.owner is not None:
            meta["ownerReferences"] = [intent.owner]
        body = yaml.safe_dump(table.to_wire(), sort_keys=True)
        return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {CONFIGMAP_KEY: body}}]
