"""Which threads the handlers of `controller/handlers.py` take, invoked by kopf's own `invoke` (sync
handlers on kopf's one executor, async ones on its event loop): a spec change must not queue behind the
timers' passes, and a tick of an idle ModelDeployment takes no thread at all (issue 19: reconcile p99 at
N = 1,000, where the timers of 1,000 ModelDeployments tick 100 times a second)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, cast

import kopf
import pytest
from kopf._core.actions.invocation import invoke

from mlrollout.controller import handlers
from mlrollout.controller.reconcile import Reconciled

LOG = logging.getLogger("test")
WORKERS = 8  # kopf's executor and the timers' pool, as the operator's default MLROLLOUT_WORKERS
cleanup = cast(Callable[..., None], handlers.cleanup)  # kopf types its handlers as its own callback protocol


class _Blocking:
    """Passes of `busy-*` ModelDeployments hold their thread until released; others return at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.busy = threading.Semaphore(0)
        self.done: list[str] = []

    def reconcile(self, namespace: str, name: str, log: Any, now: datetime) -> Reconciled:
        if name.startswith("busy-"):
            self.busy.release()
            assert self.release.wait(30), "never released"
        self.done.append(name)
        return Reconciled("Healthy", changed=False, events=(), idle=False)


@pytest.fixture
def blocking(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Blocking]:
    fake = _Blocking()
    monkeypatch.setitem(handlers._STATE, "reconciler", fake)
    monkeypatch.setenv("MLROLLOUT_WORKERS", str(WORKERS))
    handlers._IDLE_SINCE.clear()
    handlers._TOUCHED.clear()
    yield fake
    fake.release.set()
    cleanup()  # the pools made for the test
    handlers._IDLE_SINCE.clear()


def _kopf_settings(executor: ThreadPoolExecutor) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.execution.executor = executor
    return settings


async def _saturated_then(blocking: _Blocking, settings: kopf.OperatorSettings, then: Any) -> float:
    """Every timer thread busy with a pass (more due behind them), then `then` invoked by kopf: its seconds."""
    ticks = [
        asyncio.ensure_future(invoke(handlers.on_timer, settings=settings,
                                     kwargs={"namespace": "ml", "name": f"busy-{i}", "logger": LOG}))
        for i in range(2 * WORKERS)
    ]  # fmt: skip
    for _ in range(WORKERS):  # every thread is in a pass
        assert await asyncio.to_thread(blocking.busy.acquire, True, 10), "the timers' passes did not start"
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(then(), timeout=5)
        return loop.time() - started
    finally:
        blocking.release.set()
        await asyncio.gather(*ticks)


def test_a_spec_change_does_not_wait_for_the_timers_passes(blocking: _Blocking) -> None:
    with ThreadPoolExecutor(WORKERS) as kopf_executor:
        settings = _kopf_settings(kopf_executor)

        async def change() -> None:
            await invoke(handlers.on_change, settings=settings,
                         kwargs={"namespace": "ml", "name": "wine", "logger": LOG})  # fmt: skip

        seconds = asyncio.run(_saturated_then(blocking, settings, change))
    assert blocking.done[0] == "wine", "the change's pass waited for the timers' passes"
    assert seconds < 5


def test_an_idle_tick_takes_no_thread(blocking: _Blocking) -> None:
    handlers._IDLE_SINCE[("ml", "wine")] = time.monotonic()  # its last pass found it idle just now
    with ThreadPoolExecutor(WORKERS) as kopf_executor:
        settings = _kopf_settings(kopf_executor)

        async def idle_tick() -> None:
            await invoke(handlers.on_timer, settings=settings,
                         kwargs={"namespace": "ml", "name": "wine", "logger": LOG})  # fmt: skip

        asyncio.run(_saturated_then(blocking, settings, idle_tick))
    assert "wine" not in blocking.done  # idle: no pass, and it returned while every thread was busy
