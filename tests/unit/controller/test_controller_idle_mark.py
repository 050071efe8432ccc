"""The idle mark of `controller/handlers.py`: a watched change of a child Deployment takes a ModelDeployment
off the long timer, including a change that arrives while a pass runs (the pass listed the Deployments
before it, so it did not see it)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, cast

import pytest

from mlrollout.controller import handlers, naming
from mlrollout.controller.reconcile import Reconciled

on_tick = cast(Callable[..., Any], handlers.on_timer)  # kopf types its handlers as its own callback protocol
on_child = cast(Callable[..., Any], handlers.on_child)
LOG = logging.getLogger("test")


class _Reconciler:
    """A pass that finds the ModelDeployment idle; `during` runs in the middle of it (after its list)."""

    def __init__(self, during: Callable[[], None] = lambda: None) -> None:
        self.passes = 0
        self.during = during

    def reconcile(self, namespace: str, name: str, log: Any, now: datetime) -> Reconciled:
        self.passes += 1
        self.during()
        return Reconciled("Healthy", changed=False, events=(), idle=True)


@pytest.fixture
def reconciler(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Reconciler]:
    fake = _Reconciler()
    monkeypatch.setitem(handlers._STATE, "reconciler", fake)
    handlers._IDLE_SINCE.clear()
    handlers._TOUCHED.clear()
    yield fake
    cast(Callable[..., None], handlers.cleanup)()  # the passes' thread pools the ticks made
    handlers._IDLE_SINCE.clear()
    handlers._TOUCHED.clear()


def _deployment_changed(namespace: str, md: str) -> None:
    """What kopf calls on a watch event of one of `md`'s Deployments (on its event loop)."""
    labels = {naming.MANAGED_BY: "mlrollout", naming.MODEL_DEPLOYMENT: naming.label_value(md)}
    asyncio.run(on_child(namespace=namespace, labels=labels, logger=LOG))


def test_an_idle_model_deployment_waits_for_the_long_timer(reconciler: _Reconciler) -> None:
    handlers.reconcile("ml", "wine", LOG)
    on_timer(namespace="ml", name="wine", logger=LOG)
    assert reconciler.passes == 1  # idle: the next tick passes


def test_a_deployment_change_between_passes_brings_the_next_tick(reconciler: _Reconciler) -> None:
    handlers.reconcile("ml", "wine", LOG)
    _deployment_changed("ml", "wine")
    on_timer(namespace="ml", name="wine", logger=LOG)
    assert reconciler.passes == 2


def test_a_deployment_change_during_a_pass_brings_the_next_tick(reconciler: _Reconciler) -> None:
    """The pass listed the Deployments before the change and still found the ModelDeployment idle: the
    change must not be lost until the idle interval ends (a pod crash seen a minute late)."""
    reconciler.during = lambda: _in_another_thread(lambda: _deployment_changed("ml", "wine"))
    handlers.reconcile("ml", "wine", LOG)
    reconciler.during = lambda: None
    on_timer(namespace="ml", name="wine", logger=LOG)
    assert reconciler.passes == 2, "the Deployment's change during the pass was forgotten by its idle mark"


def test_a_pass_after_the_change_puts_it_back_on_the_long_timer(reconciler: _Reconciler) -> None:
    handlers.reconcile("ml", "wine", LOG)
    _deployment_changed("ml", "wine")
    on_timer(namespace="ml", name="wine", logger=LOG)  # sees the change
    on_timer(namespace="ml", name="wine", logger=LOG)  # nothing changed since: idle again
    assert reconciler.passes == 2


def test_another_model_deployments_change_leaves_it_idle(reconciler: _Reconciler) -> None:
    handlers.reconcile("ml", "wine", LOG)
    _deployment_changed("ml", "beer")
    _deployment_changed("other", "wine")
    on_timer(namespace="ml", name="wine", logger=LOG)
    assert reconciler.passes == 1


def on_timer(**kwargs: Any) -> None:
    """One tick, as kopf runs the async handler: on an event loop."""
    asyncio.run(on_tick(**kwargs))


def _in_another_thread(fn: Callable[[], None]) -> None:
    """kopf's event loop runs in another thread than the sync handlers' executor."""
    t = threading.Thread(target=fn)
    t.start()
    t.join()
