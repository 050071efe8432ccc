"""The operator's own metrics (`/metrics` on MLROLLOUT_METRICS_PORT), on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from mlrollout.rollout.actions import RolloutFinished, StepFinished

REGISTRY = CollectorRegistry()

ROLLOUTS = Counter(
    "mlrollout_operator_rollouts_total",
    "Rollouts that ended, by outcome (promoted, rolledBack, superseded, aborted).",
    ["namespace", "model_deployment", "outcome"],
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "mlrollout_operator_step_duration_seconds",
    "How long rollout steps took until they passed, by step kind.",
    ["kind"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)
ROLLOUT_DURATION = Histogram(
    "mlrollout_operator_rollout_duration_seconds",
    "From candidate deployed to the end of its rollout, by outcome.",
    ["outcome"],
    buckets=(30, 60, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "mlrollout_operator_reconcile_errors_total",
    "Reconciliations that failed (and will be retried), by error class.",
    ["namespace", "model_deployment", "error"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "mlrollout_operator_reconcile_duration_seconds",
    "Time for one observe-decide-act pass.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
ANALYSIS_DURATION = Histogram(
    "mlrollout_operator_analysis_duration_seconds",
    "Time for one analysis look (collect the snapshot and judge it), by verdict.",
    ["verdict"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "mlrollout_operator_notifications_total",
    "Notifications that ended, by sink kind, event and result (delivered, dropped, or why they failed).",
    ["sink_kind", "event", "result"],
    registry=REGISTRY,
)


def observe_action(namespace: str, name: str, action: RolloutFinished | StepFinished) -> None:
    """Count what the state machine reported."""
    if isinstance(action, RolloutFinished):
        ROLLOUTS.labels(namespace, name, action.outcome).inc()
        ROLLOUT_DURATION.labels(action.outcome).observe(max(action.seconds, 0.0))
    else:
        STEP_DURATION.labels(action.kind).observe(max(action.seconds, 0.0))


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Start the /metrics endpoint in a daemon thread (0: disabled)."""
    if port:
        start_http_server(port, addr=addr, registry=REGISTRY)
