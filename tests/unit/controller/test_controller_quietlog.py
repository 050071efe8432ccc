"""kopf's per-tick "Timer 'on_timer' succeeded." line is dropped at INFO, and nothing else is: the handler
names come from kopf's own registry of the operator's handlers, the records go through kopf's own
per-object logger (issue 19: at N = 1,000 that line was 100 records a second and most of the log)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import kopf
import pytest

from mlrollout.controller import handlers, quietlog


def _registered(kind: str) -> list[str]:
    """The operator's handlers as kopf names them in its log lines (`str(handler)`)."""
    registry = kopf.get_default_registry()
    found = registry._spawning if kind == "timer" else registry._changing
    return sorted({str(h) for h in found.get_all_handlers()})


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def kopf_objects() -> Iterator[tuple[logging.Logger, _Records]]:
    logger = logging.getLogger(quietlog.KOPF_OBJECTS)
    records, level, filters = _Records(), logger.level, list(logger.filters)
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    yield logger, records
    logger.removeHandler(records)
    logger.setLevel(level)
    logger.filters[:] = filters


def test_the_operators_timer_is_the_one_quieted() -> None:
    assert callable(handlers.on_timer)  # the module's kopf decorators fill the registry read here
    assert _registered("timer") == ["Timer 'on_timer'"]


def test_timer_success_dropped_other_lines_kept(kopf_objects: tuple[logging.Logger, _Records]) -> None:
    logger, records = kopf_objects
    assert quietlog.quiet_timer_success(("on_timer",), "info") is not None
    adapter = logging.LoggerAdapter(logger, {"k8s_ref": {}})  # as kopf's ObjectLogger wraps it
    timer, change = _registered("timer")[0], _registered("change")[0]
    adapter.info(f"{timer} succeeded.")
    adapter.info(f"{change} succeeded.")
    adapter.info("step %d (canary %d%%) started", 1, 10)
    adapter.warning(f"{timer} succeeded.")  # not kopf's INFO line: kept
    adapter.error(f"{timer} failed with an exception. Will retry.")
    assert records.messages == [
        "Handler 'on_change' succeeded.",
        "step 1 (canary 10%) started",
        "Timer 'on_timer' succeeded.",
        "Timer 'on_timer' failed with an exception. Will retry.",
    ]


def test_debug_keeps_everything(kopf_objects: tuple[logging.Logger, _Records]) -> None:
    logger, records = kopf_objects
    assert quietlog.quiet_timer_success(("on_timer",), "DEBUG") is None
    logger.info("Timer 'on_timer' succeeded.")
    assert records.messages == ["Timer 'on_timer' succeeded."]
