"""The operator's configuration, from `MLROLLOUT_*` environment variables (set by the Helm chart)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from mlrollout import __version__
from mlrollout.analysis.queries import QueryError, backend_split_template
from mlrollout.api.modeldeployment import GatewayAutoscaling


@dataclass(frozen=True)
class OperatorSettings:
    """Everything that is not in a ModelDeployment or a policy."""

    serving_image: str = f"mlrollout/serving:{__version__}"
    gateway_image: str = f"mlrollout/serving:{__version__}"
    gateway_replicas: int = 1
    # an HPA for the gateway of every ModelDeployment that sets neither gateway.autoscaling nor gateway.replicas
    # (chart gatewayAutoscaling); None: gateway_replicas
    gateway_autoscaling: GatewayAutoscaling | None = None
    # the soft topology.kubernetes.io/zone spread beside the node one (chart topologySpread.zones); off for
    # clusters whose nodes carry no zone label, where it would void the node spread (children.spread)
    zone_spread: bool = True
    default_traffic_provider: str = "builtin"
    prometheus_url: str = ""
    verdicts_dir: str = ""  # tests: recorded verdicts/snapshots instead of Prometheus
    reconcile_interval: float = 10.0
    # looks due within this many seconds share Prometheus requests, taken ahead of time on the batcher's own
    # thread (controller/lookbatch.py); None (the default): the reconcile interval; 0: every look queries
    # alone. On by default since batches left kopf's worker threads: at N = 300 and 1,000 it took at least as
    # many looks per interval as alone, from 6-10 times fewer requests (docs/operator.md, "Scale")
    analysis_batch_window: float | None = None
    # timer passes of an idle ModelDeployment (Healthy, nothing rolling out): controller/pacing.py
    idle_interval: float = 60.0
    # the longest an unchanged child goes without an apply (drift repair bound): controller/applied.py
    resync_interval: float = 300.0
    metrics_port: int = 9102  # the operator's own /metrics; 0 disables
    # NetworkPolicies for ModelDeployments that do not set spec.networkPolicy.enabled
    network_policies: bool = False
    # the Prometheus pods the NetworkPolicies admit to /metrics (the chart's default: prometheus-operator's
    # pods in the namespace `monitoring`, where the chart's default prometheusUrl points)
    prometheus_namespace_labels: dict[str, str] = field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "monitoring"}
    )
    prometheus_pod_labels: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "prometheus"})
    # the Gateway API implementation's per-backend request counter (a checked template; empty: the traffic
    # split of gatewayAPI ModelDeployments is not checked). docs/traffic.md, "The split"
    gatewayapi_split_query: str = ""

    @property
    def batch_window(self) -> float:
        """Seconds within which looks share requests (0: none)."""
        return self.reconcile_interval if self.analysis_batch_window is None else max(self.analysis_batch_window, 0.0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        e = os.environ if env is None else env
        d = cls()
        return cls(
            serving_image=e.get("MLROLLOUT_SERVING_IMAGE", d.serving_image),
            gateway_image=e.get("MLROLLOUT_GATEWAY_IMAGE", d.gateway_image),
            gateway_replicas=int(e.get("MLROLLOUT_GATEWAY_REPLICAS", d.gateway_replicas)),
            gateway_autoscaling=parse_gateway_autoscaling(
                "MLROLLOUT_GATEWAY_AUTOSCALING", e.get("MLROLLOUT_GATEWAY_AUTOSCALING")
            ),
            default_traffic_provider=e.get("MLROLLOUT_DEFAULT_TRAFFIC_PROVIDER", d.default_traffic_provider),
            prometheus_url=e.get("MLROLLOUT_PROMETHEUS_URL", d.prometheus_url),
            verdicts_dir=e.get("MLROLLOUT_VERDICTS_DIR", d.verdicts_dir),
            reconcile_interval=float(e.get("MLROLLOUT_RECONCILE_INTERVAL", d.reconcile_interval)),
            analysis_batch_window=(
                float(e["MLROLLOUT_ANALYSIS_BATCH_WINDOW"])
                if e.get("MLROLLOUT_ANALYSIS_BATCH_WINDOW")
                else d.analysis_batch_window
            ),
            idle_interval=float(e.get("MLROLLOUT_IDLE_INTERVAL", d.idle_interval)),
            resync_interval=float(e.get("MLROLLOUT_RESYNC_INTERVAL", d.resync_interval)),
            metrics_port=int(e.get("MLROLLOUT_METRICS_PORT", d.metrics_port)),
            network_policies=parse_bool("MLROLLOUT_NETWORK_POLICIES", e.get("MLROLLOUT_NETWORK_POLICIES"), False),
            zone_spread=parse_bool("MLROLLOUT_ZONE_SPREAD", e.get("MLROLLOUT_ZONE_SPREAD"), d.zone_spread),
            prometheus_namespace_labels=parse_labels(
                "MLROLLOUT_PROMETHEUS_NAMESPACE_LABELS", e.get("MLROLLOUT_PROMETHEUS_NAMESPACE_LABELS"),
                d.prometheus_namespace_labels,
            ),
            prometheus_pod_labels=parse_labels(
                "MLROLLOUT_PROMETHEUS_POD_LABELS", e.get("MLROLLOUT_PROMETHEUS_POD_LABELS"), d.prometheus_pod_labels
            ),
            gatewayapi_split_query=parse_split_query(
                "MLROLLOUT_GATEWAYAPI_SPLIT_QUERY", e.get("MLROLLOUT_GATEWAYAPI_SPLIT_QUERY")
            ),
        )  # fmt: skip


def parse_bool(name: str, text: str | None, default: bool) -> bool:
    """`true` or `false` (any case); absent or empty: the default. Anything else is an error naming the variable."""
    if not text:
        return default
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ValueError(f"{name} must be true or false, not {text!r}")


GATEWAY_CPU_DEFAULT: str = (
    "metric cpu cannot be the operator's default: the HPA measures a share of the gateway pods' cpu request, "
    "which only a ModelDeployment sets (spec.gateway.resources); use requestsPerSecond or concurrency, or set "
    "cpu per ModelDeployment"
)


def parse_gateway_autoscaling(name: str, text: str | None) -> GatewayAutoscaling | None:
    """The chart's gatewayAutoscaling as JSON (`{"minReplicas": 2, "maxReplicas": 10, "metric":
    "requestsPerSecond", "target": 100}`), checked by the API's own model; absent, empty or {}: None. A bad
    one is an error naming the variable at start-up, not an HPA every ModelDeployment gets wrong."""
    if not text or not text.strip():
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} must be a JSON object: {exc}") from None
    if raw in ({}, None):
        return None
    try:
        scaling = GatewayAutoscaling.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{name}: {'; '.join(_said(e) for e in exc.errors())}") from None
    if scaling.metric == "cpu":
        raise ValueError(f"{name}: {GATEWAY_CPU_DEFAULT}")
    return scaling


def _said(error: object) -> str:
    e = error if isinstance(error, dict) else {}
    where = ".".join(str(p) for p in e.get("loc") or ()) or "value"
    return f"{where}: {e.get('msg', error)}"


def parse_split_query(name: str, text: str | None) -> str:
    """A preset's name or a per-backend counter template, checked; absent or empty: "" (not set). A bad one is
    an error naming the variable, at start-up, rather than an inconclusive verdict at every look."""
    if not text or not text.strip():
        return ""
    try:
        return backend_split_template(text)
    except QueryError as exc:
        raise ValueError(f"{name}: {exc}") from None


def parse_labels(name: str, text: str | None, default: dict[str, str]) -> dict[str, str]:
    """`key=value,key2=value2` (a kubectl equality selector); absent: the default; empty: no labels (matches all)."""
    if text is None:
        return dict(default)
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or "=" in value:
            raise ValueError(f"{name} must look like key=value,key2=value2, not {text!r}")
        labels[key.strip()] = value.strip()
    return labels
