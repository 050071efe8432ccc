"""The operator's configuration, from `MLROLLOUT_*` environment variables (set by the Helm chart)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mlrollout import __version__


@dataclass(frozen=True)
class OperatorSettings:
    """Everything that is not in a ModelDeployment or a policy."""

    serving_image: str = f"mlrollout/serving:{__version__}"
    gateway_image: str = f"mlrollout/serving:{__version__}"
    gateway_replicas: int = 1
    default_traffic_provider: str = "builtin"
    prometheus_url: str = ""
    verdicts_dir: str = ""  # tests: recorded verdicts/snapshots instead of Prometheus
    reconcile_interval: float = 10.0
    metrics_port: int = 9102  # the operator's own /metrics; 0 disables

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        e = os.environ if env is None else env
        d = cls()
        return cls(
            serving_image=e.get("MLROLLOUT_SERVING_IMAGE", d.serving_image),
            gateway_image=e.get("MLROLLOUT_GATEWAY_IMAGE", d.gateway_image),
            gateway_replicas=int(e.get("MLROLLOUT_GATEWAY_REPLICAS", d.gateway_replicas)),
            default_traffic_provider=e.get("MLROLLOUT_DEFAULT_TRAFFIC_PROVIDER", d.default_traffic_provider),
            prometheus_url=e.get("MLROLLOUT_PROMETHEUS_URL", d.prometheus_url),
            verdicts_dir=e.get("MLROLLOUT_VERDICTS_DIR", d.verdicts_dir),
            reconcile_interval=float(e.get("MLROLLOUT_RECONCILE_INTERVAL", d.reconcile_interval)),
            metrics_port=int(e.get("MLROLLOUT_METRICS_PORT", d.metrics_port)),
        )
