"""schemathesis runs the Open Inference Protocol's REST description against the gateway in front of a
real model server with the wine model: the same run as the model server's own (tests/support/oip.py:
the description's nine implemented operations; examples, coverage and fuzzing phases, positive and
negative; no 5xx, documented responses and media types, schema-violating requests refused, 405 with
Allow), with the gateway in between. Deterministic (a fixed seed, no example database)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_helpers import Proc, RouteFile, gateway, table
from tests.support.oip import SERVER_OPERATIONS, WINE_EXAMPLES, description, fuzz, wine_config
from tests.support.procs import ServerProcess

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def wine_gateway(tmp_path_factory: pytest.TempPathFactory, wine_stable: ServerProcess) -> Iterator[Proc]:
    routes = RouteFile(Path(tmp_path_factory.mktemp("oip")))
    routes.write(table(1, wine_stable.url))
    with gateway(routes) as gw:
        yield gw


@pytest.mark.timeout(240)
def test_the_protocol_description_holds_through_the_gateway(wine_gateway: Proc) -> None:
    found = fuzz(description(WINE_EXAMPLES), wine_config(wine_gateway.url), SERVER_OPERATIONS)
    assert found.errors == []
    assert found.failures == [], "\n".join(found.failures)
    assert found.cases >= 500
    served_ops = {operation for operation, _ in found.statuses}
    assert len(served_ops) == len(SERVER_OPERATIONS), sorted(served_ops)
    infer_ok = sum(n for (operation, status), n in found.statuses.items() if "infer" in operation and status == 200)
    assert infer_ok >= len(WINE_EXAMPLES) * 2, json.dumps(sorted(map(str, found.statuses.items())))
    assert not any(status >= 500 for _, status in found.statuses)
