"""kopf entry point: `kopf run -m mlrollout.controller.handlers [--all-namespaces | --namespace NS]`.

Thin on purpose: every handler calls `Reconciler.reconcile` (observe, decide, act), which is level-based
and idempotent, so it does not matter which trigger fires or how often:
- create / update (spec, labels or annotations such as `mlrollout.io/command`) / resume: react at once;
- a timer every MLROLLOUT_RECONCILE_INTERVAL seconds: the clock, child readiness and the analysis loop
  (a look is taken when the policy's analysis interval has passed; see `reconcile.analysis_due`); for an
  idle ModelDeployment (nothing rolling out) a tick passes only every MLROLLOUT_IDLE_INTERVAL seconds
  (`pacing.timer_due`; an in-memory mark, so a restarted operator reconciles everything at once). Any
  watched change of one of its Deployments (readiness, deletion, an edit) newer than the start of the pass
  that set the mark makes the next tick reconcile it, a change during that pass too: children changes are
  seen as soon as before.
A per-object lock keeps the timer and a change handler of the same object from deciding concurrently.
Threads: the handlers are async, so kopf runs them on its event loop and the passes go to pools of our
own: a timer's idle check costs no thread (at N = 1,000 most of the 100 ticks a second), its passes run on
the timers' pool (MLROLLOUT_WORKERS threads), and a change's pass on a pool of its own
(`CHANGE_WORKERS`), so a spec change or command never queues behind timer passes (issue 19: reconcile
p99 at N = 1,000; before, every tick and change shared kopf's one FIFO pool of 8).
kopf's progress and diff-base go to annotations (status belongs to the state machine). Liveness: kopf's
`--liveness` endpoint. Collisions between two operator processes: kopf peering (`--peering`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from kubernetes import client, config

from mlrollout.api.common import GROUP, VERSION
from mlrollout.controller import metrics, naming, pacing, quietlog
from mlrollout.controller.hooks import HookCaller
from mlrollout.controller.kube import Conflict, Kube, api_error_message
from mlrollout.controller.notifications import Notifier
from mlrollout.controller.reconcile import Reconciler
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.verdicts import PrometheusVerdicts, source_from

SETTINGS = OperatorSettings.from_env()
RESOURCE = (GROUP, VERSION, "modeldeployments")
Log = logging.Logger | logging.LoggerAdapter[Any]
_STATE: dict[str, Any] = {}
_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_IDLE_SINCE: dict[tuple[str, str], float] = {}  # monotonic start of the last pass that found it idle
# (namespace, model-deployment label value): monotonic time of the last watched change of one of its
# Deployments. A time, not a removal of the idle mark: a change while a pass runs (after its list) is newer
# than that pass's start, so the idle mark the pass then sets does not hide it (`pacing.timer_due`).
_TOUCHED: dict[tuple[str, str], float] = {}
CHANGE_WORKERS = 4
"""Threads for the passes of change handlers (create, update, resume): changes are rare beside ticks, and
a few threads let one slow pass (a 409 retried, a slow API server) not hold the next change."""
_POOLS: dict[str, ThreadPoolExecutor] = {}
T = TypeVar("T")


def _pool(kind: str) -> ThreadPoolExecutor:
    """The threads for one kind of pass (`timer` or `change`), made on first use."""
    with _LOCKS_GUARD:
        pool = _POOLS.get(kind)
        if pool is None:
            workers = CHANGE_WORKERS if kind == "change" else int(os.environ.get("MLROLLOUT_WORKERS", "8"))
            pool = _POOLS[kind] = ThreadPoolExecutor(workers, thread_name_prefix=f"mlrollout-{kind}")
        return pool


async def _in_pool(kind: str, fn: Callable[[], T]) -> T:
    """`fn` on one of the `kind` pool's threads, as kopf runs a sync handler: the context copied (kopf's
    per-object logging), and a cancelled handler waits for its thread (no orphan pass holding a lock)."""
    call = contextvars.copy_context().run
    future = asyncio.get_running_loop().run_in_executor(_pool(kind), call, fn)
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled
    return future.result()


def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


@kopf.on.startup()
def startup(*, settings: kopf.OperatorSettings, logger: Log, **_: Any) -> None:
    """Where kopf keeps its own bookkeeping, JSON logs, the metrics endpoint, the Kubernetes client."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # the reconciler posts its own Events, one per transition
    # No runtime observation of namespaces and CRDs: the operator serves the namespaces it is given (names,
    # never patterns) and its own CRD, installed before it starts. So its RBAC needs no list/watch on
    # namespaces or customresourcedefinitions (the chart grants none; kopf would log a warning without it).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.execution.max_workers = int(os.environ.get("MLROLLOUT_WORKERS", "8"))
    # How long a silent peer (e.g. a SIGKILLed operator) still counts as alive and keeps others paused.
    settings.peering.lifetime = int(os.environ.get("MLROLLOUT_PEERING_LIFETIME", "60"))
    if os.environ.get("MLROLLOUT_LOG_FORMAT", "json") == "json":
        level = os.environ.get("MLROLLOUT_LOG_LEVEL", "info").lower()
        kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object", debug=level == "debug",
                       quiet=level in ("warning", "error"))  # fmt: skip
    quietlog.quiet_timer_success(("on_timer",), os.environ.get("MLROLLOUT_LOG_LEVEL", "info"))
    metrics.serve(SETTINGS.metrics_port)
    kube = Kube(_api_client())
    verdicts = source_from(
        SETTINGS.prometheus_url, SETTINGS.verdicts_dir, SETTINGS.batch_window, SETTINGS.reconcile_interval
    )
    notifier = _STATE["notifier"] = Notifier(kube).start()
    hooks = HookCaller(kube, notifier.loop)  # approval hook calls share the notifier's loop and thread
    _STATE["reconciler"] = Reconciler(kube, verdicts, SETTINGS, notifier=notifier, hooks=hooks)
    logger.info(
        "mlrollout operator ready: provider=%s verdicts=%s interval=%ss",
        SETTINGS.default_traffic_provider,
        f"recorded:{SETTINGS.verdicts_dir}" if SETTINGS.verdicts_dir else (SETTINGS.prometheus_url or "none"),
        SETTINGS.reconcile_interval,
    )


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    """Stop the notification loop (queued notifications are best effort: docs/notifications.md), the look
    batcher's thread and the passes' pools."""
    notifier = _STATE.pop("notifier", None)
    if notifier is not None:
        notifier.close()
    verdicts = getattr(_STATE.get("reconciler"), "verdicts", None)
    if isinstance(verdicts, PrometheusVerdicts):
        verdicts.close()
    with _LOCKS_GUARD:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=False, cancel_futures=True)


def _lock(namespace: str, name: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((namespace, name), threading.Lock())


def reconcile(namespace: str, name: str, logger: Log) -> None:
    """One observe-decide-act pass under the object's lock; a conflict is retried soon."""
    reconciler: Reconciler = _STATE["reconciler"]
    with _lock(namespace, name):
        started = time.monotonic()
        try:
            done = reconciler.reconcile(namespace, name, logger, datetime.now(UTC))
        except Conflict as exc:
            raise kopf.TemporaryError(f"status changed meanwhile, deciding again: {exc}", delay=1) from exc
        except client.exceptions.ApiException as exc:
            raise kopf.TemporaryError(f"API error: {api_error_message(exc)}", delay=5) from exc
        finally:
            _IDLE_SINCE.pop((namespace, name), None)  # until a pass says it is idle: the short timer
        if done is not None and done.idle:
            _IDLE_SINCE[(namespace, name)] = started
    if done is not None and (done.changed or done.events):
        logger.info("phase=%s events=%s", done.phase, ",".join(done.events) or "-")


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
@kopf.on.resume(*RESOURCE)
async def on_change(*, namespace: str | None, name: str, logger: Log, **_: Any) -> None:
    """Spec, labels or annotations changed (or the operator restarted): reconcile now, on the changes'
    threads (never behind the timers' passes)."""
    assert namespace is not None, "ModelDeployment is namespaced"
    await _in_pool("change", lambda: reconcile(namespace, name, logger))


@kopf.timer(*RESOURCE, interval=SETTINGS.reconcile_interval, initial_delay=SETTINGS.reconcile_interval)
async def on_timer(*, namespace: str | None, name: str, logger: Log, **_: Any) -> None:
    """The clock moved: readiness, deadlines, scale-downs, analysis looks. The idle check runs on the event
    loop (two dict reads: no thread for a tick that passes nothing), the pass on the timers' threads."""
    assert namespace is not None, "ModelDeployment is namespaced"
    idle_since, touched = _IDLE_SINCE.get((namespace, name)), _TOUCHED.get((namespace, naming.label_value(name)))
    if not pacing.timer_due(idle_since, time.monotonic(), SETTINGS.idle_interval, touched):
        return  # idle: nothing for the clock to move; changes reconcile at once through on_change
    try:
        await _in_pool("timer", lambda: reconcile(namespace, name, logger))
    except kopf.TemporaryError as exc:
        logger.warning("%s", exc)  # the next tick tries again


@kopf.on.event("apps", "v1", "deployments", labels={naming.MANAGED_BY: "mlrollout"})
@kopf.on.event("", "v1", "services", labels={naming.MANAGED_BY: "mlrollout"})
async def on_child(*, namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    """A revision's or the gateway's Deployment or Service changed (a Service deleted by someone else is
    an outage): its ModelDeployment leaves the idle timer, so the next tick reconciles it (no pass here: in
    the event loop, and never more passes than ticks). Recorded as a time rather than by removing the idle
    mark: a pass running now set the mark after this."""
    owner = labels.get(naming.MODEL_DEPLOYMENT)
    if namespace is None or not owner:
        return
    # one assignment on the event loop: no iteration over a dict the handlers' threads change meanwhile
    _TOUCHED[(namespace, owner)] = time.monotonic()


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(*, namespace: str | None, name: str, **_: Any) -> None:
    """Every child has an ownerReference, so only our own memory goes: its metric series and its lock
    (taken first, so a pass in flight cannot set a series again after they are dropped)."""
    assert namespace is not None, "ModelDeployment is namespaced"
    with _lock(namespace, name):
        metrics.forget(namespace, name)
        _IDLE_SINCE.pop((namespace, name), None)
        verdicts = getattr(_STATE.get("reconciler"), "verdicts", None)
        if isinstance(verdicts, PrometheusVerdicts) and verdicts.batcher is not None:
            verdicts.batcher.forget(namespace, name)  # no more looks in others' batches
        _TOUCHED.pop((namespace, naming.label_value(name)), None)
    with _LOCKS_GUARD:
        _LOCKS.pop((namespace, name), None)
