"""The gateway's Prometheus series, named and labelled exactly as docs/metrics.md says.

Label children are cached per (track, revision, ...) so the hot path does one dict lookup and one
increment instead of prometheus_client's label validation on every request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .. import contract
from ..contract import IDENTITY_LABELS, LATENCY_BUCKETS

__all__ = ["ABS_DIFF_BUCKETS", "GatewayMetrics"]

# Absolute differences between shadow and primary regressor outputs: spans rounding noise to large errors.
ABS_DIFF_BUCKETS: tuple[float, ...] = (
    1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0, float("inf"),
)  # fmt: skip

_ID = list(IDENTITY_LABELS)


def _strip(name: str) -> str:
    """prometheus_client appends `_total` to counters itself."""
    return name.removesuffix("_total")


class GatewayMetrics:
    """Owns a private registry (so tests can run several gateways in one process)."""

    def __init__(self, namespace: str, model_deployment: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._ns = namespace
        self._md = model_deployment
        r = self.registry
        self.requests = Counter(
            _strip(contract.GATEWAY_REQUESTS), "Requests answered, by serving track and HTTP code.",
            [*_ID, "code"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            contract.GATEWAY_DURATION, "Time from request received to response sent, by track.",
            _ID, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            _strip(contract.GATEWAY_FALLBACKS), "Fallbacks taken; track is the track that failed.",
            [*_ID, "reason", "action"], registry=r,
        )  # fmt: skip
        self.mirrored = Counter(_strip(contract.GATEWAY_MIRRORED), "Copies sent to the shadow track.", _ID, registry=r)
        self.mirror_dropped = Counter(
            _strip(contract.GATEWAY_MIRROR_DROPPED), "Copies not sent or not answered.",
            [*_ID, "reason"], registry=r,
        )  # fmt: skip
        self.agreement = Counter(
            _strip(contract.GATEWAY_SHADOW_AGREEMENT), "Classifier rows where shadow and primary agree or not.",
            [*_ID, "output", "result"], registry=r,
        )  # fmt: skip
        self.abs_difference = Histogram(
            contract.GATEWAY_SHADOW_ABS_DIFF, "Absolute shadow-minus-primary difference per regressor element.",
            [*_ID, "output"], buckets=ABS_DIFF_BUCKETS, registry=r,
        )  # fmt: skip
        self.route_version = Gauge(
            contract.GATEWAY_ROUTE_VERSION, "Version of the active route table.", _ID, registry=r
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}

    def observe_request(self, track: str, revision: str, code: int, seconds: float) -> None:
        """Count one answered request and its duration (the hot path: cached children only)."""
        key = (track, revision, code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self.requests.labels(self._ns, self._md, track, revision, str(code))
            self._request_children[key] = counter
        counter.inc()
        hkey = (track, revision)
        hist = self._duration_children.get(hkey)
        if hist is None:
            hist = self.duration.labels(self._ns, self._md, track, revision)
            self._duration_children[hkey] = hist
        hist.observe(seconds)

    def fallback(self, track: str, revision: str, reason: str, action: str) -> None:
        self.fallbacks.labels(self._ns, self._md, track, revision, reason, action).inc()

    def mirror_sent(self, revision: str) -> None:
        self.mirrored.labels(self._ns, self._md, "shadow", revision).inc()

    def mirror_drop(self, revision: str, reason: str) -> None:
        self.mirror_dropped.labels(self._ns, self._md, "shadow", revision, reason).inc()

    def shadow_agreement(self, revision: str, output: str, agree: int, disagree: int) -> None:
        if agree:
            self.agreement.labels(self._ns, self._md, "shadow", revision, output, "agree").inc(agree)
        if disagree:
            self.agreement.labels(self._ns, self._md, "shadow", revision, output, "disagree").inc(disagree)

    def shadow_abs_difference(self, revision: str, output: str, values: list[float]) -> None:
        hist = self.abs_difference.labels(self._ns, self._md, "shadow", revision, output)
        for value in values:
            hist.observe(value)

    def set_route_version(self, version: int) -> None:
        self.route_version.labels(self._ns, self._md, "gateway", "").set(version)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
