"""The operator's own metrics (`/metrics` on MLROLLOUT_METRICS_PORT), on a registry of its own.

Most series are per ModelDeployment (labels `namespace`, `model_deployment`): `forget` drops a deleted one's
label sets, so the exposition holds only ModelDeployments that exist (docs/metrics.md, cardinality).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from mlrollout.api.analysis import Verdict
from mlrollout.api.modeldeployment import PHASES, Phase
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
    ["namespace", "model_deployment", "kind"],
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
    ["namespace", "model_deployment", "verdict"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
LOOKS = Counter(
    "mlrollout_operator_looks_total",
    "Analysis looks taken, by verdict.",
    ["namespace", "model_deployment", "verdict"],
    registry=REGISTRY,
)
PHASE = Gauge(
    "mlrollout_operator_phase",
    "1 for the ModelDeployment's current phase (status.phase), 0 for the others.",
    ["namespace", "model_deployment", "phase"],
    registry=REGISTRY,
)
# every series labelled by ModelDeployment, with its one other label
PER_MODEL_DEPLOYMENT: tuple[tuple[Counter | Gauge | Histogram, str], ...] = (
    (ROLLOUTS, "outcome"),
    (STEP_DURATION, "kind"),
    (RECONCILE_ERRORS, "error"),
    (ANALYSIS_DURATION, "verdict"),
    (LOOKS, "verdict"),
    (PHASE, "phase"),
)
NOTIFICATIONS = Counter(
    "mlrollout_operator_notifications_total",
    "Notifications that ended, by sink kind, event and result (delivered, dropped, or why they failed).",
    ["sink_kind", "event", "result"],
    registry=REGISTRY,
)
HOOK_CALLS = Counter(
    "mlrollout_operator_hook_calls_total",
    "Approval hook calls that ended, by hook type and result (approved, refused, or why there was no answer).",
    ["hook_type", "result"],
    registry=REGISTRY,
)


def observe_action(namespace: str, name: str, action: RolloutFinished | StepFinished) -> None:
    """Count what the state machine reported."""
    if isinstance(action, RolloutFinished):
        ROLLOUTS.labels(namespace, name, action.outcome).inc()
        ROLLOUT_DURATION.labels(action.outcome).observe(max(action.seconds, 0.0))
    else:
        STEP_DURATION.labels(namespace, name, action.kind).observe(max(action.seconds, 0.0))


def observe_look(namespace: str, name: str, verdict: Verdict, seconds: float) -> None:
    """One analysis look: counted by verdict, and timed (the two counts agree by construction)."""
    LOOKS.labels(namespace, name, verdict).inc()
    ANALYSIS_DURATION.labels(namespace, name, verdict).observe(max(seconds, 0.0))


def set_phase(namespace: str, name: str, phase: Phase | None) -> None:
    """Every phase's series, 1 for the current one: a state timeline needs the 0s too (None: all 0)."""
    for each in PHASES:
        PHASE.labels(namespace, name, each).set(1 if each == phase else 0)


def forget(namespace: str, name: str) -> None:
    """Drop every label set of a deleted ModelDeployment, so its series end instead of leaking."""
    for metric, other in PER_MODEL_DEPLOYMENT:
        values = {
            sample.labels[other]
            for family in metric.collect()
            for sample in family.samples
            if sample.labels.get("namespace") == namespace and sample.labels.get("model_deployment") == name
        }
        for value in values:
            metric.remove(namespace, name, value)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Start the /metrics endpoint in a daemon thread (0: disabled)."""
    if port:
        start_http_server(port, addr=addr, registry=REGISTRY)
