"""RolloutPolicy: how a platform team wants every model in its namespaces to be rolled out."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Annotated, Final, Literal, get_args

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from mlrollout.api.common import (
    SHA256_PATTERN,
    ApiModel,
    Duration,
    Name,
    PolicySelector,
    PolicyStatus,
    Quantity,
    cel,
    cel_rules,
    parse_duration,
)
from mlrollout.api.placeholders import QUERY_RULES, check_query
from mlrollout.api.uris import DATASET_URI_PATTERN
from mlrollout_serving.contract.evaluation import REGRESSION_METRICS, margin_allowed
from mlrollout_serving.contract.metrics import CLIP_BOUNDS, DEFAULT_ERROR_BOUND

NOT_BLANK_PATTERN = r"[^ \t\r\n]"
RELATIVE_ZERO = (
    "a relative margin of 0 makes promotion impossible (the candidate would have to be shown strictly "
    "better than stable): use a positive relative margin, add a floor, or use an absolute margin"
)
FRACTION_MARGIN = (
    "an absolute margin or floor of a rate or fraction (error rate, accuracy, balancedAccuracy, rocAuc) is at most 1"
)


def fraction_margin_cel(margin: str) -> str:
    """CEL: the margin at path ``margin`` has no absolute part above 1 (the pydantic side: ``fraction_margin``)."""
    return f"(!has({margin}.absolute) || {margin}.absolute <= 1.0) && (!has({margin}.floor) || {margin}.floor <= 1.0)"


def fraction_margin(margin: Margin) -> None:
    """A rate's or a fraction's margin allows at most 1 in absolute terms: more would pass any candidate.

    The cap is per metric, not on ``Margin`` itself: an MAE margin is in the target's unit, and a latency
    margin in seconds, where more than 1 is meaningful."""
    if margin.least > 1:
        raise ValueError(FRACTION_MARGIN)


CustomQuery = Annotated[
    str,
    StringConstraints(pattern=NOT_BLANK_PATTERN, max_length=2048),
    AfterValidator(check_query),
    Field(json_schema_extra=cel_rules(*QUERY_RULES)),
]


def unique_names(names: list[str], what: str) -> None:
    """The pydantic side of the CRD's `exists_one` rules: the same message, with the repeated names."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} names must be unique (repeated: {', '.join(repeated)})")


class ShadowStep(ApiModel):
    """Mirror live requests to the candidate; clients only ever see stable's answers."""

    mirror_percent: int = Field(
        default=100, ge=1, le=100, description="Share of live requests copied to the candidate, in percent."
    )
    min_requests: int = Field(
        default=200, ge=0, description="Requests the candidate must have answered before this step can pass."
    )
    max_duration: Duration = Field(
        default="30m", description="Longest time the step may run before the inconclusive rule applies."
    )


class CanaryStep(ApiModel):
    """Send a share of live traffic to the candidate and compare it with stable."""

    weight: int = Field(ge=1, le=100, description="Percent of live requests routed to the candidate.")
    min_requests: int = Field(
        default=200, ge=0, description="Requests the candidate must have answered before this step can pass."
    )
    max_duration: Duration = Field(
        default="30m", description="Longest time the step may run before the inconclusive rule applies."
    )


class PauseStep(ApiModel):
    """Hold the current traffic split for a time, or until a human resumes."""

    duration: Duration | None = Field(
        default=None, description="How long to hold; absent means until `kubectl mlrollout resume`."
    )


class BlueGreenStep(ApiModel):
    """Run the candidate beside stable (preview), then switch all traffic at once."""

    preview_analysis: bool = Field(
        default=True,
        description="Mirror live traffic to the preview and require a promote verdict before the switch.",
    )
    preview_mirror_percent: int = Field(
        default=100, ge=1, le=100, description="Share of live requests copied to the preview, in percent."
    )
    min_requests: int = Field(
        default=200, ge=0, description="Requests the preview must have answered before the switch."
    )
    max_duration: Duration = Field(
        default="30m", description="Longest time the preview may run before the inconclusive rule applies."
    )
    scale_down_delay: Duration = Field(
        default="10m",
        description="Rollback window: how long the old stable is kept running after the switch.",
    )


class EvaluationDataset(ApiModel):
    """The labelled holdout both models are scored on."""

    uri: Annotated[str, StringConstraints(pattern=DATASET_URI_PATTERN, max_length=2048)] = Field(
        description=(
            "Where the holdout is: http(s)://HOST[:PORT]/PATH, file:///PATH (in the serving image), "
            "pvc://CLAIM/PATH, s3://BUCKET/KEY or gs://BUCKET/OBJECT; fetched and verified by the model "
            "server's own download, with the models' credentials."
        )
    )
    sha256: Annotated[str, StringConstraints(pattern=SHA256_PATTERN)] = Field(
        description="Expected sha256 of the holdout file (64 lowercase hex characters); checked before scoring."
    )
    label: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="The label column (CSV header) or array (.npz); every other column but the slices is a feature."
    )
    format: Literal["csv", "npz"] = Field(
        default="csv", description="csv (a header row; streamed) or npz (features in X, the label by name)."
    )


class EvaluationResources(ApiModel):
    """Limits of the evaluation Job's one container (it requests 100m CPU and its memory limit)."""

    cpu: Quantity = Field(default="1", description="CPU limit, e.g. 500m or 2.")
    memory: Quantity = Field(default="1Gi", description="Memory limit, e.g. 512Mi (a CSV is streamed; see docs).")


EVALUATION_METRICS = ("accuracy", "balancedAccuracy", "logLoss", "rocAuc", "mae", "rmse")
FRACTION_METRICS = ("accuracy", "balancedAccuracy", "rocAuc")  # scores in [0, 1]: a margin above 1 passes all
BASELINE_RULE = "baseline mean is for mae and rmse, majority for the classification metrics"


class EvaluateStep(ApiModel):
    """Score stable and candidate on a labelled holdout (a Job from the serving image) before any traffic.

    Paired tests per metric, the effect with its interval, a trivial baseline to beat (docs/analysis.md,
    "Offline evaluation"). Worse than the margin, or not beating the baseline: onFailure, before any pod
    receives traffic; a holdout that cannot tell, or one that cannot be evaluated: onInconclusive."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel(
                "!has(self.baseline) || self.baseline == 'none' || "
                "((self.baseline == 'mean') == (has(self.metric) && self.metric in ['mae', 'rmse']))",
                BASELINE_RULE,
                ".baseline",
            ),
            cel(
                "!has(self.slices) || !(self.dataset.label in self.slices)",
                "the label column cannot also be a slice",
                ".slices",
            ),
            cel(
                "(has(self.metric) && self.metric in ['logLoss', 'mae', 'rmse']) || !has(self.margin) || "
                f"({fraction_margin_cel('self.margin')})",
                FRACTION_MARGIN,
            ),
        )
    }

    dataset: EvaluationDataset = Field(description="The labelled holdout.")
    metric: Literal["accuracy", "balancedAccuracy", "logLoss", "rocAuc", "mae", "rmse"] = Field(
        default="accuracy",
        description="accuracy, balancedAccuracy, logLoss, rocAuc (binary) for classifiers; mae, rmse for regressors.",
    )
    margin: Margin = Field(
        default_factory=lambda: Margin(relative=0.01),
        description="How much worse than stable the candidate may be: relative to stable's score, or absolute.",
    )
    baseline: Literal["majority", "mean", "none"] | None = Field(
        default=None,
        description=(
            "The trivial model the candidate must beat: majority (classification metrics), mean (mae, rmse) or "
            "none; absent: the metric's own."
        ),
    )
    slices: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None = Field(
        default=None,
        max_length=8,
        description="Columns to compare per value as well (Bonferroni-corrected); worse on one segment fails.",
    )
    max_duration: Duration = Field(
        default="10m", description="The Job's deadline; past it the evaluation is inconclusive (onInconclusive)."
    )
    resamples: int = Field(default=2000, ge=100, le=100_000, description="Bootstrap resamples (seeded).")
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="The bootstrap's seed: the same data, the same result."
    )
    resources: EvaluationResources = Field(
        default_factory=EvaluationResources, description="CPU and memory limits of the evaluation Job."
    )

    @model_validator(mode="after")
    def _coherent(self) -> EvaluateStep:
        regression = self.metric in REGRESSION_METRICS
        if self.baseline not in (None, "none") and (self.baseline == "mean") != regression:
            raise ValueError(BASELINE_RULE)
        if self.slices and self.dataset.label in self.slices:
            raise ValueError("the label column cannot also be a slice")
        if self.metric in FRACTION_METRICS:
            fraction_margin(self.margin)
        return self

    def summary(self) -> str:
        baseline = self.baseline or ("mean" if self.metric in REGRESSION_METRICS else "majority")
        name = self.dataset.uri.rsplit("/", 1)[-1]
        return f"offline evaluation: {self.metric} on {name}, baseline {baseline}, deadline {self.max_duration}"


STEP_KINDS = ("shadow", "canary", "pause", "blueGreen", "evaluate")
TRAFFIC_KINDS = ("shadow", "canary", "blueGreen")


ONE_KIND = "each step must set exactly one of shadow, canary, pause, blueGreen, evaluate"


class Step(ApiModel):
    """One step of a strategy; exactly one of its fields is set."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel(
                "[has(self.shadow), has(self.canary), has(self.pause), has(self.blueGreen), has(self.evaluate)]"
                ".filter(x, x).size() == 1",
                ONE_KIND,
            )
        )
    }

    shadow: ShadowStep | None = Field(default=None, description="A shadow (mirroring) step.")
    canary: CanaryStep | None = Field(default=None, description="A canary (weighted traffic) step.")
    pause: PauseStep | None = Field(default=None, description="A pause step.")
    blue_green: BlueGreenStep | None = Field(default=None, description="A blue-green preview and switch.")
    evaluate: EvaluateStep | None = Field(
        default=None, description="An offline evaluation on a labelled holdout; only before any traffic step."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        if sum(x is not None for x in (self.shadow, self.canary, self.pause, self.blue_green, self.evaluate)) != 1:
            raise ValueError(ONE_KIND)
        return self

    @property
    def kind(self) -> str:
        """The name of the field that is set: shadow, canary, pause or blueGreen."""
        for name in STEP_KINDS:
            if getattr(self, "blue_green" if name == "blueGreen" else name) is not None:
                return name
        raise AssertionError("unreachable: validated to have exactly one kind")

    def summary(self) -> str:
        """What the step does, in a few words (its StepStarted event, `kubectl mlrollout status`)."""
        if self.shadow is not None:
            return f"mirror {self.shadow.mirror_percent}%, min {self.shadow.min_requests} requests"
        if self.canary is not None:
            return f"weight {self.canary.weight}%, min {self.canary.min_requests} requests"
        if self.blue_green is not None:
            bg = self.blue_green
            preview = f"preview mirror {bg.preview_mirror_percent}%" if bg.preview_analysis else ""
            return ", ".join(p for p in (preview, "switch all", f"keep old {bg.scale_down_delay}") if p)
        if self.evaluate is not None:
            return self.evaluate.summary()
        assert self.pause is not None
        return f"hold {self.pause.duration}" if self.pause.duration else "hold until resumed"


_CANARY_WEIGHTS = "self.steps.filter(s, has(s.canary)).map(s, s.canary.weight)"
_TRAFFIC = "has(s.shadow) || has(s.canary) || has(s.blueGreen)"
EVALUATE_FIRST = "evaluate steps must come before every traffic step (shadow, canary, blueGreen)"
STEPS_RULES = (
    cel(
        f"{_CANARY_WEIGHTS}.isSorted() && {_CANARY_WEIGHTS}.all(w, {_CANARY_WEIGHTS}.filter(x, x == w).size() == 1)",
        "canary weights must be strictly increasing",
        ".steps",
    ),
    cel(
        "!self.steps.exists(s, has(s.blueGreen)) || (self.steps.filter(s, has(s.blueGreen)).size() == 1"
        " && !self.steps.exists(s, has(s.canary)))",
        "a blueGreen strategy has exactly one blueGreen step and no canary steps",
        ".steps",
    ),
    cel(
        f"!self.steps.exists(s, has(s.evaluate)) || !self.steps.exists(s, {_TRAFFIC}) || "
        f"self.steps.map(s, has(s.evaluate)).lastIndexOf(true) < self.steps.map(s, {_TRAFFIC}).indexOf(true)",
        EVALUATE_FIRST,
        ".steps",
    ),
)


def check_steps(steps: list[Step]) -> None:
    """The cross-step rules, offline; `STEPS_RULES` are the same rules for the API server."""
    weights = [s.canary.weight for s in steps if s.canary is not None]
    if any(b <= a for a, b in itertools.pairwise(weights)):
        raise ValueError("canary weights must be strictly increasing")
    blue_green = [s for s in steps if s.blue_green is not None]
    if blue_green and (len(blue_green) > 1 or weights):
        raise ValueError("a blueGreen strategy has exactly one blueGreen step and no canary steps")
    kinds = [s.kind for s in steps]
    traffic = [i for i, k in enumerate(kinds) if k in TRAFFIC_KINDS]
    evaluate = [i for i, k in enumerate(kinds) if k == "evaluate"]
    if traffic and evaluate and evaluate[-1] > traffic[0]:
        raise ValueError(EVALUATE_FIRST)


class Strategy(ApiModel):
    """The ordered steps a new revision walks through before it becomes stable."""

    model_config = ApiModel.model_config | {"json_schema_extra": cel_rules(*STEPS_RULES)}

    steps: list[Step] = Field(
        min_length=1, max_length=20, description="Steps in order; the candidate is promoted after the last."
    )

    @model_validator(mode="after")
    def _coherent(self) -> Strategy:
        check_steps(self.steps)
        return self

    def canary_weights(self) -> list[int]:
        """Candidate weights of the canary steps, in order."""
        return [s.canary.weight for s in self.steps if s.canary is not None]

    @property
    def is_blue_green(self) -> bool:
        """Whether the strategy switches at once instead of stepping weights."""
        return any(s.blue_green is not None for s in self.steps)


class ErrorRateMetric(ApiModel):
    """Errors (5xx answers and timeouts) per request, candidate against stable."""

    enabled: bool = Field(default=True, description="Whether this metric takes part in the verdict.")
    max_rate: float | None = Field(
        default=0.05,
        ge=0,
        le=1,
        description=(
            "Absolute SLO: the candidate's error rate must stay below this. null: no error-rate SLO "
            "(the comparison with stable still applies); absent: 0.05."
        ),
    )


class LatencyMetric(ApiModel):
    """Request latency from the histograms, candidate against stable and against an SLO."""

    enabled: bool = Field(default=True, description="Whether this metric takes part in the verdict.")
    quantile: float = Field(default=0.99, ge=0.5, le=0.999, description="The quantile the SLO speaks of.")
    max_seconds: float | None = Field(
        default=None, gt=0, description="Absolute SLO on the candidate's quantile, in seconds."
    )
    compare_with_stable: bool = Field(
        default=True, description="Also require the candidate's latency to be non-inferior to stable's."
    )


class DriftMetric(ApiModel):
    """A distribution that must not move too far (population stability index)."""

    enabled: bool = Field(default=True, description="Whether this metric takes part in the verdict.")
    max_psi: float = Field(default=0.2, gt=0, le=10, description="Largest population stability index tolerated.")


class SplitMetric(ApiModel):
    """The realised traffic split against the configured one (sample-ratio mismatch, docs/analysis.md)."""

    enabled: bool = Field(
        default=True, description="Whether a mismatch makes the verdict inconclusive (it never rolls back)."
    )
    tolerance: float = Field(
        default=0.1,
        gt=0,
        le=0.5,
        description=(
            "Relative deviation of the realised share from the configured one that is not a mismatch: 0.1 lets "
            "a 10% weight be realised as 9% to 11% (in-flight copies and similar counting artefacts stay below)."
        ),
    )


MIN_MARGIN = 1e-4
"""The smallest absolute margin or floor: 0.01 percentage points of error rate, 0.1 ms of latency (the first
latency bucket bound). Below it no rollout collects enough requests to show non-inferiority."""


class Margin(ApiModel):
    """A non-inferiority margin: how much worse than stable the candidate may be and still count as no worse.

    ``relative`` scales with stable's level (the same meaning at a 0.1% and a 10% error rate); ``floor`` is
    the smallest margin it may become, in the metric's unit, so a near-zero level is not held to a margin
    no rollout can show. The margin at stable's level ``x`` is ``max(relative * x, floor)``; with
    ``absolute`` it is that fixed amount. docs/analysis.md, "Margins", says why this stays valid when
    ``x`` is estimated from stable's own data.
    """

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel("has(self.absolute) != has(self.relative)", "a margin sets exactly one of absolute, relative"),
            cel("!has(self.floor) || has(self.relative)", "floor goes with a relative margin", ".floor"),
            cel("!has(self.relative) || self.relative > 0.0 || has(self.floor)", RELATIVE_ZERO, ".relative"),
        )
    }

    absolute: float | None = Field(
        default=None,
        ge=MIN_MARGIN,
        description=(
            "A fixed margin in the metric's unit (a rate for errors, e.g. 0.005; seconds for latency; the "
            "target's unit for mae). At most 1 for rates and fractions."
        ),
    )
    relative: float | None = Field(
        default=None, ge=0, le=10, description="As a fraction of stable's value (0.3 means 30% worse)."
    )
    floor: float | None = Field(
        default=None,
        ge=MIN_MARGIN,
        description=(
            "With relative: the smallest margin, in the metric's unit (e.g. 0.0025 for errors, 0.001 s). At most 1 "
            "for rates and fractions."
        ),
    )

    @model_validator(mode="after")
    def _coherent(self) -> Margin:
        if (self.absolute is None) == (self.relative is None):
            raise ValueError("a margin sets exactly one of absolute, relative")
        if self.floor is not None and self.relative is None:
            raise ValueError("floor goes with a relative margin")
        if self.relative == 0 and self.floor is None:
            raise ValueError(RELATIVE_ZERO)
        return self

    @property
    def scale(self) -> float:
        """The relative part (0 for an absolute margin)."""
        return self.relative or 0.0

    @property
    def least(self) -> float:
        """The absolute part: the floor of a relative margin, or the absolute margin (0 when neither)."""
        return self.absolute if self.absolute is not None else (self.floor or 0.0)

    def allowed(self, level: float) -> float:
        """The margin at stable's level: ``max(relative * level, floor)``, or the absolute margin (the rule is
        the contract's, so the offline evaluation Job applies the very same one)."""
        return margin_allowed(level, self.relative, self.floor, self.absolute)

    def limit(self, level: float) -> float:
        """The worst level still no worse than ``level``: ``level + allowed(level)``; increasing in ``level``."""
        return level + self.allowed(level)

    def at_most(self, other: Margin) -> bool:
        """Whether this margin allows no more than ``other`` at every level (a stricter override)."""
        return self.scale <= other.scale and self.least <= other.least

    def describe(self, unit: Callable[[float], str]) -> str:
        """Words for reasons and plans: "30% of stable's, at least 0.25 pp"; ``unit`` formats absolutes."""
        if self.relative is None:
            return unit(self.least)
        relative = (
            f"{self.relative:.0%}" if self.relative * 100 == round(self.relative * 100) else f"{self.relative:g}x"
        )
        return f"{relative} of stable's" + (f", at least {unit(self.least)}" if self.floor is not None else "")


RATE_MARGIN_DEFAULT = Margin(relative=0.3, floor=0.0025)
LATENCY_MARGIN_DEFAULT = Margin(relative=0.1, floor=0.001)


MAE_NEEDS_BOUND = (
    "errorBound is required with metric mae: the tests compare MAEs of errors clipped at it, and a bound far "
    "above the errors' scale has almost no power (no default means the same for every target's unit); pick "
    "the smallest of the gateway's clip bounds above the errors you care to tell apart"
)


class QualityMetric(ApiModel):
    """Model quality from ground truth: labels clients send back with the feedback id of each answer."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel("!has(self.metric) || self.metric != 'mae' || has(self.errorBound)", MAE_NEEDS_BOUND),
            cel(
                f"(has(self.metric) && self.metric == 'mae') || !has(self.margin) || "
                f"({fraction_margin_cel('self.margin')})",
                FRACTION_MARGIN,
            ),
        )
    }

    enabled: bool = Field(
        default=False,
        description="Whether quality takes part in the verdict (needs clients that send labels: docs/gateway.md).",
    )
    metric: Literal["accuracy", "mae"] = Field(
        default="accuracy", description="accuracy for classifiers, mae (mean absolute error) for regressors."
    )
    margin: Margin = Field(
        default_factory=lambda: Margin(relative=0.01),
        description=(
            "How much worse the candidate may be and still count as no worse: relative to stable's accuracy or "
            "MAE, or absolute (accuracy points as a fraction, e.g. 0.005)."
        ),
    )
    min_labels: int = Field(
        default=200, ge=1, le=10_000_000, description="Labelled rows per track before quality can pass."
    )
    max_label_wait: Duration = Field(
        default="30m",
        description=(
            "A step whose candidate has no labelled rows this long after it started ends by onInconclusive, "
            "visibly, instead of waiting for maxDuration."
        ),
    )
    error_bound: float | None = Field(
        default=None,
        description=(
            "mae (required there): each labelled row's absolute error is clipped at this bound (in the target's "
            "unit) and the tests compare the clipped MAEs, which is what makes them valid at every sample size. "
            "Pick the "
            "smallest listed bound above the errors you care to tell apart: a bound near the errors' scale "
            "tests many times faster than one far above it. One of the gateway's clip bounds: "
            + ", ".join(f"{b:g}" for b in CLIP_BOUNDS)
            + "."
        ),
    )

    @field_validator("error_bound")
    @classmethod
    def _a_clip_bound(cls, value: float | None) -> float | None:
        if value is not None and value not in CLIP_BOUNDS:
            raise ValueError(f"errorBound must be one of the gateway's clip bounds {list(CLIP_BOUNDS)}, got {value:g}")
        return value

    @model_validator(mode="after")
    def _mae_has_a_bound(self) -> QualityMetric:
        if self.metric == "mae" and self.error_bound is None:
            raise ValueError(MAE_NEEDS_BOUND)
        if self.metric == "accuracy":
            fraction_margin(self.margin)
        return self

    @property
    def clip_bound(self) -> float:
        """The bound whose clipped-error series the analysis reads (accuracy reads none: any bound will do)."""
        return DEFAULT_ERROR_BOUND if self.error_bound is None else self.error_bound


class CustomMetric(ApiModel):
    """A PromQL query of your own, evaluated for the candidate and held to thresholds."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel("has(self.min) || has(self.max)", "a custom metric needs min or max"),
            cel("!has(self.min) || !has(self.max) || self.min <= self.max", "min must not be above max"),
        )
    }

    name: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=63)] = Field(
        description="Name shown in verdicts; unique among the custom metrics."
    )
    query: CustomQuery = Field(
        description=(
            "PromQL returning one number; may use the placeholders {{namespace}}, {{modelDeployment}}, "
            "{{track}}, {{revision}} and {{window}}, and {{ or }} nowhere else."
        ),
    )
    min: float | None = Field(default=None, description="The result must be at least this.")
    max: float | None = Field(default=None, description="The result must be at most this.")

    @model_validator(mode="after")
    def _has_threshold(self) -> CustomMetric:
        if self.min is None and self.max is None:
            raise ValueError("a custom metric needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must not be above max ({self.min:g} > {self.max:g})")
        return self


class Metrics(ApiModel):
    """The evidence that decides every step."""

    error_rate: ErrorRateMetric = Field(
        default_factory=ErrorRateMetric, description="Error rate: harm, non-inferiority and SLO."
    )
    latency: LatencyMetric = Field(
        default_factory=LatencyMetric, description="Latency: quantile SLO and comparison with stable."
    )
    prediction_drift: DriftMetric = Field(
        default_factory=DriftMetric,
        description="Candidate's prediction distribution against stable's on the same traffic.",
    )
    input_drift: DriftMetric = Field(
        default_factory=lambda: DriftMetric(max_psi=0.25),
        description="Live inputs against the model's reference profile (needs model.referenceProfile).",
    )
    quality: QualityMetric = Field(
        default_factory=QualityMetric,
        description="Candidate's quality against stable's from labels joined to predictions (off by default).",
    )
    split: SplitMetric = Field(
        default_factory=SplitMetric,
        description="The realised traffic split must match the configured weight and mirror share.",
    )
    custom: list[CustomMetric] | None = Field(
        default=None,
        max_length=10,
        description="Your own PromQL checks, each with its own name.",
        json_schema_extra=cel_rules(
            cel("self.all(c, self.exists_one(d, d.name == c.name))", "custom metric names must be unique")
        ),
    )

    @field_validator("custom")
    @classmethod
    def _unique_names(cls, custom: list[CustomMetric] | None) -> list[CustomMetric] | None:
        unique_names([c.name for c in custom or []], "custom metric")
        return custom


class Analysis(ApiModel):
    """How often to look and at what."""

    interval: Duration = Field(default="30s", description="Time between two looks at the evidence.")
    metrics: Metrics = Field(default_factory=Metrics, description="What is measured.")


class Margins(ApiModel):
    """Non-inferiority margins per compared metric (docs/analysis.md, "Margins")."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel(f"!has(self.errorRate) || ({fraction_margin_cel('self.errorRate')})", FRACTION_MARGIN)
        )
    }

    error_rate: Margin = Field(
        default_factory=lambda: RATE_MARGIN_DEFAULT.model_copy(),
        description="Margin for the error rate (default: 30% of stable's rate, at least 0.25 percentage points).",
    )
    latency: Margin = Field(
        default_factory=lambda: LATENCY_MARGIN_DEFAULT.model_copy(),
        description="Margin for the latency quantile (default: 10% of stable's, at least 1 ms).",
    )

    @model_validator(mode="after")
    def _rate_margin(self) -> Margins:
        fraction_margin(self.error_rate)
        return self


class Significance(ApiModel):
    """Statistical settings shared by all metrics."""

    alpha: float = Field(
        default=0.05,
        gt=0,
        le=0.2,
        description="Chance of a false rollback over the whole rollout, however many looks (split across metrics).",
    )
    method: Literal["mixtureSPRT"] = Field(
        default="mixtureSPRT",
        description="Sequential test that stays valid under repeated looks (see docs/analysis.md).",
    )
    margins: Margins = Field(default_factory=Margins, description="Non-inferiority margins.")


class InconclusiveRule(ApiModel):
    """What to do when a step runs out of time without evidence either way."""

    action: Literal["hold", "rollback"] = Field(
        default="rollback",
        description="hold keeps the current split and waits for a human; rollback reverts.",
    )


NotificationEvent = Literal[
    "RolloutStarted", "AwaitingApproval", "StepPassed", "Promoted", "RolledBack", "Inconclusive", "Held", "Degraded"
]
"""What a notification sink can ask to hear about; docs/notifications.md maps each to the Events it follows."""
NOTIFICATION_EVENTS: Final[tuple[NotificationEvent, ...]] = get_args(NotificationEvent)
SECRET_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"


class SecretKeyRef(ApiModel):
    """One key of a Secret in the namespace of each ModelDeployment the policy governs."""

    name: Name = Field(description="Name of the Secret (in the ModelDeployment's namespace).")
    key: Annotated[str, StringConstraints(pattern=SECRET_KEY_PATTERN, min_length=1, max_length=253)] = Field(
        description="The key whose value is the sink's URL (http:// or https://)."
    )


class NotificationSink(ApiModel):
    """Where to send notifications and which ones; the URL comes from a Secret, never from the spec."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel_rules(
            cel("self.events.all(e, self.events.exists_one(f, f == e))", "events must be unique", ".events")
        )
    }

    name: Name = Field(description="Name of the sink, shown in Events and metrics; unique in the policy.")
    kind: Literal["webhook", "slack"] = Field(
        description=(
            "webhook: the generic JSON body (docs/notifications.md); slack: a Slack incoming-webhook body "
            "({text, blocks})."
        )
    )
    secret_ref: SecretKeyRef = Field(
        description="The Secret key holding the URL, read from the ModelDeployment's namespace at each delivery."
    )
    events: list[NotificationEvent] = Field(
        min_length=1, max_length=8, description="The notifications to send (at least one)."
    )
    timeout: Duration = Field(default="5s", description="Time limit of one delivery attempt.")
    retries: int = Field(
        default=3, ge=0, le=10, description="Attempts after the first when the sink times out or answers 5xx/429."
    )

    @field_validator("events")
    @classmethod
    def _unique_events(cls, events: list[NotificationEvent]) -> list[NotificationEvent]:
        if len(set(events)) != len(events):
            raise ValueError("events must be unique")
        return events

    @model_validator(mode="after")
    def _timeout_sane(self) -> NotificationSink:
        if not 0.1 <= parse_duration(self.timeout) <= 60:
            raise ValueError("timeout must be between 100ms and 60s")
        return self


class Notifications(ApiModel):
    """Messages to people and systems when a rollout moves (docs/notifications.md). Set by the platform team
    in the policy; a ModelDeployment cannot change them (its overrides only make the rollout stricter)."""

    sinks: list[NotificationSink] = Field(
        min_length=1,
        max_length=10,
        description="The sinks, each with its own events.",
        json_schema_extra=cel_rules(
            cel("self.all(s, self.exists_one(t, t.name == s.name))", "notification sink names must be unique")
        ),
    )

    @field_validator("sinks")
    @classmethod
    def _unique_names(cls, sinks: list[NotificationSink]) -> list[NotificationSink]:
        unique_names([s.name for s in sinks], "notification sink")
        return sinks


HookType = Literal["confirmRollout", "preRollout", "confirmPromotion"]
"""When a hook is asked (docs/notifications.md, "Approval hooks"): before any traffic (confirmRollout, then
preRollout) or before the final promotion (confirmPromotion)."""
HOOK_TYPES: Final[tuple[HookType, ...]] = get_args(HookType)


class Hook(ApiModel):
    """An approval hook: the operator POSTs the rollout's state to a URL and waits for HTTP 200 (approve).

    Any other status is a refusal: a refused confirm hook keeps the rollout waiting (asked again), a refused
    preRollout hook rolls the candidate back. No answer (timeout, unreachable, Secret missing) is asked again
    until maxWait, then the policy's onInconclusive applies. The URL comes from a Secret, never the spec.
    """

    name: Name = Field(description="Name of the hook, shown in status, Events and metrics; unique in the policy.")
    type: HookType = Field(
        description=(
            "confirmRollout: gates the first step (asked once the candidate is ready, before any traffic); "
            "preRollout: an acceptance check after confirmRollout, before any traffic, whose refusal rolls back; "
            "confirmPromotion: gates the promotion after the last step passed."
        )
    )
    secret_ref: SecretKeyRef = Field(
        description="The Secret key holding the hook's URL, read from the ModelDeployment's namespace at each call."
    )
    timeout: Duration = Field(default="10s", description="Time limit of one call (100ms to 60s).")
    max_wait: Duration = Field(
        default="1h",
        description=(
            "How long the hook may keep the rollout waiting without approving (a confirm hook's refusals "
            "included) before the policy's onInconclusive applies (10s to 7d)."
        ),
    )

    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)

    @model_validator(mode="after")
    def _durations_sane(self) -> Hook:
        if not 0.1 <= parse_duration(self.timeout) <= 60:
            raise ValueError("timeout must be between 100ms and 60s")
        if not 10 <= parse_duration(self.max_wait) <= 7 * 86400:
            raise ValueError("maxWait must be between 10s and 7d")
        return self


class RolloutPolicySpec(ApiModel):
    """A rollout policy: steps, evidence, statistics and what to do when things go wrong."""

    selector: PolicySelector | None = Field(
        default=None, description="ModelDeployments this policy applies to when they name no policy."
    )
    priority: int = Field(
        default=0, ge=0, le=1_000_000, description="Among matching policies, the highest priority wins."
    )
    strategy: Strategy = Field(
        default_factory=lambda: default_strategy(), description="The steps a new revision walks through."
    )
    analysis: Analysis = Field(default_factory=Analysis, description="How often to look, and at what.")
    significance: Significance = Field(default_factory=Significance, description="Statistical settings.")
    on_failure: Literal["rollback", "pause"] = Field(
        default="rollback", description="What a rollback verdict does: revert at once, or pause for a human."
    )
    on_inconclusive: InconclusiveRule = Field(
        default_factory=InconclusiveRule, description="What happens when a step's maxDuration passes."
    )
    progress_deadline: Duration = Field(
        default="10m", description="How long a candidate may take to become ready before it is rolled back."
    )
    notifications: Notifications | None = Field(
        default=None,
        description="Webhook and Slack messages when rollouts start, pass steps, promote, roll back or hold.",
    )
    hooks: list[Hook] | None = Field(
        default=None,
        max_length=10,
        description="Approval hooks: URLs that must answer HTTP 200 before the first step or the promotion.",
        json_schema_extra=cel_rules(
            cel("self.all(h, self.exists_one(g, g.name == h.name))", "hook names must be unique")
        ),
    )

    @field_validator("hooks")
    @classmethod
    def _unique_hooks(cls, hooks: list[Hook] | None) -> list[Hook] | None:
        unique_names([h.name for h in hooks or []], "hook")  # they key the approvals in status
        return hooks

    def hooks_of(self, kind: HookType) -> list[Hook]:
        """The hooks asked at one gate, in the policy's order."""
        return [h for h in self.hooks or [] if h.type == kind]

    @model_validator(mode="after")
    def _durations_sane(self) -> RolloutPolicySpec:
        if parse_duration(self.analysis.interval) < 1:
            raise ValueError("analysis.interval must be at least 1s")
        return self


def default_strategy() -> Strategy:
    """The built-in safe default: shadow, then 5 / 25 / 50 percent canaries.

    The canaries may run an hour: with error margins relative to stable's rate, a 5% canary of a service at
    100 requests/s and 1% errors needs about half an hour to show a candidate like stable non-inferior
    (`mlrollout plan --rps 100`; docs/analysis.md, "Time to decision"), so 30 minutes would end most such
    steps by the inconclusive rule.
    """
    return Strategy(
        steps=[
            Step(shadow=ShadowStep(mirror_percent=100, min_requests=200)),
            Step(canary=CanaryStep(weight=5, min_requests=200, max_duration="1h")),
            Step(canary=CanaryStep(weight=25, min_requests=500, max_duration="1h")),
            Step(canary=CanaryStep(weight=50, min_requests=500, max_duration="1h")),
        ]
    )


class RolloutPolicy(ApiModel):
    """RolloutPolicy (cluster-scoped, short name rp): a platform-wide rollout policy."""

    api_version: Literal["mlrollout.io/v1alpha1"] = Field(
        default="mlrollout.io/v1alpha1", description="mlrollout.io/v1alpha1"
    )
    kind: Literal["RolloutPolicy"] = Field(default="RolloutPolicy", description="RolloutPolicy")
    metadata: dict[str, object] = Field(default_factory=dict, description="Standard object metadata.")
    spec: RolloutPolicySpec = Field(default_factory=RolloutPolicySpec, description="The policy.")
    status: PolicyStatus | None = Field(default=None, description="Written by the operator.")
