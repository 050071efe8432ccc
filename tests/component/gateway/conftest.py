"""Fixtures for the gateway's component tests (helpers live in gateway_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.gateway.gateway_helpers import Proc, RouteFile, fake_upstream
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, serve_model

LABELS = {"namespace": "test-ns", "model_deployment": "wine"}


@pytest.fixture
def routes(tmp_path: Path) -> RouteFile:
    return RouteFile(tmp_path)


@pytest.fixture
def up_a() -> Iterator[Proc]:
    with fake_upstream("up-a") as proc:
        yield proc


@pytest.fixture
def up_b() -> Iterator[Proc]:
    with fake_upstream("up-b") as proc:
        yield proc


@pytest.fixture
def up_c() -> Iterator[Proc]:
    with fake_upstream("up-c") as proc:
        yield proc


# Real model servers (tests/support/procs.py) with real ONNX models; module scope: they start in seconds
# but every test module needs only a few of them.
@pytest.fixture(scope="module")
def wine_stable(wine_model: BuiltModel) -> Iterator[ServerProcess]:
    with serve_model(wine_model, name="wine", labels={**LABELS, "track": "stable", "revision": "r-stable"}) as s:
        yield s


@pytest.fixture(scope="module")
def wine_candidate(wine_worse_model: BuiltModel) -> Iterator[ServerProcess]:
    labels = {**LABELS, "track": "candidate", "revision": "r-candidate"}
    with serve_model(wine_worse_model, name="wine", labels=labels) as s:
        yield s


@pytest.fixture(scope="module")
def wine_shadow(wine_worse_model: BuiltModel) -> Iterator[ServerProcess]:
    with serve_model(wine_worse_model, name="wine", labels={**LABELS, "track": "shadow", "revision": "r-shadow"}) as s:
        yield s


@pytest.fixture(scope="module")
def diabetes_pair(diabetes_model: BuiltModel) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with (
        serve_model(diabetes_model, name="diabetes", labels={**LABELS, "track": "stable"}) as a,
        serve_model(diabetes_model, name="diabetes", labels={**LABELS, "track": "shadow"}) as b,
    ):
        yield a, b
