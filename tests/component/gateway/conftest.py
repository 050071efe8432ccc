"""Fixtures for the gateway's component tests (helpers live in gateway_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_helpers import Proc, RouteFile, fake_upstream


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
