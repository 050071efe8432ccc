"""The offline evaluation's wire format: what the operator asks the evaluation Job, and what the Job answers.

The operator renders an :class:`EvaluationRequest` (a RolloutPolicy's ``evaluate`` step plus the two
revisions' models) into the Job's environment as JSON (:attr:`EvaluateEnv.REQUEST`); ``mlrollout-evaluate``
(:mod:`mlrollout_serving.evaluation`) reads it with :meth:`EvaluationRequest.from_json`, scores both models on
the holdout and writes an :class:`EvaluationReport` to its termination message
(:meth:`EvaluationReport.to_message`, at most :data:`MESSAGE_LIMIT` bytes, the kubelet's limit); the operator
reads it back from the pod's status with :func:`parse_report`. ``mlrollout evaluate --json`` prints the same
report.

Why the termination message (docs/evaluation.md): the Job needs no Kubernetes identity
at all (no token, no Role), the operator already lists pods, and the message outlives the container for as
long as the pod exists; the price is its size, so the report is compact by construction and shrinks its
least important parts (the passing slices) first.

Standard library only, no pydantic (docs/evaluation.md, "Throughput"): the Job is a short process whose
start-up counts against its rows per second, and importing pydantic and building these models cost it about
0.15 s, half of a plain onnxruntime loop's whole run on 100k rows. So the types are frozen dataclasses that
check their own rules when built (:class:`EvaluationFormatError`, naming the field), and ``from_wire`` reads
them from JSON data with the same checks: one definition, which the operator uses too (an import-linter
contract and a unit test keep pydantic off the Job's import path).

Field names are camelCase on the wire and snake_case in Python, like every other contract.
"""

# No ``from __future__ import annotations`` here: the fields' types are read at run time (``_hints``), and
# string annotations made ``typing.get_type_hints`` compile each one, about 1 ms of every Job's run.
import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Final, Literal, TypeVar, Union

from mlrollout_serving.contract.process import ServerEnv

__all__ = [
    "CLASSIFICATION_METRICS",
    "EVALUATE_COMMAND",
    "HIGHER_IS_BETTER",
    "MESSAGE_LIMIT",
    "REGRESSION_METRICS",
    "REPORT_KIND",
    "Baseline",
    "Check",
    "CheckKind",
    "DatasetRef",
    "EvaluateEnv",
    "EvaluateExit",
    "EvaluationFormatError",
    "EvaluationReport",
    "EvaluationRequest",
    "MarginSpec",
    "Metric",
    "ModelRef",
    "Problem",
    "Verdict",
    "default_baseline",
    "finite",
    "margin_allowed",
    "parse_report",
]

EVALUATE_COMMAND: Final = "mlrollout-evaluate"
REPORT_KIND: Final = "mlrollout.io/evaluation"
MESSAGE_LIMIT: Final = 4096
"""Bytes of a container's termination message the kubelet keeps (Kubernetes' limit per container)."""

Metric = Literal["accuracy", "balancedAccuracy", "logLoss", "rocAuc", "mae", "rmse"]
Baseline = Literal["majority", "mean", "none"]
Verdict = Literal["pass", "fail", "inconclusive"]
CheckKind = Literal["stable", "baseline", "slice"]
Problem = Literal["badInput", "error"]
"""Why a report has no comparison: the inputs are unusable (bad input), or the evaluation itself broke."""

HIGHER_IS_BETTER: Final[dict[str, bool]] = {
    "accuracy": True, "balancedAccuracy": True, "rocAuc": True, "logLoss": False, "mae": False, "rmse": False,
}  # fmt: skip
CLASSIFICATION_METRICS: Final = ("accuracy", "balancedAccuracy", "logLoss", "rocAuc")
REGRESSION_METRICS: Final = ("mae", "rmse")
SHA256: Final = re.compile(r"[a-f0-9]{64}")


def default_baseline(metric: str) -> Baseline:
    """The trivial model a metric's candidate must beat: the majority class, or the mean of the labels."""
    return "mean" if metric in REGRESSION_METRICS else "majority"


class EvaluateEnv(StrEnum):
    """Environment variables of ``mlrollout-evaluate`` that the operator sets."""

    REQUEST = "MLROLLOUT_EVALUATION_REQUEST"
    TERMINATION_LOG = "MLROLLOUT_TERMINATION_LOG"
    WORK_DIR = "MLROLLOUT_EVALUATION_DIR"
    LOG_LEVEL = "MLROLLOUT_LOG_LEVEL"
    # the model server's own variable (the store access of both pods sets it): one name, one meaning
    REGISTRY_URI = ServerEnv.REGISTRY_URI.value


class EvaluateExit(IntEnum):
    """Exit codes of ``mlrollout evaluate`` and ``mlrollout-evaluate`` (the operator reads the report, not these)."""

    PASS = 0
    FAIL = 1  # worse than the margin, losing to the baseline, or the holdout cannot tell (inconclusive)
    BAD_INPUT = 2  # a flag, the dataset or a model is unusable; the report's reason names it
    ERROR = 3  # the evaluation itself broke (a bug); the report's reason says where


class EvaluationFormatError(ValueError):
    """Data that is not a valid request or report: the message names the field (``dataset.label: ...``).
    :func:`parse_report` raises it too for a termination message that holds something else (a crash's log
    tail, or nothing)."""

    def __init__(self, message: str, *loc: str) -> None:
        self.message, self.loc = message, loc
        super().__init__(f"{'.'.join(loc)}: {message}" if loc else message)

    def within(self, *outer: str) -> "EvaluationFormatError":
        """The same error, located inside ``outer`` (a nested object's field, a list's item)."""
        return EvaluationFormatError(self.message, *outer, *self.loc)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


_WireT = TypeVar("_WireT", bound="_Wire")


class _Wire:
    """What every wire type here shares: camelCase JSON out (:meth:`to_wire`), JSON data in with every rule
    checked (:meth:`from_wire`), and the rules checked whenever one is built (``__post_init__``: the
    annotated literals, then the class' :meth:`_check`)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            allowed = _literals(_hints(type(self))[f.name])
            value = getattr(self, f.name)
            if allowed and value is not None and value not in allowed:
                raise EvaluationFormatError(f"expected one of {', '.join(map(str, allowed))}, got {value!r}", f.name)
        self._check()

    def _check(self) -> None:
        """The class' own rules (ranges, lengths, fields that go together); EvaluationFormatError names the field."""

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form (unset optional fields left out)."""
        return {
            _camel(f.name): _to_wire(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_wire(cls: type[_WireT], data: object, *loc: str) -> _WireT:
        """The object in JSON data (camelCase names; snake_case ones are accepted too); EvaluationFormatError
        names the first field that is missing, unknown, of the wrong type or breaks a rule."""
        if not isinstance(data, Mapping):
            raise EvaluationFormatError(f"expected an object, got {_describe(data)}", *loc)
        fields = {_camel(f.name): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        by_name = {f.name: f for f in fields.values()}
        unknown = [str(key) for key in data if key not in fields and key not in by_name]
        if unknown:
            raise EvaluationFormatError("unknown field", *loc, unknown[0])
        missing = [
            camel for camel, f in fields.items()
            if camel not in data and f.name not in data
            and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]  # fmt: skip
        if missing:
            more = f" (so are {', '.join(missing[1:])})" if missing[1:] else ""
            raise EvaluationFormatError(f"required{more}", *loc, missing[0])
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for key, value in data.items():
            f = fields.get(key) or by_name[key]
            values[f.name] = _from_wire(hints[f.name], value, (*loc, _camel(f.name)))
        try:
            return cls(**values)
        except EvaluationFormatError as e:
            raise e.within(*loc) from None

    @classmethod
    def from_json(cls: type[_WireT], text: str | bytes) -> _WireT:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise EvaluationFormatError(f"not JSON: {e}") from None
        return cls.from_wire(data)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The class' field types, resolved once (the annotations are strings: ``from __future__``)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _literals(tp: Any) -> tuple[Any, ...]:
    """The values a ``Literal`` (or an optional one) allows; () for any other type."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return tuple(v for arg in typing.get_args(tp) for v in _literals(arg))
    return ()


def _to_wire(value: Any) -> Any:
    if isinstance(value, _Wire):
        return value.to_wire()
    if isinstance(value, tuple):
        return [_to_wire(v) for v in value]
    return value


def _from_wire(tp: Any, value: object, loc: tuple[str, ...]) -> Any:
    """``value`` (parsed JSON) as type ``tp`` of the fields here; EvaluationFormatError at ``loc`` otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # the unions here are only ever optional ones
        return _from_wire(inner, value, loc)
    if origin is Literal:
        if isinstance(value, str | int) and not isinstance(value, bool) and value in args:
            return value
        raise EvaluationFormatError(f"expected one of {', '.join(map(str, args))}, got {value!r}", *loc)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise EvaluationFormatError(f"expected a list, got {_describe(value)}", *loc)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_wire(args[0], v, (*loc, str(i))) for i, v in enumerate(value))
        if len(value) != len(args):
            raise EvaluationFormatError(f"expected {len(args)} items, got {len(value)}", *loc)
        return tuple(_from_wire(a, v, (*loc, str(i))) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if isinstance(tp, type) and issubclass(tp, _Wire):
        return tp.from_wire(value, *loc)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise EvaluationFormatError(f"expected a finite number, got {value!r}", *loc)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise EvaluationFormatError(f"expected an integer, got {value!r}", *loc)
    if tp is str:
        if isinstance(value, str):
            return value
        raise EvaluationFormatError(f"expected a string, got {_describe(value)}", *loc)
    raise TypeError(f"no wire form for {tp!r}")  # a field type this module does not read: a bug here


def _within(value: float | None, name: str, ge: float | None = None, gt: float | None = None,
            le: float | None = None) -> None:  # fmt: skip
    """``value`` (when set) is >= ge, > gt and <= le."""
    if value is None:
        return
    if ge is not None and value < ge:
        raise EvaluationFormatError(f"must be at least {ge}, got {value}", name)
    if gt is not None and value <= gt:
        raise EvaluationFormatError(f"must be greater than {gt}, got {value}", name)
    if le is not None and value > le:
        raise EvaluationFormatError(f"must be at most {le}, got {value}", name)


def _length(value: str | None, name: str, most: int, least: int = 0) -> None:
    if value is not None and not least <= len(value) <= most:
        raise EvaluationFormatError(f"must be {least} to {most} characters long, got {len(value)}", name)


def _digest(value: str | None, name: str) -> None:
    if value is not None and not SHA256.fullmatch(value):
        raise EvaluationFormatError("must be 64 lowercase hex digits (a sha256)", name)


def margin_allowed(level: float, relative: float | None, floor: float | None, absolute: float | None) -> float:
    """How much worse than stable's ``level`` still counts as no worse: ``max(relative * level, floor)``, or the
    absolute margin. The one definition of the rule; the RolloutPolicy's ``Margin`` uses it too."""
    if absolute is not None:
        return absolute
    return max((relative or 0.0) * max(level, 0.0), floor or 0.0)


@dataclass(frozen=True, kw_only=True)
class MarginSpec(_Wire):
    """The non-inferiority margin (the RolloutPolicy's ``Margin``, as numbers)."""

    relative: float | None = None
    floor: float | None = None
    absolute: float | None = None

    def _check(self) -> None:
        _within(self.relative, "relative", ge=0, le=10)
        _within(self.floor, "floor", ge=0)
        _within(self.absolute, "absolute", ge=0)
        if (self.relative is None) == (self.absolute is None):
            raise EvaluationFormatError("a margin sets exactly one of relative, absolute")
        if self.floor is not None and self.relative is None:
            raise EvaluationFormatError("floor goes with a relative margin")

    def allowed(self, level: float) -> float:
        return margin_allowed(level, self.relative, self.floor, self.absolute)


@dataclass(frozen=True, kw_only=True)
class ModelRef(_Wire):
    """A model file and the digest it must have."""

    uri: str
    sha256: str | None = None

    def _check(self) -> None:
        _length(self.uri, "uri", 2048, least=1)
        _digest(self.sha256, "sha256")


@dataclass(frozen=True, kw_only=True)
class DatasetRef(_Wire):
    """The labelled holdout: where, its digest, the label column and the format."""

    uri: str
    sha256: str | None = None
    label: str
    format: Literal["csv", "npz"] = "csv"

    def _check(self) -> None:
        _length(self.uri, "uri", 2048, least=1)
        _digest(self.sha256, "sha256")
        _length(self.label, "label", 256, least=1)


MAX_SLICES: Final = 8


@dataclass(frozen=True, kw_only=True)
class EvaluationRequest(_Wire):
    """What to evaluate and how strictly: the operator's ask, and what ``mlrollout evaluate``'s flags build."""

    stable: ModelRef
    candidate: ModelRef
    dataset: DatasetRef
    metric: Metric = "accuracy"
    margin: MarginSpec = field(default_factory=lambda: MarginSpec(relative=0.01))
    baseline: Baseline | None = None  # None: the metric's default_baseline
    alpha: float = 0.05
    slices: tuple[str, ...] = ()
    resamples: int = 2000
    seed: int = 0

    def _check(self) -> None:
        _within(self.alpha, "alpha", gt=0, le=0.5)
        if len(self.slices) > MAX_SLICES:
            raise EvaluationFormatError(f"at most {MAX_SLICES} slices, got {len(self.slices)}", "slices")
        for i, column in enumerate(self.slices):
            _length(column, f"slices.{i}", 256, least=1)
        _within(self.resamples, "resamples", ge=100, le=100_000)
        _within(self.seed, "seed", ge=0)
        if self.baseline == "mean" and self.metric not in REGRESSION_METRICS:
            raise EvaluationFormatError(f"baseline mean is for regression metrics (mae, rmse), not {self.metric}")
        if self.baseline == "majority" and self.metric in REGRESSION_METRICS:
            raise EvaluationFormatError(f"baseline majority is for classification metrics, not {self.metric}")
        if self.dataset.label in self.slices:
            raise EvaluationFormatError(f"the label column {self.dataset.label!r} cannot also be a slice")

    @property
    def effective_baseline(self) -> Baseline:
        return self.baseline if self.baseline is not None else default_baseline(self.metric)


REASON_MAX: Final = 2048  # a report's reason, at most
CHECK_NAME_MAX: Final = 300  # a check's name, at most (a slice's: column=value, a long value cut)


@dataclass(frozen=True, kw_only=True)
class Check(_Wire):
    """One comparison of the candidate: with stable (overall or on a slice) or with the trivial baseline.

    ``effect`` is candidate minus reference in the metric's unit with its ``interval`` at level 1 - ``alpha``
    (slices: a Bonferroni share of the policy's alpha); ``margin`` is how much worse than the reference the
    candidate may be on this comparison (absent for the baseline, which must be beaten)."""

    kind: CheckKind
    name: str
    decision: Verdict
    rows: int
    reference: float | None = None
    candidate: float | None = None
    effect: float | None = None
    interval: tuple[float, float] | None = None
    alpha: float | None = None
    test: str | None = None
    p_value: float | None = None
    margin: float | None = None
    reason: str | None = None

    def _check(self) -> None:
        _length(self.name, "name", CHECK_NAME_MAX)
        _within(self.rows, "rows", ge=0)
        _length(self.test, "test", 300)
        _length(self.reason, "reason", 1024)


@dataclass(frozen=True, kw_only=True)
class EvaluationReport(_Wire):
    """The Job's answer. ``verdict`` decides the step: ``pass`` (the next step starts), ``fail`` (rolled back
    before any traffic), ``inconclusive`` (the policy's onInconclusive). ``problem`` says why a report has no
    comparison (bad input or an error), and ``reason`` names it. ``omitted``: slice checks left out of this
    report to keep it short."""

    kind: Literal["mlrollout.io/evaluation"] = REPORT_KIND
    version: Literal[1] = 1
    verdict: Verdict
    reason: str
    problem: Problem | None = None
    metric: Metric | None = None
    rows: int = 0
    dataset_sha256: str | None = None
    stable_sha256: str | None = None
    candidate_sha256: str | None = None
    checks: tuple[Check, ...] = ()
    omitted: int = 0
    seconds: float | None = None

    def _check(self) -> None:
        _length(self.reason, "reason", REASON_MAX)
        _within(self.rows, "rows", ge=0)
        _within(self.omitted, "omitted", ge=0)

    @property
    def exit_code(self) -> EvaluateExit:
        if self.problem == "badInput":
            return EvaluateExit.BAD_INPUT
        if self.problem == "error":
            return EvaluateExit.ERROR
        return EvaluateExit.PASS if self.verdict == "pass" else EvaluateExit.FAIL

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"), allow_nan=False)

    def to_message(self, limit: int = MESSAGE_LIMIT) -> str:
        """The report as compact JSON within ``limit`` bytes: what does not fit goes first from the passing
        slices (their tests and reasons, then the slices themselves, counted in ``omitted``), then from the
        failing ones (which the verdict's reason already names), then the reasons are shortened."""
        report = self
        for shrink in _shrinks():
            text = report.to_json()
            if len(text.encode()) <= limit:
                return text
            report = shrink(report, limit)
        return report.to_json()


def _without_details(report: EvaluationReport, passing: bool) -> EvaluationReport:
    checks = tuple(
        dataclasses.replace(c, test=None, reason=None) if c.kind == "slice" and (c.decision != "fail") == passing else c
        for c in report.checks
    )
    return dataclasses.replace(report, checks=checks)


def _drop_slices(report: EvaluationReport, passing: bool, limit: int) -> EvaluationReport:
    """Drop slice checks (the passing or the failing ones), last first, until the report fits."""
    checks = list(report.checks)
    omitted = report.omitted
    while len(dataclasses.replace(report, checks=tuple(checks), omitted=omitted).to_json().encode()) > limit:
        drop = next(
            (i for i in range(len(checks) - 1, -1, -1)
             if checks[i].kind == "slice" and (checks[i].decision != "fail") == passing),
            None,
        )  # fmt: skip
        if drop is None:
            break
        del checks[drop]
        omitted += 1
    return dataclasses.replace(report, checks=tuple(checks), omitted=omitted)


def _shorten_reasons(report: EvaluationReport, limit: int) -> EvaluationReport:
    checks = tuple(dataclasses.replace(c, reason=(c.reason or "")[:120] or None) for c in report.checks)
    return dataclasses.replace(report, checks=checks, reason=report.reason[:400])


def _shrinks() -> tuple[Callable[[EvaluationReport, int], EvaluationReport], ...]:
    return (
        lambda r, limit: _without_details(r, passing=True),
        lambda r, limit: _drop_slices(r, passing=True, limit=limit),
        lambda r, limit: _without_details(r, passing=False),
        lambda r, limit: _drop_slices(r, passing=False, limit=limit),
        _shorten_reasons,
    )


def parse_report(text: str) -> EvaluationReport:
    """The report in a termination message; EvaluationFormatError when it holds something else."""
    try:
        data = json.loads(text)
    except ValueError:
        raise EvaluationFormatError("not an evaluation report (not JSON)") from None
    if not isinstance(data, dict) or data.get("kind") != REPORT_KIND:
        raise EvaluationFormatError(f"not an evaluation report (kind is not {REPORT_KIND})")
    try:
        return EvaluationReport.from_wire(data)
    except EvaluationFormatError as exc:
        raise EvaluationFormatError(f"invalid evaluation report: {exc}") from None


def finite(value: float) -> float:
    """Six significant digits (the report stays short) of a finite number (JSON has no NaN)."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return float(f"{value:.6g}")
