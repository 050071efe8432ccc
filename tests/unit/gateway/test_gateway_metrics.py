"""The gateway's exposition follows docs/metrics.md: names, identity labels, histogram buckets."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.gateway.metrics import GatewayMetrics
from mlrollout_serving.gateway.proxy import Gateway
from mlrollout_serving.gateway.routes import parse_route_table


def _samples(m: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _labels(**extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": "prod", "model_deployment": "iris", **extra}.items()))


def test_request_counter_and_histogram() -> None:
    m = GatewayMetrics("prod", "iris")
    m.observe_request("stable", "r1", 200, 0.0004)
    m.observe_request("stable", "r1", 200, 0.0025)
    m.observe_request("stable", "r1", 503, 20.0)
    m.observe_request("candidate", "r2", 200, 0.001)
    s = _samples(m)
    assert s[(contract.GATEWAY_REQUESTS.name, _labels(track="stable", revision="r1", code="200"))] == 2
    assert s[(contract.GATEWAY_REQUESTS.name, _labels(track="stable", revision="r1", code="503"))] == 1
    bucket = contract.GATEWAY_DURATION.name + "_bucket"
    stable = {"track": "stable", "revision": "r1"}
    assert s[(bucket, _labels(**stable, le="0.0005"))] == 1
    assert s[(bucket, _labels(**stable, le="0.002"))] == 1
    assert s[(bucket, _labels(**stable, le="0.003"))] == 2
    assert s[(bucket, _labels(**stable, le="10.0"))] == 2
    assert s[(bucket, _labels(**stable, le="+Inf"))] == 3
    assert s[(contract.GATEWAY_DURATION.name + "_count", _labels(**stable))] == 3
    assert s[(contract.GATEWAY_DURATION.name + "_sum", _labels(**stable))] == pytest.approx(20.0029)
    # a value exactly on a bound belongs to that bucket (le is inclusive)
    m.observe_request("candidate", "r2", 200, 0.001)
    s = _samples(m)
    assert s[(bucket, _labels(track="candidate", revision="r2", le="0.001"))] == 2


def test_other_series_names_and_labels() -> None:
    m = GatewayMetrics("prod", "iris")
    m.fallback("candidate", "r2", "timeout", "stable")
    m.fallback_request("candidate", "r2", "timeout", "stable")
    m.mirror_sent("r3")
    m.mirror_drop("r3", "queue_full")
    m.shadow_agreement("r3", "label", 3, 1)
    m.shadow_abs_difference("r3", "variable", [0.0, 0.2])
    m.set_route_version(12)
    s = _samples(m)
    assert s[(contract.GATEWAY_FALLBACKS.name, _labels(track="candidate", revision="r2", reason="timeout",
                                                  action="stable"))] == 1  # fmt: skip
    assert s[(contract.GATEWAY_FALLBACK_REQUESTS.name, _labels(track="candidate", revision="r2", reason="timeout",
                                                          answered="stable"))] == 1  # fmt: skip
    assert s[(contract.GATEWAY_MIRRORED.name, _labels(track="shadow", revision="r3"))] == 1
    assert s[(contract.GATEWAY_MIRROR_DROPPED.name, _labels(track="shadow", revision="r3", reason="queue_full"))] == 1
    agreement = contract.GATEWAY_SHADOW_AGREEMENT.name
    assert s[(agreement, _labels(track="shadow", revision="r3", output="label", result="agree"))] == 3
    assert s[(agreement, _labels(track="shadow", revision="r3", output="label", result="disagree"))] == 1
    count = contract.GATEWAY_SHADOW_ABS_DIFF.name + "_count"
    assert s[(count, _labels(track="shadow", revision="r3", output="variable"))] == 2
    assert s[(contract.GATEWAY_ROUTE_VERSION.name, _labels(track="gateway", revision=""))] == 12


def test_upstream_connect_retries_are_read_from_the_owner_at_scrape_time() -> None:
    m = GatewayMetrics("prod", "iris")
    assert not [k for k in _samples(m) if k[0] == contract.GATEWAY_UPSTREAM_CONNECT_RETRIES.name]  # no gateway yet
    pools = {"stable": 0, "candidate": 2}
    m.upstream_retries = lambda: [
        (track, f"r-{track}", f"{track}.ns.svc:8080", count) for track, count in pools.items()
    ]
    pools["candidate"] += 1  # read when scraped, not when set
    s = _samples(m)
    name = contract.GATEWAY_UPSTREAM_CONNECT_RETRIES.name
    assert s[(name, _labels(track="candidate", revision="r-candidate", upstream="candidate.ns.svc:8080"))] == 3
    assert s[(name, _labels(track="stable", revision="r-stable", upstream="stable.ns.svc:8080"))] == 0


def test_the_gateway_reports_one_retry_series_per_upstream_of_the_active_table() -> None:
    """Tracks, the shadow and the backups; two backups on one upstream (the chain's and the low-confidence
    action's) stay one series, since a duplicate series would break the scrape."""
    table = parse_route_table(
        """
version: 3
tracks:
  stable: {upstream: "http://10.0.0.1:8080", revision: aaa, weight: 90}
  candidate: {upstream: "http://10.0.0.2:8080", revision: bbb, weight: 10}
mirror: {upstream: "http://10.0.0.3:8080", revision: ccc, percent: 10}
fallback:
  confidenceThreshold: 0.5
  chain:
    - {action: backup, backup: {name: tiny, upstream: "http://10.0.0.9:8080"}}
  lowConfidenceAction: {action: backup, backup: {name: small, upstream: "http://10.0.0.9:8080"}}
"""
    )

    async def go() -> None:
        m = GatewayMetrics("prod", "iris")
        gateway = Gateway(m)
        gateway.apply(table, "test")
        assert gateway.active is not None
        gateway.active.tracks["candidate"].pool.connect_retries = 4
        name = contract.GATEWAY_UPSTREAM_CONNECT_RETRIES.name
        series = {k: v for k, v in _samples(m).items() if k[0] == name}
        assert series == {
            (name, _labels(track="stable", revision="aaa", upstream="10.0.0.1:8080")): 0,
            (name, _labels(track="candidate", revision="bbb", upstream="10.0.0.2:8080")): 4,
            (name, _labels(track="shadow", revision="ccc", upstream="10.0.0.3:8080")): 0,
            (name, _labels(track="backup", revision="", upstream="10.0.0.9:8080")): 0,
        }
        backup_lines = [
            line for line in m.exposition().decode().splitlines()
            if line.startswith(name) and 'track="backup"' in line
        ]  # fmt: skip
        assert len(backup_lines) == 1, backup_lines
        gateway.close()

    asyncio.run(go())
