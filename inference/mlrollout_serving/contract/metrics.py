"""Every Prometheus series the data plane exports and the analysis queries (docs/metrics.md).

Each :class:`Series` carries its name, help text and the labels it has beyond the identity labels, so the
exporters and the queries cannot disagree on a spelling. Base units, ``_total`` counters, ``_seconds``
durations (Prometheus conventions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "ABS_ERROR_BUCKETS",
    "ANSWERED_WITHOUT_ERROR",
    "BATCH_SIZE_BUCKETS",
    "CLIP_BOUNDS",
    "DEFAULT_ERROR_BOUND",
    "GATEWAY_DURATION",
    "GATEWAY_FALLBACKS",
    "GATEWAY_FALLBACK_REQUESTS",
    "GATEWAY_FEEDBACK_ABS_ERROR",
    "GATEWAY_FEEDBACK_ABS_ERROR_ROWS",
    "GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR",
    "GATEWAY_FEEDBACK_CLIPPED_SQUARED_ERROR",
    "GATEWAY_FEEDBACK_FAILED",
    "GATEWAY_FEEDBACK_LABELS",
    "GATEWAY_FEEDBACK_PAIRS",
    "GATEWAY_FEEDBACK_PAIR_ABS_ERROR",
    "GATEWAY_FEEDBACK_PAIR_CLIPPED_ABS_ERROR",
    "GATEWAY_FEEDBACK_PAIR_CLIPPED_DIFF_SQUARES",
    "GATEWAY_FEEDBACK_PAIR_DIFF_SQUARES",
    "GATEWAY_FEEDBACK_PENDING_DROPPED",
    "GATEWAY_FEEDBACK_REFUSED",
    "GATEWAY_FEEDBACK_SQUARED_ERROR",
    "GATEWAY_FEEDBACK_UNCOUNTED",
    "GATEWAY_FEEDBACK_UNPAIRED",
    "GATEWAY_MIRRORED",
    "GATEWAY_MIRROR_DROPPED",
    "GATEWAY_REQUESTS",
    "GATEWAY_REVIEWS_DROPPED",
    "GATEWAY_REVIEWS_FAILED",
    "GATEWAY_REVIEWS_SENT",
    "GATEWAY_ROUTE_VERSION",
    "GATEWAY_SHADOW_ABS_DIFF",
    "GATEWAY_SHADOW_AGREEMENT",
    "GATEWAY_UPSTREAM_CONNECT_RETRIES",
    "HIGH_STAKES",
    "IDENTITY_LABELS",
    "LATENCY_BUCKETS",
    "LATENCY_MANTISSAS",
    "LOW_CONFIDENCE",
    "MODEL_BATCH_SIZE",
    "MODEL_DURATION",
    "MODEL_INFO",
    "MODEL_INPUT_BINS",
    "MODEL_PREDICTIONS",
    "MODEL_PREDICTION_VALUE",
    "MODEL_REQUESTS",
    "NOT_ANSWERED",
    "SERIES",
    "TRACKS",
    "Series",
    "clip_label",
]

IDENTITY_LABELS: Final = ("namespace", "model_deployment", "track", "revision")
"""Set by each process from its own environment, so series mean the same with or without relabelling."""

TRACKS: Final = ("stable", "candidate", "shadow")
"""Values of the ``track`` label."""

# 13 bounds per decade, at most 25% apart, from 0.1 ms to 10 s: fine enough that the latency harm test can
# compare the candidate above (1 + margin) x a stable threshold with a bound close to that product
# (docs/analysis.md). 67 buckets is more than Prometheus' default; the statistics need it.
LATENCY_MANTISSAS: Final[tuple[float, ...]] = (1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8)
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    *(round(m * 10.0**exponent, 12) for exponent in range(-4, 1) for m in LATENCY_MANTISSAS),
    10.0,
    float("inf"),
)

BATCH_SIZE_BUCKETS: Final[tuple[float, ...]] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, float("inf"))

# Absolute differences in a regressor's own unit (shadow vs primary, label vs served prediction): from
# rounding noise to errors of thousands, 1-2.5-5 steps above 0.01, so one set serves targets of any scale
# (a diabetes progression score of 25-346, a price, a probability) with buckets at most 2.5x apart.
ABS_ERROR_BUCKETS: Final[tuple[float, ...]] = (
    1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0,
    500.0, 1000.0, 2500.0, 5000.0, 10000.0, float("inf"),
)  # fmt: skip

# The bounds each labelled row's absolute error is also clipped at (``min(|error|, bound)``), one series per
# bound: the finite-sample MAE tests need the sums of clipped errors (docs/analysis.md, "Quality"), and the
# policy picks the bound (``errorBound``) at analysis time, so the gateway needs no setting and a changed
# bound never mixes rows clipped differently. The histogram's finite edges from 0.01 up.
CLIP_BOUNDS: Final[tuple[float, ...]] = tuple(b for b in ABS_ERROR_BUCKETS if 0.01 <= b < float("inf"))
DEFAULT_ERROR_BOUND: Final = CLIP_BOUNDS[-1]
"""The clip bound when a policy sets none: the top finite edge (only rows beyond it change; a bound near
the errors' real scale tests far faster, docs/analysis.md)."""


def clip_label(bound: float) -> str:
    """The ``bound`` label value of a clip bound (``repr`` of the float, like Prometheus' ``le``)."""
    return repr(float(bound))


@dataclass(frozen=True)
class Series:
    """One exported series: its name, its help text and its labels after the identity labels."""

    name: str
    help: str
    labels: tuple[str, ...] = ()

    @property
    def label_names(self) -> list[str]:
        """Every label, identity first, in the order the exporters give values."""
        return [*IDENTITY_LABELS, *self.labels]

    @property
    def counter_stem(self) -> str:
        """The name without ``_total`` (prometheus_client's Counter appends it itself)."""
        return self.name.removesuffix("_total")


GATEWAY_REQUESTS: Final = Series(
    "mlrollout_gateway_requests_total", "Requests answered, by serving track and HTTP code.", ("code",)
)
GATEWAY_DURATION: Final = Series(
    "mlrollout_gateway_request_duration_seconds", "Time from request received to response sent, by track."
)
GATEWAY_FALLBACKS: Final = Series(
    "mlrollout_gateway_fallbacks_total", "Fallback steps taken; track is the track that failed.", ("reason", "action")
)
GATEWAY_FALLBACK_REQUESTS: Final = Series(
    "mlrollout_gateway_fallback_requests_total",
    "Requests whose routed track's answer was not served, once each: track is the routed track, reason why, "
    "answered the fallback action that answered (none: no step could).",
    ("reason", "answered"),
)
LOW_CONFIDENCE: Final = "low_confidence"
"""The fallbacks' ``reason`` for an answer below the confidence threshold: the track answered, it did not fail."""
NOT_ANSWERED: Final = "none"
"""``answered`` of GATEWAY_FALLBACK_REQUESTS when no fallback step answered: after a failure the client gets the
gateway's 502/504, after low confidence the track's own answer."""
ANSWERED_WITHOUT_ERROR: Final = ("stable", "backup", "default")
"""``answered`` values whose answer is not a 5xx, so ``requests_total`` alone does not show the routed track's
failure (``refuse`` answers 503, ``none`` 502 or 504)."""
HIGH_STAKES: Final = "high_stakes"
"""The fallbacks' ``reason`` for a request marked high-stakes and sent to human review (the track answered)."""
GATEWAY_REVIEWS_SENT: Final = Series(
    "mlrollout_gateway_reviews_sent_total", "Reviews the review webhook accepted (2xx); track is the reviewed answer's."
)
GATEWAY_REVIEWS_FAILED: Final = Series(
    "mlrollout_gateway_reviews_failed_total",
    "Reviews sent but not accepted, by reason (timeout, error, refused, cancelled).",
    ("reason",),
)
GATEWAY_REVIEWS_DROPPED: Final = Series(
    "mlrollout_gateway_reviews_dropped_total",
    "Reviews never sent, by reason (queue_full, too_large, unencodable, cancelled).",
    ("reason",),
)
GATEWAY_MIRRORED: Final = Series("mlrollout_gateway_mirrored_requests_total", "Copies sent to the shadow track.")
GATEWAY_MIRROR_DROPPED: Final = Series(
    "mlrollout_gateway_mirror_dropped_total", "Copies not sent or not answered.", ("reason",)
)
GATEWAY_SHADOW_AGREEMENT: Final = Series(
    "mlrollout_gateway_shadow_agreement_total",
    "Classifier rows where shadow and primary agree or not.",
    ("output", "result"),
)
GATEWAY_SHADOW_ABS_DIFF: Final = Series(
    "mlrollout_gateway_shadow_abs_difference",
    "Absolute shadow-minus-primary difference per regressor element.",
    ("output",),
)
GATEWAY_ROUTE_VERSION: Final = Series("mlrollout_gateway_route_table_version", "Version of the active route table.")
GATEWAY_UPSTREAM_CONNECT_RETRIES: Final = Series(
    "mlrollout_gateway_upstream_connect_retries_total",
    "Upstream connects refused or reset before the request was sent, and retried.",
    ("upstream",),
)

GATEWAY_FEEDBACK_LABELS: Final = Series(
    "mlrollout_gateway_feedback_labels_total",
    "Labelled rows scored against what the track served: correct or incorrect (classifiers), scored or failed "
    "(regressors; failed: no prediction, an error of the bound in the clipped sums).",
    ("outcome",),
)
GATEWAY_FEEDBACK_ABS_ERROR: Final = Series(
    "mlrollout_gateway_feedback_abs_error_total", "Sum of the absolute errors of labelled rows (regressors)."
)
GATEWAY_FEEDBACK_ABS_ERROR_ROWS: Final = Series(
    "mlrollout_gateway_feedback_row_abs_error",
    "Absolute error of each labelled row against the prediction the track served (regressors).",
)
GATEWAY_FEEDBACK_SQUARED_ERROR: Final = Series(
    "mlrollout_gateway_feedback_squared_error_total", "Sum of the squared errors of labelled rows (regressors)."
)
GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR: Final = Series(
    "mlrollout_gateway_feedback_clipped_abs_error_total",
    "Sum of min(absolute error, bound) of labelled rows, for each bound of CLIP_BOUNDS (regressors).",
    ("bound",),
)
GATEWAY_FEEDBACK_CLIPPED_SQUARED_ERROR: Final = Series(
    "mlrollout_gateway_feedback_clipped_squared_error_total",
    "Sum of min(absolute error, bound)^2 of labelled rows, for each bound of CLIP_BOUNDS (regressors).",
    ("bound",),
)
GATEWAY_FEEDBACK_PAIRS: Final = Series(
    "mlrollout_gateway_feedback_pairs_total",
    "Labelled requests both models answered (shadow), by which was right or closer; labelled with the shadow.",
    ("result",),
)
GATEWAY_FEEDBACK_PAIR_ABS_ERROR: Final = Series(
    "mlrollout_gateway_feedback_pair_abs_error_total",
    "Sum of the absolute errors of paired rows per side, stable or candidate (regressors).",
    ("side",),
)
GATEWAY_FEEDBACK_PAIR_DIFF_SQUARES: Final = Series(
    "mlrollout_gateway_feedback_pair_difference_squares_total",
    "Sum of the squared differences between the two models' absolute errors on paired rows (regressors).",
)
GATEWAY_FEEDBACK_PAIR_CLIPPED_ABS_ERROR: Final = Series(
    "mlrollout_gateway_feedback_pair_clipped_abs_error_total",
    "Sum of min(absolute error, bound) of paired rows per side, for each bound of CLIP_BOUNDS (regressors).",
    ("side", "bound"),
)
GATEWAY_FEEDBACK_PAIR_CLIPPED_DIFF_SQUARES: Final = Series(
    "mlrollout_gateway_feedback_pair_clipped_difference_squares_total",
    "Sum of (min(|e_candidate|, bound) - min(|e_stable|, bound))^2 on paired rows, per bound (regressors).",
    ("bound",),
)
GATEWAY_FEEDBACK_REFUSED: Final = Series(
    "mlrollout_gateway_feedback_refused_total", "Feedback refused, by reason.", ("reason",)
)
GATEWAY_FEEDBACK_UNPAIRED: Final = Series(
    "mlrollout_gateway_feedback_unpaired_total",
    "Labels of mirrored requests scored without the shadow's answer, by reason.",
    ("reason",),
)
GATEWAY_FEEDBACK_FAILED: Final = Series(
    "mlrollout_gateway_feedback_rows_failed_total",
    "Labelled rows the track had no prediction for, counted against it (wrong; an error of the clip bound), "
    "by reason (non_finite_prediction, no_prediction, request_failed).",
    ("reason",),
)
GATEWAY_FEEDBACK_UNCOUNTED: Final = Series(
    "mlrollout_gateway_feedback_rows_uncounted_total",
    "Labelled rows accepted (202) and not scored, by reason: served_before_step (the answer was served before "
    "the current rollout step started; its label belongs to a step already judged).",
    ("reason",),
)
GATEWAY_FEEDBACK_PENDING_DROPPED: Final = Series(
    "mlrollout_gateway_feedback_pending_dropped_total",
    "Shadow answers dropped from the pairing store before their label came, by reason.",
    ("reason",),
)

MODEL_REQUESTS: Final = Series(
    "mlrollout_model_inference_requests_total", "Inference requests by HTTP status code.", ("code",)
)
MODEL_DURATION: Final = Series("mlrollout_model_inference_duration_seconds", "Time to answer one inference request.")
MODEL_BATCH_SIZE: Final = Series("mlrollout_model_batch_size", "Rows per onnxruntime run.")
MODEL_PREDICTIONS: Final = Series("mlrollout_model_predictions_total", "Predicted class per row.", ("output", "class"))
MODEL_PREDICTION_VALUE: Final = Series(
    "mlrollout_model_prediction_value", "Predicted values of regression outputs.", ("output",)
)
MODEL_INPUT_BINS: Final = Series(
    "mlrollout_model_input_feature_bin_total",
    "Live input values binned on the reference profile's edges.",
    ("feature", "bin"),
)
MODEL_INFO: Final = Series(
    "mlrollout_model_info", "Always 1: the model this process serves.", ("model_name", "model_version", "sha256")
)

SERIES: Final[tuple[Series, ...]] = (
    GATEWAY_REQUESTS,
    GATEWAY_DURATION,
    GATEWAY_FALLBACKS,
    GATEWAY_FALLBACK_REQUESTS,
    GATEWAY_REVIEWS_SENT,
    GATEWAY_REVIEWS_FAILED,
    GATEWAY_REVIEWS_DROPPED,
    GATEWAY_MIRRORED,
    GATEWAY_MIRROR_DROPPED,
    GATEWAY_SHADOW_AGREEMENT,
    GATEWAY_SHADOW_ABS_DIFF,
    GATEWAY_ROUTE_VERSION,
    GATEWAY_UPSTREAM_CONNECT_RETRIES,
    GATEWAY_FEEDBACK_LABELS,
    GATEWAY_FEEDBACK_ABS_ERROR,
    GATEWAY_FEEDBACK_ABS_ERROR_ROWS,
    GATEWAY_FEEDBACK_SQUARED_ERROR,
    GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR,
    GATEWAY_FEEDBACK_CLIPPED_SQUARED_ERROR,
    GATEWAY_FEEDBACK_PAIRS,
    GATEWAY_FEEDBACK_PAIR_ABS_ERROR,
    GATEWAY_FEEDBACK_PAIR_DIFF_SQUARES,
    GATEWAY_FEEDBACK_PAIR_CLIPPED_ABS_ERROR,
    GATEWAY_FEEDBACK_PAIR_CLIPPED_DIFF_SQUARES,
    GATEWAY_FEEDBACK_REFUSED,
    GATEWAY_FEEDBACK_UNPAIRED,
    GATEWAY_FEEDBACK_FAILED,
    GATEWAY_FEEDBACK_UNCOUNTED,
    GATEWAY_FEEDBACK_PENDING_DROPPED,
    MODEL_REQUESTS,
    MODEL_DURATION,
    MODEL_BATCH_SIZE,
    MODEL_PREDICTIONS,
    MODEL_PREDICTION_VALUE,
    MODEL_INPUT_BINS,
    MODEL_INFO,
)
"""Every series of the contract (docs/metrics.md lists exactly these)."""
