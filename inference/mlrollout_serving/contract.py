"""Names shared by the model server, the gateway and (as strings) the analysis; see docs/metrics.md."""

from __future__ import annotations

from typing import Final

IDENTITY_LABELS: Final = ("namespace", "model_deployment", "track", "revision")

LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, float("inf"),
)  # fmt: skip

BATCH_SIZE_BUCKETS: Final[tuple[float, ...]] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, float("inf"))

GATEWAY_REQUESTS: Final = "mlrollout_gateway_requests_total"
GATEWAY_DURATION: Final = "mlrollout_gateway_request_duration_seconds"
GATEWAY_FALLBACKS: Final = "mlrollout_gateway_fallbacks_total"
GATEWAY_MIRRORED: Final = "mlrollout_gateway_mirrored_requests_total"
GATEWAY_MIRROR_DROPPED: Final = "mlrollout_gateway_mirror_dropped_total"
GATEWAY_SHADOW_AGREEMENT: Final = "mlrollout_gateway_shadow_agreement_total"
GATEWAY_SHADOW_ABS_DIFF: Final = "mlrollout_gateway_shadow_abs_difference"
GATEWAY_ROUTE_VERSION: Final = "mlrollout_gateway_route_table_version"

MODEL_REQUESTS: Final = "mlrollout_model_inference_requests_total"
MODEL_DURATION: Final = "mlrollout_model_inference_duration_seconds"
MODEL_BATCH_SIZE: Final = "mlrollout_model_batch_size"
MODEL_PREDICTIONS: Final = "mlrollout_model_predictions_total"
MODEL_PREDICTION_VALUE: Final = "mlrollout_model_prediction_value"
MODEL_INPUT_BINS: Final = "mlrollout_model_input_feature_bin_total"
MODEL_INFO: Final = "mlrollout_model_info"
