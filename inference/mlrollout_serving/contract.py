"""Names shared by the model server, the gateway and (as strings) the analysis; see docs/metrics.md."""

from __future__ import annotations

from typing import Final

IDENTITY_LABELS: Final = ("namespace", "model_deployment", "track", "revision")

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

GATEWAY_REQUESTS: Final = "mlrollout_gateway_requests_total"
GATEWAY_DURATION: Final = "mlrollout_gateway_request_duration_seconds"
GATEWAY_FALLBACKS: Final = "mlrollout_gateway_fallbacks_total"
GATEWAY_MIRRORED: Final = "mlrollout_gateway_mirrored_requests_total"
GATEWAY_MIRROR_DROPPED: Final = "mlrollout_gateway_mirror_dropped_total"
GATEWAY_SHADOW_AGREEMENT: Final = "mlrollout_gateway_shadow_agreement_total"
GATEWAY_SHADOW_ABS_DIFF: Final = "mlrollout_gateway_shadow_abs_difference"
GATEWAY_ROUTE_VERSION: Final = "mlrollout_gateway_route_table_version"
GATEWAY_UPSTREAM_CONNECT_RETRIES: Final = "mlrollout_gateway_upstream_connect_retries_total"

MODEL_REQUESTS: Final = "mlrollout_model_inference_requests_total"
MODEL_DURATION: Final = "mlrollout_model_inference_duration_seconds"
MODEL_BATCH_SIZE: Final = "mlrollout_model_batch_size"
MODEL_PREDICTIONS: Final = "mlrollout_model_predictions_total"
MODEL_PREDICTION_VALUE: Final = "mlrollout_model_prediction_value"
MODEL_INPUT_BINS: Final = "mlrollout_model_input_feature_bin_total"
MODEL_INFO: Final = "mlrollout_model_info"
