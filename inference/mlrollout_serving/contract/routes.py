"""The gateway's route table: the single definition of what the operator writes and the gateway reads.

The operator renders it into the ConfigMap ``<md>-routes`` under :data:`CONFIGMAP_KEY` (building the table
validates it exactly as the gateway will, so the operator can never write a table the gateway refuses);
the gateway parses that text (``mlrollout_serving.gateway.routes``). Field names are camelCase on the wire
(like every Kubernetes object) and snake_case in Python; both spellings are accepted on input. See
docs/gateway.md for a worked example.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "CONFIGMAP_KEY",
    "BackupModel",
    "CircuitBreaker",
    "FallbackAction",
    "FallbackSettings",
    "FallbackStep",
    "Mirror",
    "Mode",
    "Review",
    "ReviewRespond",
    "RouteTable",
    "RouteTableError",
    "Sticky",
    "Track",
    "TrackName",
    "chain_problem",
    "configmap_name",
    "review_problem",
]

CONFIGMAP_KEY = "routes.yaml"
"""The ConfigMap key holding the table (YAML)."""


def configmap_name(model_deployment: str) -> str:
    """The route ConfigMap of a ModelDeployment: ``<md>-routes`` (a DNS label: at most 63 characters)."""
    return f"{model_deployment[:56]}-routes"


Mode = Literal["canary", "ab", "blueGreen"]
TrackName = Literal["stable", "candidate"]
FallbackAction = Literal["stable", "backup", "default", "refuse", "review"]
ReviewRespond = Literal["default", "refuse", "model"]

_WEIGHT_TOLERANCE = 1e-6


class RouteTableError(ValueError):
    """A route table could not be parsed or validated; the message says exactly why."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form the gateway reads (what the operator writes into the ConfigMap)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _check_upstream(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"upstream must be an http://host:port URL, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"upstream must not carry a path, query or fragment, got {url!r}")
    if parts.port is None:
        raise ValueError(f"upstream must name its port explicitly, got {url!r}")
    return f"http://{parts.hostname}:{parts.port}"


class Track(_Model):
    """One track the gateway routes client traffic to (a Service or a single model server)."""

    upstream: str = Field(description="http://host:port of the model server(s) serving this track.")
    revision: str = Field(default="", description="Revision hash of the track's pod spec (metrics label).")
    weight: float = Field(ge=0, le=100, description="Percent of client traffic for this track.")

    _v_upstream = field_validator("upstream")(_check_upstream)


class Mirror(_Model):
    """Shadow mirroring: a copy of some requests goes to the shadow track; its answers are only compared."""

    upstream: str = Field(description="http://host:port of the shadow model server(s).")
    revision: str = Field(default="", description="Revision hash of the shadow track (metrics label).")
    percent: float = Field(ge=0, le=100, description="Percent of inference requests copied to the shadow.")
    queue_size: int = Field(
        default=1024, ge=1, description="Copies waiting beyond this (or 64 MiB of queued bodies) are dropped."
    )
    timeout_seconds: float = Field(default=2.0, gt=0, description="A copy not answered in time is dropped.")
    concurrency: int = Field(default=8, ge=1, le=256, description="Copies in flight at once.")

    _v_upstream = field_validator("upstream")(_check_upstream)


class Sticky(_Model):
    """Where the sticky key comes from: a request header or a field of the JSON request body."""

    header: str | None = Field(default=None, description="Request header holding the key (case-insensitive).")
    json_field: str | None = Field(
        default=None,
        description="Dotted path into the JSON request body, e.g. `parameters.user_id` or `id`.",
    )

    @field_validator("header")
    @classmethod
    def _lower_header(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _exactly_one(self) -> Sticky:
        if (self.header is None) == (self.json_field is None):
            raise ValueError("sticky needs exactly one of header or jsonField")
        return self


class CircuitBreaker(_Model):
    """Per-upstream breaker: opens after consecutive failures, lets one probe through after openSeconds."""

    consecutive_failures: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=10.0, gt=0)


class BackupModel(_Model):
    """A named backup model served elsewhere; its answer is returned as is."""

    name: str = Field(min_length=1, description="The backup's name (its ModelDeployment).")
    upstream: str = Field(description="http://host:port of the backup model server (or its gateway).")
    model_name: str | None = Field(
        default=None,
        min_length=1,
        description="Model name the backup serves, used in the path sent to it (`/v2/models/<modelName>`); "
        "defaults to `name`. Needed when the backup's model.name differs from its ModelDeployment's name.",
    )

    _v_upstream = field_validator("upstream")(_check_upstream)

    @property
    def served_name(self) -> str:
        """The model name in the path the backup upstream is sent."""
        return self.model_name or self.name


class FallbackStep(_Model):
    """One action of the fallback chain."""

    action: FallbackAction
    backup: BackupModel | None = Field(default=None, description="Required for action `backup`.")
    default_response: dict[str, Any] | None = Field(
        default=None, description="OIP response body returned for action `default`."
    )
    message: str | None = Field(
        default=None, max_length=1024, description="For `refuse`: the message put in the JSON error."
    )

    @model_validator(mode="after")
    def _payload_matches_action(self) -> FallbackStep:
        if self.action == "backup" and self.backup is None:
            raise ValueError("fallback action backup needs a backup {name, upstream}")
        if self.action == "default" and self.default_response is None:
            raise ValueError("fallback action default needs a defaultResponse body")
        if self.action != "backup" and self.backup is not None:
            raise ValueError(f"fallback action {self.action} must not carry a backup")
        if self.action != "default" and self.default_response is not None:
            raise ValueError(f"fallback action {self.action} must not carry a defaultResponse")
        if self.action != "refuse" and self.message is not None:
            raise ValueError(f"fallback action {self.action} must not carry a message")
        return self


LOW_CONFIDENCE_NEEDS_THRESHOLD = "lowConfidenceAction needs a confidenceThreshold"
REVIEW_NOT_IN_CHAIN = "fallback action review needs the model's answer, so it is only a lowConfidenceAction"
REVIEW_NEEDS_SETTINGS = "lowConfidenceAction review needs review settings (review.url)"
REVIEW_NEEDS_A_TRIGGER = "review is set but nothing sends to it: add review.highStakes or lowConfidenceAction review"
REVIEW_DEFAULT_NEEDS_RESPONSE = "review.respond default needs review.defaultResponse"


def _check_webhook(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"review url must be an http://host:port/path URL with an explicit port, got {url!r}")
    if parts.fragment:
        raise ValueError(f"review url must not carry a fragment, got {url!r}")
    return url


class Review(_Model):
    """Human review: answers that are unsure or high-stakes go to a webhook; the client is answered at once.

    The gateway queues the review body (docs/gateway.md, "Human review") and answers the client per
    ``respond`` without waiting for the webhook: ``default`` (``defaultResponse``, 200), ``refuse`` (503 with
    ``message``) or ``model`` (the model's answer with ``parameters.pending_review: true``).
    """

    url: str = Field(description="http://host:port/path of the review webhook; it gets one POST per review.")
    respond: ReviewRespond = Field(default="model", description="What the client gets while its answer is reviewed.")
    default_response: dict[str, Any] | None = Field(default=None, description="For respond default: the OIP body.")
    message: str | None = Field(default=None, max_length=1024, description="For respond refuse: the error message.")
    high_stakes: Sticky | None = Field(
        default=None,
        description="A request header or JSON field that marks a request high-stakes (value true or 1): its "
        "answer is reviewed whatever its confidence.",
    )
    queue_size: int = Field(
        default=256, ge=1, le=65536, description="Reviews waiting beyond this (or 64 MiB of queued bodies) are dropped."
    )
    concurrency: int = Field(default=2, ge=1, le=64, description="Reviews being delivered at once.")
    timeout_seconds: float = Field(default=2.0, gt=0, le=60, description="One delivery attempt's timeout.")
    retries: int = Field(default=2, ge=0, le=10, description="Attempts after the first, for timeouts and 5xx.")
    backoff_seconds: float = Field(default=0.2, gt=0, le=60, description="Wait before the first retry; doubles.")
    max_body_bytes: int = Field(
        default=65536, ge=1024, le=16 << 20, description="A review body larger than this is dropped (too_large)."
    )

    _v_url = field_validator("url")(_check_webhook)

    @model_validator(mode="after")
    def _payload_matches_respond(self) -> Review:
        if self.respond == "default" and self.default_response is None:
            raise ValueError(REVIEW_DEFAULT_NEEDS_RESPONSE)
        if self.respond != "default" and self.default_response is not None:
            raise ValueError(f"review.respond {self.respond} must not carry a defaultResponse")
        if self.respond != "refuse" and self.message is not None:
            raise ValueError(f"review.respond {self.respond} must not carry a message")
        return self


def chain_problem(links: Sequence[tuple[FallbackAction, str | None]]) -> str | None:
    """Why the gateway refuses a fallback chain of ``(action, backup name)`` links, or None.

    No link twice (a backup counts by its name, any other link by its action), and the actions that
    always answer (default, refuse) only last. The API refuses the same chains (mlrollout.api.fallbackpolicy).
    """
    actions = [action for action, _ in links]
    keys = [backup if action == "backup" and backup else action for action, backup in links]
    if "review" in actions:
        return REVIEW_NOT_IN_CHAIN
    if len(set(keys)) != len(keys):
        return f"fallback chain repeats an action: {actions}"
    for terminal in ("default", "refuse"):
        if terminal in actions and actions.index(terminal) != len(actions) - 1:
            return f"fallback action {terminal} always answers, so it must be last: {actions}"
    return None


def review_problem(low_confidence_action: str | None, has_review: bool, has_high_stakes: bool) -> str | None:
    """Why the gateway refuses a policy's review settings, or None (the API refuses the same)."""
    if low_confidence_action == "review" and not has_review:
        return REVIEW_NEEDS_SETTINGS
    if has_review and low_confidence_action != "review" and not has_high_stakes:
        return REVIEW_NEEDS_A_TRIGGER
    return None


class FallbackSettings(_Model):
    """The FallbackPolicy as the gateway applies it to every request."""

    request_timeout_seconds: float = Field(default=5.0, gt=0)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    confidence_threshold: float | None = Field(default=None, gt=0, le=1)
    chain: tuple[FallbackStep, ...] = Field(default=(), description="Tried in order until one answers.")
    low_confidence_action: FallbackStep | None = Field(
        default=None, description="Applied when the top class probability is below confidenceThreshold."
    )
    review: Review | None = Field(default=None, description="Human review (lowConfidenceAction review, highStakes).")

    @model_validator(mode="after")
    def _chain_is_sane(self) -> FallbackSettings:
        problem = chain_problem([(step.action, step.backup.name if step.backup else None) for step in self.chain])
        if problem:
            raise ValueError(problem)
        if self.low_confidence_action is not None and self.confidence_threshold is None:
            raise ValueError(LOW_CONFIDENCE_NEEDS_THRESHOLD)
        problem = review_problem(
            self.low_confidence_action.action if self.low_confidence_action else None,
            self.review is not None,
            self.review is not None and self.review.high_stakes is not None,
        )
        if problem:
            raise ValueError(problem)
        return self


class RouteTable(_Model):
    """Everything the gateway needs to route one ModelDeployment's traffic."""

    version: int = Field(ge=0, description="Increases with every change; exposed as gauge and header.")
    mode: Mode = "canary"
    tracks: dict[TrackName, Track] = Field(description="`stable` is required, `candidate` optional.")
    mirror: Mirror | None = None
    sticky: Sticky | None = None
    fallback: FallbackSettings = Field(default_factory=FallbackSettings)
    step_started_at: float | None = Field(
        default=None,
        ge=0,
        description="Unix seconds (UTC, may carry a fraction) when the current rollout step started: a label "
        "counts only for an answer served at or after it (contract.feedback.counts_in_step), so a step's "
        "analysis never scores answers served under the step before it. Absent when no rollout step runs, "
        "and in tables of an operator before this field: every label then counts.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RouteTable:
        if "stable" not in self.tracks:
            raise ValueError("tracks must contain stable")
        total = sum(t.weight for t in self.tracks.values())
        if abs(total - 100.0) > _WEIGHT_TOLERANCE:
            raise ValueError(f"track weights must add up to 100, got {total:g}")
        if self.mode == "ab" and self.sticky is None:
            raise ValueError("mode ab needs a sticky key")
        if self.mode == "blueGreen" and any(t.weight not in (0.0, 100.0) for t in self.tracks.values()):
            raise ValueError("mode blueGreen sends all traffic to one track: weights must be 0 or 100")
        return self

    def weights(self) -> tuple[tuple[TrackName, float], ...]:
        """Track weights in a fixed order (stable first), the input of the pick functions."""
        return tuple((name, self.tracks[name].weight) for name in ("stable", "candidate") if name in self.tracks)
