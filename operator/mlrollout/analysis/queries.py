"""PromQL built from the metrics contract, with every label value checked and escaped.

Label values come from user resources (namespace, names, revisions), so they are validated against the
Kubernetes naming rules *and* escaped as PromQL string literals: a manifest cannot inject PromQL. Custom
queries are templates that may use only the documented placeholders, by the rule the API validates them
with (``mlrollout.api.placeholders``). Series names and labels are the contract's
(``mlrollout_serving.contract.metrics``), the one definition the exporters use too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final, Literal

from mlrollout.api.placeholders import PLACEHOLDERS, fill, query_problem
from mlrollout_serving.contract.metrics import (
    ANSWERED_WITHOUT_ERROR,
    DEFAULT_ERROR_BOUND,
    GATEWAY_DURATION,
    GATEWAY_FALLBACK_REQUESTS,
    GATEWAY_FEEDBACK_ABS_ERROR,
    GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR,
    GATEWAY_FEEDBACK_CLIPPED_SQUARED_ERROR,
    GATEWAY_FEEDBACK_LABELS,
    GATEWAY_FEEDBACK_PAIR_ABS_ERROR,
    GATEWAY_FEEDBACK_PAIR_CLIPPED_ABS_ERROR,
    GATEWAY_FEEDBACK_PAIR_CLIPPED_DIFF_SQUARES,
    GATEWAY_FEEDBACK_PAIR_DIFF_SQUARES,
    GATEWAY_FEEDBACK_PAIRS,
    GATEWAY_FEEDBACK_SQUARED_ERROR,
    GATEWAY_MIRROR_DROPPED,
    GATEWAY_MIRRORED,
    GATEWAY_REQUESTS,
    LOW_CONFIDENCE,
    MODEL_DURATION,
    MODEL_INPUT_BINS,
    MODEL_PREDICTION_VALUE,
    MODEL_PREDICTIONS,
    MODEL_REQUESTS,
    TRACKS,
    clip_label,
)

__all__ = [
    "BACKEND_SPLIT_PLACEHOLDERS",
    "BACKEND_SPLIT_PRESETS",
    "PLACEHOLDERS",
    "BuiltIn",
    "QueryError",
    "answered_by_stable",
    "backend_split_query",
    "backend_split_template",
    "counter_delta",
    "escape_label_value",
    "promql_duration",
    "render_custom",
    "selector",
    "split_queries",
    "track_queries",
]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_REVISION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")


class BuiltIn(str):
    """A query built here from the metrics contract (never a user's template): always an instant vector of
    checked selectors, so it may share one request with other looks' queries (analysis/batch.py). A plain
    ``str`` everywhere else; custom queries stay plain strings and are asked on their own."""

    __slots__ = ()


class QueryError(ValueError):
    """A label value or template that would not make a safe query; the message names it."""


def escape_label_value(value: str) -> str:
    """``value`` as the inside of a PromQL double-quoted string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _check(kind: str, value: str) -> str:
    ok = {
        "namespace": lambda v: len(v) <= 63 and _DNS_LABEL.fullmatch(v) is not None,
        "model_deployment": lambda v: len(v) <= 253 and _DNS_SUBDOMAIN.fullmatch(v) is not None,
        "revision": lambda v: _REVISION.fullmatch(v) is not None,
        "service": lambda v: len(v) <= 63 and _DNS_LABEL.fullmatch(v) is not None,
        "track": lambda v: v in TRACKS,
    }[kind](value)
    if not ok:
        raise QueryError(f"{kind} {value!r} is not a valid label value for a query")
    return value


def selector(namespace: str, model_deployment: str, track: str, revision: str | None, extra: str = "") -> str:
    """``{namespace="...",model_deployment="...",track="...",revision="..."}`` with checked values."""
    parts = [
        f'namespace="{escape_label_value(_check("namespace", namespace))}"',
        f'model_deployment="{escape_label_value(_check("model_deployment", model_deployment))}"',
        f'track="{escape_label_value(_check("track", track))}"',
    ]
    if revision:
        parts.append(f'revision="{escape_label_value(_check("revision", revision))}"')
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def promql_duration(seconds: float) -> str:
    """A window as a PromQL duration in whole seconds (at least 1s)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise QueryError(f"window must be a positive number of seconds, got {seconds!r}")
    return f"{max(1, math.ceil(seconds))}s"


def counter_delta(series: str, window: str, by: str = "") -> BuiltIn:
    """Counts added to the counter ``series`` over ``window``, summed (optionally ``by`` labels).

    ``increase()`` alone extrapolates, and for series born inside the window (every candidate series is)
    it guesses the counts before the first scrape, separately per series, so bucket counts drift apart.
    Exact integers come from ``now - (window ago)`` for series without a reset, the whole value for
    series born inside the window, and ``increase()`` only for series whose counter reset.
    """
    exact = f"({series} - {series} offset {window}) and (resets({series}[{window}]) == 0)"
    born = f"({series} unless {series} offset {window}) and (resets({series}[{window}]) == 0)"
    reset = f"increase({series}[{window}]) and (resets({series}[{window}]) > 0)"
    grouping = f"sum by ({by}) " if by else "sum "
    return BuiltIn(f"{grouping}(({exact}) or ({born}) or ({reset}))")


def track_queries(
    source: Literal["gateway", "model"],
    namespace: str,
    model_deployment: str,
    track: str,
    revision: str | None,
    window_seconds: float,
) -> dict[str, str]:
    """Named queries for one track over ``window_seconds``; counter resets are handled.

    Keys: requests, errors, latency, predictions, prediction_buckets, features; for the gateway also
    ``rescued_failures`` (failures of the track answered without a 5xx: they count as its errors) and
    ``answered_by_stable`` (requests routed to the track that stable answered: counted under stable by
    ``requests``, they are the track's), which collect.py adds to its counts.
    """
    w = promql_duration(window_seconds)
    sel = selector(namespace, model_deployment, track, revision)
    errors_sel = selector(namespace, model_deployment, track, revision, 'code=~"5.."')
    requests, duration = (
        (GATEWAY_REQUESTS.name, GATEWAY_DURATION.name)
        if source == "gateway"
        else (MODEL_REQUESTS.name, MODEL_DURATION.name)
    )
    queries: dict[str, str] = dict(
        requests=counter_delta(f"{requests}{sel}", w),
        errors=counter_delta(f"{requests}{errors_sel}", w),
        latency=counter_delta(f"{duration}_bucket{sel}", w, "le"),
        predictions=counter_delta(f"{MODEL_PREDICTIONS.name}{sel}", w, ", ".join(MODEL_PREDICTIONS.labels)),
        prediction_buckets=counter_delta(
            f"{MODEL_PREDICTION_VALUE.name}_bucket{sel}", w, ", ".join((*MODEL_PREDICTION_VALUE.labels, "le"))
        ),
        features=counter_delta(f"{MODEL_INPUT_BINS.name}{sel}", w, ", ".join(MODEL_INPUT_BINS.labels)),
    )
    if source == "gateway":
        rescued = f'reason!="{LOW_CONFIDENCE}",answered=~"{"|".join(ANSWERED_WITHOUT_ERROR)}"'
        queries["rescued_failures"] = counter_delta(
            GATEWAY_FALLBACK_REQUESTS.name + selector(namespace, model_deployment, track, revision, rescued), w
        )
        queries["answered_by_stable"] = answered_by_stable(namespace, model_deployment, track, revision, w)
    return queries


def answered_by_stable(namespace: str, model_deployment: str, track: str, revision: str | None, window: str) -> str:
    """Requests the gateway routed to ``track`` and answered with stable's answer through the ``stable``
    fallback (after a failure or a low-confidence answer), over the PromQL duration ``window``.

    ``requests_total`` counts them under stable; the requests routed to each track are that count moved
    back (the error analysis and the traffic-split check alike). Counted once per request by the gateway.
    """
    answered = 'answered="stable"'
    return counter_delta(
        GATEWAY_FALLBACK_REQUESTS.name + selector(namespace, model_deployment, track, revision, answered), window
    )


def feedback_queries(
    namespace: str, model_deployment: str, track: str, revision: str | None, window_seconds: float,
    error_bound: float = DEFAULT_ERROR_BOUND,
) -> dict[str, str]:  # fmt: skip
    """The gateway's feedback series for one track over ``window_seconds`` (docs/metrics.md).

    Keys: labels (by outcome), abs_error, squared_error, clipped_abs_error, clipped_squared_error (at
    ``error_bound``); and, for the shadow's track and revision, pairs (by result), pair_abs_error (by side),
    pair_diff_squares, pair_clipped_abs_error (by side), pair_clipped_diff_squares.
    """
    w = promql_duration(window_seconds)
    sel = selector(namespace, model_deployment, track, revision)
    clipped = selector(namespace, model_deployment, track, revision, f'bound="{clip_label(error_bound)}"')
    return dict(
        labels=counter_delta(f"{GATEWAY_FEEDBACK_LABELS.name}{sel}", w, ", ".join(GATEWAY_FEEDBACK_LABELS.labels)),
        abs_error=counter_delta(f"{GATEWAY_FEEDBACK_ABS_ERROR.name}{sel}", w),
        squared_error=counter_delta(f"{GATEWAY_FEEDBACK_SQUARED_ERROR.name}{sel}", w),
        pairs=counter_delta(f"{GATEWAY_FEEDBACK_PAIRS.name}{sel}", w, ", ".join(GATEWAY_FEEDBACK_PAIRS.labels)),
        pair_abs_error=counter_delta(
            f"{GATEWAY_FEEDBACK_PAIR_ABS_ERROR.name}{sel}", w, ", ".join(GATEWAY_FEEDBACK_PAIR_ABS_ERROR.labels)
        ),
        pair_diff_squares=counter_delta(f"{GATEWAY_FEEDBACK_PAIR_DIFF_SQUARES.name}{sel}", w),
        clipped_abs_error=counter_delta(f"{GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR.name}{clipped}", w),
        clipped_squared_error=counter_delta(f"{GATEWAY_FEEDBACK_CLIPPED_SQUARED_ERROR.name}{clipped}", w),
        pair_clipped_abs_error=counter_delta(f"{GATEWAY_FEEDBACK_PAIR_CLIPPED_ABS_ERROR.name}{clipped}", w, "side"),
        pair_clipped_diff_squares=counter_delta(f"{GATEWAY_FEEDBACK_PAIR_CLIPPED_DIFF_SQUARES.name}{clipped}", w),
    )


def split_queries(
    namespace: str, model_deployment: str, stable_revision: str, candidate_revision: str, window_seconds: float
) -> dict[str, str]:
    """The router's own counts over ``window_seconds``, for the traffic-split check (analysis/split.py).

    All from the gateway's series, so both tracks' counts come from the same scrapes of the same processes
    (the model servers are scraped at different instants, which would skew a split by a scrape interval of
    traffic). Keys: ``stable`` and ``candidate`` (requests answered per track), ``answered_by_stable``
    (:func:`answered_by_stable`: routed to the candidate, counted under stable), ``eligible`` (stable's 200
    answers, the requests a mirror copies), ``mirrored`` (copies sent to the candidate) and ``dropped``
    (copies dropped before sending because the queue was full).
    """
    w = promql_duration(window_seconds)

    def count(series: str, track: str, revision: str, extra: str = "") -> str:
        return counter_delta(series + selector(namespace, model_deployment, track, revision, extra), w)

    return dict(
        stable=count(GATEWAY_REQUESTS.name, "stable", stable_revision),
        candidate=count(GATEWAY_REQUESTS.name, "candidate", candidate_revision),
        answered_by_stable=answered_by_stable(namespace, model_deployment, "candidate", candidate_revision, w),
        eligible=count(GATEWAY_REQUESTS.name, "stable", stable_revision, 'code="200"'),
        mirrored=count(GATEWAY_MIRRORED.name, "shadow", candidate_revision),
        dropped=count(GATEWAY_MIRROR_DROPPED.name, "shadow", candidate_revision, 'reason="queue_full"'),
    )


def render_custom(
    template: str, *, namespace: str, model_deployment: str, track: str, revision: str | None, window_seconds: float
) -> str:
    """Fill a custom query's placeholders; a template the API would refuse is refused here too.

    Values are checked like selector values (so they contain no quote, brace or backslash) and escaped,
    so a template that puts them inside a quoted label matcher stays a single string literal.
    """
    values: Mapping[str, str] = {
        "namespace": escape_label_value(_check("namespace", namespace)),
        "modelDeployment": escape_label_value(_check("model_deployment", model_deployment)),
        "track": escape_label_value(_check("track", track)),
        "revision": escape_label_value(_check("revision", revision)) if revision else "",
        "window": promql_duration(window_seconds),
    }
    try:
        return fill(template, values)
    except ValueError as exc:
        raise QueryError(str(exc)) from None


BACKEND_SPLIT_PLACEHOLDERS: Final = ("namespace", "service", "port")
"""The placeholders of a Gateway API implementation's per-backend counter: the HTTPRoute's namespace and one
backendRef's Service name and port (the revision's Service, ``<modelDeployment>-<revision>``)."""

BACKEND_SPLIT_PRESETS: Final = {
    "traefik": 'traefik_service_requests_total{service="{{namespace}}-{{service}}-http-{{port}}@kubernetesgateway"}',
}
"""Ready templates by implementation. Traefik's Kubernetes Gateway provider (v3.6, ``loadService`` of
``httproute.go``) names the service of an HTTPRoute's backendRef ``<namespace>-<name>-http-<port>`` (its
``Normalize`` keeps such names as they are, but for a run of dashes, which it makes one) with the suffix
``@kubernetesgateway``, and counts every request it sends there."""

_SERIES_SELECTOR = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)?\s*(\{[^{}]*\})?\s*$")


def backend_split_template(text: str) -> str:
    """The template a setting names: a preset's name, or a template that selects the implementation's
    cumulative request counter of one backend. Raises QueryError naming the problem.

    One series selector (``metric{labels}``), because the operator takes its exact increase over the
    window itself (:func:`counter_delta`, the rule of every other count); ``{{service}}`` is required, or
    both tracks would read the same series.
    """
    template = BACKEND_SPLIT_PRESETS.get(text.strip(), text)
    presets = ", ".join(BACKEND_SPLIT_PRESETS)
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", text.strip()) and template is text:
        raise QueryError(f"{text.strip()!r} is no preset ({presets}) and no template with {{{{service}}}}")
    problem = query_problem(template, BACKEND_SPLIT_PLACEHOLDERS)
    if problem is not None:
        raise QueryError(problem)
    if "service" not in re.findall(r"\{\{ *([A-Za-z]+) *\}\}", template):
        raise QueryError("the per-backend counter must use {{service}}, or both tracks read the same series")
    rendered = fill(template, {"namespace": "ns", "service": "svc", "port": "8080"}, BACKEND_SPLIT_PLACEHOLDERS)
    if not rendered.strip() or _SERIES_SELECTOR.fullmatch(rendered) is None:
        raise QueryError(
            f'the per-backend counter must be one series selector like metric{{label="..."}} (the operator '
            f"takes its increase over the window), or a preset ({presets}); got {text!r}"
        )
    return template


def backend_split_query(
    template: str, namespace: str, stable: tuple[str, int], candidate: tuple[str, int], window_seconds: float
) -> BuiltIn:
    """One query for both tracks' requests over ``window_seconds``, from the per-backend counter of the
    implementation that routes (``stable``/``candidate``: each revision's Service name and port). One query,
    so both counts come from the same evaluation of the same scrapes; each answer carries ``track``."""
    w = promql_duration(window_seconds)
    parts = []
    for track, (service, port) in (("stable", stable), ("candidate", candidate)):
        if not 0 < port < 65536:
            raise QueryError(f"port {port!r} is not a valid Service port for a query")
        values = {
            "namespace": escape_label_value(_check("namespace", namespace)),
            "service": escape_label_value(_check("service", service)),
            "port": str(port),
        }
        try:
            series = fill(template, values, BACKEND_SPLIT_PLACEHOLDERS)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        parts.append(f'label_replace({counter_delta(series, w)}, "track", "{track}", "", "")')
    return BuiltIn(" or ".join(parts))
