"""schemathesis runs the Open Inference Protocol's REST description against the gateway in front of a
real model server with the wine model: the same run as the model server's own (tests/support/oip.py:
the description's nine implemented operations; examples, coverage and fuzzing phases, positive and
negative; no 5xx, documented responses and media types, schema-violating requests refused, 405 with
Allow), with the gateway in between. Deterministic (a fixed seed, no example database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.gateway.gateway_helpers import Proc, RouteFile, gateway, table
from tests.support.oip import assert_wine_protocol_holds
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
    assert_wine_protocol_holds(wine_gateway.url)
