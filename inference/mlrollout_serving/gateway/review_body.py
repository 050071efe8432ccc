"""Pure parts of human review: which requests are high-stakes, the review body, the client's marked answer.

The body's JSON Schema (`REVIEW_BODY_SCHEMA`) is the one definition a webhook can be written against
(docs/gateway.md, "Human review"); every body is built from one request and its own answer only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from ..contract.routes import Sticky
from .decide import sticky_key, top_probability

__all__ = [
    "REVIEW_BODY_SCHEMA",
    "REVIEW_SCHEMA_ID",
    "high_stakes",
    "mark_pending",
    "model_name",
    "retry_delay",
    "review_body",
]

REVIEW_SCHEMA_ID: Final = "mlrollout.io/review/v1"
"""The ``schema`` member of every review body; a new layout gets a new id."""

_TRUE: Final = frozenset({b"true", b"1"})
_NULLABLE_STRING: Final = {"type": ["string", "null"]}

REVIEW_BODY_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mlrollout review request",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema",
        "review_id",
        "request_id",
        "namespace",
        "model_deployment",
        "model",
        "track",
        "revision",
        "reason",
        "confidence",
        "inputs",
        "outputs",
        "time",
    ],
    "properties": {
        "schema": {"const": REVIEW_SCHEMA_ID},
        "review_id": {"type": "string", "minLength": 1, "description": "The gateway's id, also in the client's answer"},
        "request_id": {**_NULLABLE_STRING, "description": "The client's Open Inference Protocol request id"},
        "namespace": {"type": "string"},
        "model_deployment": {"type": "string"},
        "model": {"type": "string", "description": "The model name in the request path"},
        "track": {"enum": ["stable", "candidate"], "description": "Which track's answer is reviewed"},
        "revision": {"type": "string"},
        "reason": {"enum": ["low_confidence", "high_stakes"]},
        "confidence": {
            "type": ["number", "null"],
            "description": "The answer's lowest per-row top class probability; null without a probability output",
        },
        "inputs": {"type": ["array", "null"], "description": "The request's OIP inputs; null for binary tensors"},
        "outputs": {"type": ["array", "null"], "description": "The model's OIP outputs"},
        "time": {"type": "number", "description": "Unix time the answer was given"},
    },
}
"""JSON Schema (2020-12) of the body POSTed to the review webhook."""


def high_stakes(marker: Sticky | None, headers: Mapping[str, str], body: bytes) -> bool:
    """True when the request carries the policy's high-stakes marker with value true (or 1)."""
    if marker is None:
        return False
    value = sticky_key(marker, headers, body)
    return value is not None and value.strip().lower() in _TRUE


def model_name(target: bytes) -> str:
    """The model name of an OIP path ``/v2/models/<name>/...`` (empty for any other path)."""
    parts = target.split(b"?", 1)[0].split(b"/")
    return parts[3].decode("utf-8", "replace") if len(parts) > 3 and parts[2] == b"models" else ""


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _confidence(answer: Mapping[str, Any]) -> float | None:
    try:
        return top_probability(answer)
    except (TypeError, ValueError):  # outputs that only look like probabilities
        return None


def review_body(
    *,
    review_id: str,
    namespace: str,
    model_deployment: str,
    target: bytes,
    track: str,
    revision: str,
    reason: str,
    request: bytes,
    answer: bytes,
    now: float,
    max_bytes: int,
) -> bytes | str:
    """The webhook's body for one request and its own answer, or why it cannot be sent: ``too_large``
    (over ``max_bytes``) or ``unencodable`` (JSON nested deeper than the encoder takes).

    Built only from this request's bytes and this answer's bytes, so no other client's data can be in it.
    """
    asked, answered = _loads(request), _loads(answer)
    asked = asked if isinstance(asked, dict) else {}
    answered = answered if isinstance(answered, dict) else {}
    request_id = asked.get("id")
    inputs, outputs = asked.get("inputs"), answered.get("outputs")
    document = {
        "schema": REVIEW_SCHEMA_ID,
        "review_id": review_id,
        "request_id": request_id if isinstance(request_id, str) else None,
        "namespace": namespace,
        "model_deployment": model_deployment,
        "model": model_name(target),
        "track": track,
        "revision": revision,
        "reason": reason,
        "confidence": _confidence(answered),
        "inputs": inputs if isinstance(inputs, list) else None,
        "outputs": outputs if isinstance(outputs, list) else None,
        "time": now,
    }
    try:
        body = orjson.dumps(document)
    except orjson.JSONEncodeError:
        return "unencodable"
    return body if len(body) <= max_bytes else "too_large"


def mark_pending(answer: bytes, review_id: str) -> bytes:
    """The model's answer with ``parameters.pending_review: true`` and ``parameters.review_id`` (other
    parameters kept); an answer that is not a JSON object is returned as it is."""
    parsed = _loads(answer)
    if not isinstance(parsed, dict):
        return answer
    parameters = parsed.get("parameters")
    parsed["parameters"] = {
        **(parameters if isinstance(parameters, dict) else {}),
        "pending_review": True,
        "review_id": review_id,
    }
    try:
        return orjson.dumps(parsed)
    except orjson.JSONEncodeError:  # nested deeper than the encoder takes: the answer as it was
        return answer


def retry_delay(attempt: int, backoff: float) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): ``backoff``, then doubling."""
    return float(backoff * 2 ** (attempt - 1))
