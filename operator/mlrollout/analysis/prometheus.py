"""Prometheus adapter on ``prometheus-api-client``: short timeouts, no retries, errors as values."""

from __future__ import annotations

import math
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from mlrollout.analysis.provider import Measurement, Sample

__all__ = ["PrometheusProvider"]


class PrometheusProvider:
    """Instant queries against ``url``. The analysis loop retries at the next interval, so one attempt
    with a bounded timeout is better than client-side retries that would delay the verdict."""

    def __init__(self, url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = PrometheusConnect(
            url=self.url, headers=headers, disable_ssl=True, retry=Retry(total=0, raise_on_status=False)
        )

    def query(self, promql: str, at: float | None = None) -> Measurement:
        params = {} if at is None else {"time": f"{at:.3f}"}
        try:
            result: Any = self._client.custom_query(promql, params=params, timeout=self.timeout)
        except Exception as exc:  # any transport or API failure is data for the judge, never a crash
            return Measurement(error=f"prometheus query failed: {type(exc).__name__}: {exc}"[:500])
        return _to_measurement(result)


def _value(raw: Any) -> float:
    value = float(raw)
    return value if math.isfinite(value) else math.nan


def _to_measurement(result: Any) -> Measurement:
    """Instant vectors are lists of ``{"metric", "value"}``; scalars are ``[ts, "v"]``."""
    try:
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
            return Measurement((Sample({}, _value(result[1])),))
        samples = tuple(
            Sample({str(k): str(v) for k, v in item.get("metric", {}).items()}, _value(item["value"][1]))
            for item in result or []
        )
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        return Measurement(error=f"unexpected prometheus answer: {exc}")
    return Measurement(tuple(s for s in samples if not math.isnan(s.value)))
