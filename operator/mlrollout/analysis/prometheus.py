"""Prometheus adapter on ``prometheus-api-client``: short timeouts, no retries, errors as values.

A long query (a union of many looks' queries, analysis/batch.py) goes as a POST form body, as the HTTP API
allows: in a URL it would pass the server's limit on a request line."""

from __future__ import annotations

import math
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from mlrollout.analysis.provider import Measurement, Sample

__all__ = ["POST_ABOVE_CHARS", "PrometheusProvider"]

POST_ABOVE_CHARS = 4000
"""Queries longer than this are sent in a POST body rather than the URL."""


class PrometheusProvider:
    """Instant queries against ``url``. The analysis loop retries at the next interval, so one attempt
    with a bounded timeout is better than client-side retries that would delay the verdict."""

    def __init__(self, url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = headers
        self._session = requests.Session()
        self._client = PrometheusConnect(
            url=self.url,
            headers=headers,
            disable_ssl=True,
            retry=Retry(total=0, raise_on_status=False),
            session=self._session,
        )

    def query(self, promql: str, at: float | None = None) -> Measurement:
        params = {} if at is None else {"time": f"{at:.3f}"}
        try:
            if len(promql) > POST_ABOVE_CHARS:
                result: Any = self._post(promql, params)
            else:
                result = self._client.custom_query(promql, params=params, timeout=self.timeout)
        except Exception as exc:  # any transport or API failure is data for the judge, never a crash
            return Measurement(error=self.describe(exc))
        return _to_measurement(result)

    def _post(self, promql: str, params: dict[str, str]) -> Any:
        """``custom_query`` with the query in a form body; the same answer, the same errors."""
        response = self._session.post(
            f"{self.url}/api/v1/query", data={"query": promql, **params}, headers=self.headers, timeout=self.timeout
        )
        if response.status_code != 200:
            raise PrometheusApiClientException(f"HTTP Status Code {response.status_code} ({response.content!r})")
        return response.json()["data"]["result"]

    def describe(self, exc: BaseException) -> str:
        """A failed query in one line for people: what failed, where, and the root cause; never the query,
        the full URL or a chain of wrapped exceptions (status and Events carry this)."""
        where = f"Prometheus at {self.url}"
        if isinstance(exc, requests.exceptions.Timeout):
            return f"{where} did not answer within {self.timeout:g}s"
        root: BaseException = exc
        while root.__cause__ is not None or root.__context__ is not None:
            root = root.__cause__ or root.__context__  # type: ignore[assignment]
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = root.strerror if isinstance(root, OSError) and root.strerror else type(root).__name__
            return f"{where} is unreachable: {reason}"
        text = " ".join(str(exc).split())
        if isinstance(exc, PrometheusApiClientException):
            return f"{where} refused the query: {text[:200]}"
        return f"{where}: query failed: {type(exc).__name__}: {text[:200]}"


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
