"""FallbackPolicy: what the gateway does, per request, when a model is down, slow or unsure.

The gateway refuses a route table whose fallback chain repeats an action or puts an answering action
(default, refuse) before the end (`mlrollout_serving.contract.routes.chain_problem`). That rule is the
gateway's; the validators here run it on the policy, so `mlrollout validate` refuses exactly what the gateway
would refuse at reconcile time, and `CHAIN_RULES` state it in CEL for the API server.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mlrollout.api.common import (
    ApiModel,
    Duration,
    Name,
    PolicySelector,
    PolicyStatus,
    cel,
    cel_rules,
)
from mlrollout.api.modeldeployment import StickyKey
from mlrollout_serving.contract.routes import (
    LOW_CONFIDENCE_NEEDS_THRESHOLD,
    REVIEW_DEFAULT_NEEDS_RESPONSE,
    REVIEW_NEEDS_A_TRIGGER,
    REVIEW_NEEDS_SETTINGS,
    REVIEW_NOT_IN_CHAIN,
    chain_problem,
    review_problem,
)

TensorDatatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"
]


class OutputTensor(ApiModel):
    """One output tensor of a default answer, in Open Inference Protocol form."""

    name: str = Field(max_length=253, description="Output name, as the model names it.")
    datatype: TensorDatatype = Field(description="Open Inference Protocol datatype.")
    shape: list[int] = Field(max_length=8, description="Tensor shape.")
    data: list[float] = Field(max_length=4096, description="Flat row-major data.")


class DefaultResponse(ApiModel):
    """A fixed Open Inference Protocol answer, for when no model can answer."""

    outputs: list[OutputTensor] = Field(min_length=1, max_length=16, description="The output tensors.")


class CircuitBreaker(ApiModel):
    """Stop sending to an upstream that keeps failing; probe it again after a while."""

    consecutive_failures: int = Field(default=5, ge=1, le=1000, description="Failures in a row that open the circuit.")
    open_duration: Duration = Field(
        default="30s", description="How long the circuit stays open before one probe request."
    )


class FallbackAction(ApiModel):
    """One link of the fallback chain."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel("self.action != 'backup' || has(self.backup)", "action backup needs backup", ".backup"),
            cel("self.action != 'default' || has(self.response)", "action default needs response", ".response"),
        )
    }

    action: Literal["stable", "backup", "default", "refuse", "review"] = Field(
        description=(
            "stable: retry on the stable model; backup: send to another ModelDeployment; default: answer with "
            "`response`; refuse: answer 503 with a JSON error saying why; review (lowConfidenceAction only): "
            "send the answer to the `review` webhook and answer as `review.respond` says."
        )
    )
    backup: Name | None = Field(
        default=None,
        description="For backup: a ModelDeployment in the same namespace (e.g. a simpler model).",
    )
    response: DefaultResponse | None = Field(default=None, description="For default: the answer to give.")
    message: str | None = Field(
        default=None, max_length=1024, description="For refuse: the error message returned to the client."
    )

    @model_validator(mode="after")
    def _complete(self) -> FallbackAction:
        if self.action == "backup" and self.backup is None:
            raise ValueError("action backup needs backup")
        if self.action == "default" and self.response is None:
            raise ValueError("action default needs response")
        return self


_KEY = "(x.action == 'backup' && has(x.backup) ? x.backup : x.action)"
CHAIN_RULES: Final = (
    cel("self.all(x, x.action != 'review')", REVIEW_NOT_IN_CHAIN),
    cel(
        f"self.all(a, self.filter(x, {_KEY} == {_KEY.replace('x.', 'a.')}).size() == 1)",
        "fallback chain repeats an action",
    ),
    # with no link twice, "the first `terminal` is last" is "a chain with a `terminal` ends with it"
    # (the cheap form: CEL's cost estimate for map().indexOf() on enum strings exceeds the budget)
    *(
        cel(
            f"!self.exists(x, x.action == '{terminal}') || self[size(self) - 1].action == '{terminal}'",
            f"fallback action {terminal} always answers, so it must be last",
        )
        for terminal in ("default", "refuse")
    ),
)
"""The gateway's chain rule for the API server: a link is keyed by its backup's name or else its action."""


class Review(ApiModel):
    """Human review: unsure or high-stakes answers go to a webhook, the client is answered without waiting."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            # respond has a default in the model only (the CRD carries none), so it may be absent here
            cel("!has(self.respond) || self.respond != 'default' || has(self.response)",
                REVIEW_DEFAULT_NEEDS_RESPONSE, ".response"),
            cel("(has(self.respond) && self.respond == 'default') || !has(self.response)",
                "review.response is only for respond default", ".response"),
            cel("(has(self.respond) && self.respond == 'refuse') || !has(self.message)",
                "review.message is only for respond refuse", ".message"),
        )
    }  # fmt: skip

    url: str = Field(
        max_length=2048,
        pattern=r"^http://[^/:?#]+:[0-9]+(/[^#]*)?$",
        description="http://host:port/path of the review webhook (one POST per review; body: docs/gateway.md).",
    )
    respond: Literal["default", "refuse", "model"] = Field(
        default="model",
        description=(
            "What the client gets while its answer is reviewed: default (`response`, 200), refuse (503 with "
            "`message`), model (the model's answer with parameters.pending_review true)."
        ),
    )
    response: DefaultResponse | None = Field(default=None, description="For respond default: the answer to give.")
    message: str | None = Field(default=None, max_length=1024, description="For respond refuse: the error message.")
    high_stakes: StickyKey | None = Field(
        default=None,
        description="A request header or JSON field whose value true (or 1) marks a request high-stakes: its answer "
        "is reviewed whatever its confidence.",
    )
    queue_size: int = Field(
        default=256, ge=1, le=65536, description="Reviews waiting beyond this (or 64 MiB of queued bodies) are dropped."
    )
    concurrency: int = Field(default=2, ge=1, le=64, description="Reviews being delivered at once.")
    timeout: Duration = Field(default="2s", description="One delivery attempt's timeout.")
    retries: int = Field(default=2, ge=0, le=10, description="Attempts after the first, after a timeout or 5xx.")
    backoff: Duration = Field(default="200ms", description="Wait before the first retry; doubles each retry.")
    max_body_bytes: int = Field(
        default=65536, ge=1024, le=16 << 20, description="A review body larger than this is dropped, not sent."
    )

    @model_validator(mode="after")
    def _payload_matches_respond(self) -> Review:
        if self.respond == "default" and self.response is None:
            raise ValueError(REVIEW_DEFAULT_NEEDS_RESPONSE)
        if self.respond != "default" and self.response is not None:
            raise ValueError("review.response is only for respond default")
        if self.respond != "refuse" and self.message is not None:
            raise ValueError("review.message is only for respond refuse")
        return self


def _default_chain() -> list[FallbackAction]:
    return [FallbackAction(action="stable"), FallbackAction(action="refuse")]


class FallbackPolicySpec(ApiModel):
    """Per-request protection: timeouts, circuit breaking, confidence, and an ordered fallback chain."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel(
                "!has(self.lowConfidenceAction) || has(self.confidenceThreshold)",
                LOW_CONFIDENCE_NEEDS_THRESHOLD,
                ".lowConfidenceAction",
            ),
            cel(
                "!has(self.lowConfidenceAction) || self.lowConfidenceAction.action != 'review' || has(self.review)",
                REVIEW_NEEDS_SETTINGS,
                ".review",
            ),
            cel(
                "!has(self.review) || has(self.review.highStakes) || "
                "(has(self.lowConfidenceAction) && self.lowConfidenceAction.action == 'review')",
                REVIEW_NEEDS_A_TRIGGER,
                ".review",
            ),
        )
    }

    selector: PolicySelector | None = Field(
        default=None, description="ModelDeployments this policy applies to when they name no policy."
    )
    priority: int = Field(
        default=0, ge=0, le=1_000_000, description="Among matching policies, the highest priority wins."
    )
    request_timeout: Duration = Field(default="2s", description="A request slower than this has failed.")
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker, description="Per-upstream circuit breaker.")
    confidence_threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Answers whose top class probability is below this take lowConfidenceAction.",
    )
    chain: list[FallbackAction] = Field(
        default_factory=_default_chain,
        min_length=1,
        max_length=5,
        description=(
            "Actions tried in order when the chosen model errs, times out or its circuit is open; no action "
            "twice (a backup counts by its name), and default or refuse, which always answer, only last."
        ),
        json_schema_extra=cel_rules(*CHAIN_RULES),
    )
    low_confidence_action: FallbackAction | None = Field(
        default=None, description="What to do with a low-confidence answer (needs confidenceThreshold)."
    )
    review: Review | None = Field(
        default=None,
        description="Human review webhook, for lowConfidenceAction review and high-stakes requests.",
    )

    @field_validator("chain")
    @classmethod
    def _chain_as_the_gateway_takes_it(cls, chain: list[FallbackAction]) -> list[FallbackAction]:
        problem = chain_problem([(link.action, link.backup) for link in chain])
        if problem:
            raise ValueError(problem)
        return chain

    @field_validator("low_confidence_action")
    @classmethod
    def _low_confidence_needs_a_threshold(
        cls, low: FallbackAction | None, info: ValidationInfo
    ) -> FallbackAction | None:
        if low is not None and "confidence_threshold" in info.data and info.data["confidence_threshold"] is None:
            raise ValueError(LOW_CONFIDENCE_NEEDS_THRESHOLD)
        return low

    @model_validator(mode="after")
    def _review_as_the_gateway_takes_it(self) -> FallbackPolicySpec:
        low = self.low_confidence_action
        problem = review_problem(
            low.action if low else None,
            self.review is not None,
            self.review is not None and self.review.high_stakes is not None,
        )
        if problem:
            raise ValueError(problem)
        return self


class FallbackPolicy(ApiModel):
    """FallbackPolicy (cluster-scoped, short name fp): what to answer when a model cannot."""

    api_version: Literal["mlrollout.io/v1alpha1"] = Field(
        default="mlrollout.io/v1alpha1", description="mlrollout.io/v1alpha1"
    )
    kind: Literal["FallbackPolicy"] = Field(default="FallbackPolicy", description="FallbackPolicy")
    metadata: dict[str, object] = Field(default_factory=dict, description="Standard object metadata.")
    spec: FallbackPolicySpec = Field(default_factory=FallbackPolicySpec, description="The policy.")
    status: PolicyStatus | None = Field(default=None, description="Written by the operator.")
