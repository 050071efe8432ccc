"""Route-table schema: what is accepted, what is refused and with which message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlrollout_serving.contract.routes import RouteTable, RouteTableError
from mlrollout_serving.gateway.routes import parse_route_table, route_table_from_configmap

BASE = """
version: 7
mode: canary
tracks:
  stable: {upstream: "http://10.0.0.1:8080", revision: aaa, weight: 95}
  candidate: {upstream: "http://10.0.0.2:8080", revision: bbb, weight: 5}
"""


def test_minimal_table_parses_with_defaults() -> None:
    table = parse_route_table(BASE)
    assert table.version == 7
    assert table.weights() == (("stable", 95.0), ("candidate", 5.0))
    assert table.fallback.request_timeout_seconds == 5.0
    assert table.fallback.circuit_breaker.consecutive_failures == 5
    assert table.mirror is None and table.sticky is None


def test_full_table_round_trips_through_the_wire_form() -> None:
    text = (
        BASE
        + """
mirror: {upstream: "http://10.0.0.3:8080", revision: ccc, percent: 10, queueSize: 50, timeoutSeconds: 0.5}
sticky: {header: X-User}
fallback:
  requestTimeoutSeconds: 0.8
  circuitBreaker: {consecutiveFailures: 3, openSeconds: 2}
  confidenceThreshold: 0.6
  chain:
    - {action: stable}
    - {action: backup, backup: {name: tiny, upstream: "http://10.0.0.9:8080"}}
    - {action: default, defaultResponse: {model_name: m, outputs: []}}
  lowConfidenceAction: {action: refuse, message: not sure}
"""
    )
    table = parse_route_table(text)
    assert table.sticky is not None and table.sticky.header == "x-user"
    assert table.mirror is not None and table.mirror.queue_size == 50
    assert [s.action for s in table.fallback.chain] == ["stable", "backup", "default"]
    again = RouteTable.model_validate(table.to_wire())
    assert again == table
    assert "requestTimeoutSeconds" in table.to_wire()["fallback"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("tracks:\n  candidate: {upstream: 'http://a:1', weight: 100}\n", "tracks must contain stable"),
        ("tracks:\n  stable: {upstream: 'http://a:1', weight: 60}\n", "must add up to 100, got 60"),
        ("tracks:\n  stable: {upstream: 'https://a:1', weight: 100}\n", "http://host:port"),
        ("tracks:\n  stable: {upstream: 'http://a', weight: 100}\n", "name its port"),
        ("tracks:\n  stable: {upstream: 'http://a:1/x', weight: 100}\n", "must not carry a path"),
        ("tracks:\n  stable: {upstream: 'http://a:1', weight: 101}\n", "less than or equal to 100"),
        ("tracks:\n  shadow: {upstream: 'http://a:1', weight: 100}\n", "tracks.shadow"),
    ],
)
def test_invalid_tracks_are_refused_with_the_reason(patch: str, message: str) -> None:
    with pytest.raises(RouteTableError, match=message):
        parse_route_table("version: 1\n" + patch)


def test_mode_rules() -> None:
    with pytest.raises(RouteTableError, match="mode ab needs a sticky key"):
        parse_route_table(BASE.replace("canary", "ab"))
    with pytest.raises(RouteTableError, match="weights must be 0 or 100"):
        parse_route_table(BASE.replace("canary", "blueGreen"))
    flipped = BASE.replace("canary", "blueGreen").replace("95", "0").replace("weight: 5", "weight: 100")
    assert parse_route_table(flipped).weights() == (("stable", 0.0), ("candidate", 100.0))


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ("- {action: backup}", "needs a backup"),
        ("- {action: default}", "needs a defaultResponse"),
        ("- {action: refuse}\n    - {action: stable}", "must be last"),
        ("- {action: stable}\n    - {action: stable}", "repeats an action"),
        ("- {action: stable, message: hi}", "must not carry a message"),
    ],
)
def test_invalid_chains_are_refused(chain: str, message: str) -> None:
    with pytest.raises(RouteTableError, match=message):
        parse_route_table(BASE + f"fallback:\n  chain:\n    {chain}\n")


def test_low_confidence_action_needs_a_threshold() -> None:
    with pytest.raises(RouteTableError, match="needs a confidenceThreshold"):
        parse_route_table(BASE + "fallback:\n  lowConfidenceAction: {action: stable}\n")


def test_sticky_needs_exactly_one_source() -> None:
    with pytest.raises(RouteTableError, match="exactly one of header or jsonField"):
        parse_route_table(BASE + "sticky: {header: a, jsonField: b}\n")
    with pytest.raises(RouteTableError, match="exactly one of header or jsonField"):
        parse_route_table(BASE + "sticky: {}\n")


def test_unknown_fields_and_garbage_are_refused() -> None:
    with pytest.raises(RouteTableError, match="weigth"):
        parse_route_table(BASE + "weigth: 3\n")
    with pytest.raises(RouteTableError, match="not valid YAML"):
        parse_route_table("version: [1\n")
    with pytest.raises(RouteTableError, match="mapping at the top level"):
        parse_route_table("- 1\n- 2\n")


def test_json_is_accepted_too() -> None:
    table = parse_route_table('{"version": 2, "tracks": {"stable": {"upstream": "http://127.0.0.1:9", "weight": 100}}}')
    assert table.weights() == (("stable", 100.0),)


def test_configmap_extraction() -> None:
    cm = {"metadata": {"name": "gw-routes"}, "data": {"routes.yaml": BASE}}
    assert route_table_from_configmap(cm).version == 7
    with pytest.raises(RouteTableError, match=r"ConfigMap gw-routes has no key 'other.yaml'"):
        route_table_from_configmap(cm, key="other.yaml")
    with pytest.raises(RouteTableError, match="no key"):
        route_table_from_configmap({"metadata": {"name": "x"}})


def test_contract_imports_without_the_data_planes_dependencies() -> None:
    """The operator imports the contract; it must not drag in YAML, numpy or the network stack."""
    code = (
        "import sys; import mlrollout_serving.contract.metrics, mlrollout_serving.contract.routes, "
        "mlrollout_serving.contract.process, mlrollout_serving.contract.profile; "
        "bad = {'aiohttp', 'httptools', 'uvloop', 'prometheus_client', 'yaml', 'numpy', 'onnxruntime'} "
        "& set(sys.modules); "
        "print(sorted(bad)); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
