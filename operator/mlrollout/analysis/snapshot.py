"""The snapshot: cumulative counts per track, parsed and checked into typed values.

The operator builds one from Prometheus (``collect.py``); ``mlrollout analyze`` and recorded files read one
from JSON with :func:`parse_snapshot`, strict about types (a malformed snapshot is a bug worth naming) and
lenient about what is optional. The JSON format is in docs/analysis.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, get_args

from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.histogram import Histogram, parse_buckets
from mlrollout.api.analysis import QualityDesign
from mlrollout_serving.contract.profile import Profile, ProfileError
from mlrollout_serving.contract.profile import from_dict as profile_from_dict

__all__ = [
    "CustomValue",
    "Labels",
    "Pairs",
    "RoutedCounts",
    "Snapshot",
    "SnapshotError",
    "Split",
    "TrackCounts",
    "parse_snapshot",
]

TRACKS = ("stable", "candidate")


class SnapshotError(ValueError):
    """The snapshot is not in the documented format; the message says where."""


@dataclass(frozen=True)
class Labels:
    """One track's labelled rows: how many, how many it got wrong (classifiers), and its absolute errors'
    sum and sum of squares (regressors), raw and clipped at the policy's error bound (None: not exported).

    Rows the track had no prediction for (NaN, no class, a request it failed that a fallback answered) are
    among ``labelled``: wrong, and in the clipped sums as the bound; the raw sums hold finite errors only,
    so only the clipped ones go with ``labelled`` (docs/analysis.md, "What is counted")."""

    labelled: int = 0
    incorrect: int = 0
    abs_error_sum: float = 0.0
    abs_error_sumsq: float = 0.0
    clipped_sum: float | None = None
    clipped_sumsq: float | None = None


@dataclass(frozen=True)
class Pairs:
    """Labelled requests that both models were asked (shadow steps).

    Classifiers: rows by which model was right. Regressors: ``stable_only`` / ``candidate_only`` count the
    rows where that model was strictly closer (the others are ``both_right``, ties, or ``both_wrong``, both
    without a prediction); the absolute errors' sums per model and the sum of squares of ``|error
    candidate| - |error stable|`` over the rows both answered; the same with each absolute error clipped at
    the policy's error bound (None: not exported) over every row, a side without a prediction at the bound.
    """

    both_right: int = 0
    both_wrong: int = 0
    stable_only: int = 0
    candidate_only: int = 0
    stable_error_sum: float = 0.0
    candidate_error_sum: float = 0.0
    diff_sumsq: float = 0.0
    stable_clipped_sum: float | None = None
    candidate_clipped_sum: float | None = None
    clipped_diff_sumsq: float | None = None

    @property
    def rows(self) -> int:
        return self.both_right + self.both_wrong + self.stable_only + self.candidate_only


@dataclass(frozen=True)
class TrackCounts:
    """One track's cumulative evidence since the candidate started receiving traffic."""

    requests: int
    errors: int
    latency: Histogram | None
    predictions: dict[str, int] | None
    features: dict[str, list[int]] | None
    labels: Labels | None = None  # labelled rows scored against what this track served (feedback)


@dataclass(frozen=True)
class CustomValue:
    """A custom query's value per track, or why it has none."""

    stable: float | None
    candidate: float | None
    error: str | None = None


@dataclass(frozen=True)
class RoutedCounts:
    """How the router actually split live requests, counted where it decides (the gateway), in one process
    so both tracks' counts come from the same scrape: requests routed to each track, and in mirroring steps
    the copies offered to the candidate out of the requests eligible for a copy."""

    stable: int
    candidate: int
    mirrored: int = 0
    mirror_eligible: int = 0


@dataclass(frozen=True)
class Split:
    """The traffic split the step configured (shares of live requests, 0..1) and, when counted, how it was
    realised; the sample-ratio mismatch check holds the second to the first (split.py)."""

    stable: float
    candidate: float
    mirror: float = 0.0
    sticky: bool = False  # sticky A/B: keys are assigned, not requests, so request counts need not follow
    observed: RoutedCounts | None = None
    uncounted: str | None = None  # why the realised split cannot be counted (another router routes)

    @classmethod
    def from_percent(cls, stable: int, candidate: int, mirror: int, sticky: bool = False) -> Split:
        """The split as the route table states it (status.traffic's integer percents)."""
        return cls(stable / 100.0, candidate / 100.0, mirror / 100.0, sticky)


NO_COUNTS: Final = TrackCounts(0, 0, None, None, None)


@dataclass(frozen=True)
class Snapshot:
    """Everything one look judges: both tracks' counts, the reference profile, custom values, and where the
    look sits in the rollout (``evidence``, set by the operator from the step's status)."""

    stable: TrackCounts
    candidate: TrackCounts
    elapsed_seconds: float | None = None
    reference: Profile | None = None
    custom: dict[str, CustomValue] = field(default_factory=dict)
    error: str | None = None
    warnings: tuple[str, ...] = ()
    evidence: StepEvidence = field(default_factory=StepEvidence)
    pairs: Pairs | None = None  # labelled requests both models answered (shadow steps)
    split: Split | None = None
    quality_design: QualityDesign | None = None  # the step's, set by the operator; None: see `design`

    @property
    def design(self) -> QualityDesign:
        """The quality test this look runs: the step's (``quality_design``), or for a snapshot that does not
        say (written by hand, or recorded before the field), paired when its configured split mirrors or it
        carries pairs at all, zero or not."""
        if self.quality_design is not None:
            return self.quality_design
        mirrors = self.split is not None and self.split.mirror > 0
        return "paired" if mirrors or self.pairs is not None else "unpaired"

    @classmethod
    def failed(cls, error: str, elapsed_seconds: float | None = None, warnings: Sequence[str] = ()) -> Snapshot:
        """No evidence, and why (Prometheus down, a query refused): judged inconclusive."""
        return cls(NO_COUNTS, NO_COUNTS, elapsed_seconds=elapsed_seconds, error=error, warnings=tuple(warnings))


def forced_monotone(track: str) -> str:
    """The warning for a latency histogram whose counts had to be forced monotone."""
    return f"{track}: latency bucket counts were not monotone and were forced monotone"


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SnapshotError(f"{where} must be a non-negative number, got {value!r}")
    return round(value)


def _counts_map(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise SnapshotError(f"{where} must be a map of label to count")
    return {str(k): _count(v, f"{where}[{k!r}]") for k, v in value.items()}


def _track(raw: Any, name: str, warnings: list[str]) -> TrackCounts:
    if not isinstance(raw, Mapping):
        raise SnapshotError(f"{name} must be an object with requests, errors and latency_buckets")
    requests = _count(raw.get("requests", 0), f"{name}.requests")
    errors = _count(raw.get("errors", 0), f"{name}.errors")
    if errors > requests:
        raise SnapshotError(f"{name}.errors ({errors}) exceeds {name}.requests ({requests})")
    latency = None
    if raw.get("latency_buckets") is not None:
        buckets = _counts_map(raw["latency_buckets"], f"{name}.latency_buckets")
        try:
            latency, forced = parse_buckets(buckets, f"{name}.latency_buckets")
        except ValueError as exc:
            raise SnapshotError(str(exc)) from exc
        if forced:
            warnings.append(forced_monotone(name))
    predictions = None
    if raw.get("predictions") is not None:
        predictions = _counts_map(raw["predictions"], f"{name}.predictions")
    features = None
    if raw.get("features") is not None:
        if not isinstance(raw["features"], Mapping):
            raise SnapshotError(f"{name}.features must be a map of feature to a list of bin counts")
        features = {}
        for feat, bins in raw["features"].items():
            if not isinstance(bins, list):
                raise SnapshotError(f"{name}.features[{feat!r}] must be a list of bin counts")
            features[str(feat)] = [_count(b, f"{name}.features[{feat!r}]") for b in bins]
    labels = _labels(raw["labels"], f"{name}.labels") if raw.get("labels") is not None else None
    return TrackCounts(requests, errors, latency, predictions, features, labels)


def _amount(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SnapshotError(f"{where} must be a non-negative number, got {value!r}")
    return float(value)


def _optional_amount(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    return None if raw.get(key) is None else _amount(raw[key], f"{where}.{key}")


def _labels(raw: Any, where: str) -> Labels:
    """``{"labelled", "incorrect", "abs_error_sum", "abs_error_sumsq"[, "clipped_sum", "clipped_sumsq"]}``:
    labelled rows of one track (the clipped sums at the policy's error bound)."""
    if not isinstance(raw, Mapping):
        raise SnapshotError(f"{where} must be an object with labelled and incorrect (or abs_error_sum)")
    labels = Labels(
        labelled=_count(raw.get("labelled", 0), f"{where}.labelled"),
        incorrect=_count(raw.get("incorrect", 0), f"{where}.incorrect"),
        abs_error_sum=_amount(raw.get("abs_error_sum", 0), f"{where}.abs_error_sum"),
        abs_error_sumsq=_amount(raw.get("abs_error_sumsq", 0), f"{where}.abs_error_sumsq"),
        clipped_sum=_optional_amount(raw, "clipped_sum", where),
        clipped_sumsq=_optional_amount(raw, "clipped_sumsq", where),
    )
    if labels.incorrect > labels.labelled:
        raise SnapshotError(f"{where}.incorrect ({labels.incorrect}) exceeds {where}.labelled ({labels.labelled})")
    return labels


def _pairs(raw: Any) -> Pairs | None:
    """``{"both_right", "both_wrong", "stable_only", "candidate_only"[, "stable_error_sum", ...]}``."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SnapshotError("pairs must be an object of pair counts")

    def count(key: str) -> int:
        return _count(raw.get(key, 0), f"pairs.{key}")

    def amount(key: str) -> float:
        return _amount(raw.get(key, 0), f"pairs.{key}")

    return Pairs(
        both_right=count("both_right"),
        both_wrong=count("both_wrong"),
        stable_only=count("stable_only"),
        candidate_only=count("candidate_only"),
        stable_error_sum=amount("stable_error_sum"),
        candidate_error_sum=amount("candidate_error_sum"),
        diff_sumsq=amount("diff_sumsq"),
        stable_clipped_sum=_optional_amount(raw, "stable_clipped_sum", "pairs"),
        candidate_clipped_sum=_optional_amount(raw, "candidate_clipped_sum", "pairs"),
        clipped_diff_sumsq=_optional_amount(raw, "clipped_diff_sumsq", "pairs"),
    )


def _custom(raw: Any) -> dict[str, CustomValue]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SnapshotError("custom must be a map of metric name to {stable, candidate}")
    out = {}
    for name, value in raw.items():
        if not isinstance(value, Mapping):
            raise SnapshotError(f"custom[{name!r}] must be an object")

        def num(key: str, name: str = str(name), value: Mapping[str, Any] = value) -> float | None:
            v = value.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise SnapshotError(f"custom[{name!r}].{key} must be a number or null")
            return float(v) if math.isfinite(v) else None

        error = value.get("error")
        out[str(name)] = CustomValue(num("stable"), num("candidate"), str(error) if error else None)
    return out


def _evidence(raw: Any) -> StepEvidence:
    """``{"step": j, "steps": k, "carried": {test: A_j}}``: where the look sits in the rollout (carry.py)."""
    if raw is None:
        return StepEvidence()
    if not isinstance(raw, Mapping):
        raise SnapshotError("evidence must be an object with step, steps and carried")
    step, steps = raw.get("step", 0), raw.get("steps", 1)
    for key, value, least in (("step", step, 0), ("steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SnapshotError(f"evidence.{key} must be an integer >= {least}, got {value!r}")
    carried = raw.get("carried") or {}
    if not isinstance(carried, Mapping):
        raise SnapshotError("evidence.carried must be a map of test name to carried e-value")
    values: dict[str, float] = {}
    for test, value in carried.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or math.isnan(value):
            raise SnapshotError(f"evidence.carried[{test!r}] must be a non-negative number, got {value!r}")
        values[str(test)] = min(float(value), 1e300)
    return StepEvidence(step=step, steps=steps, carried=values)


def _share(raw: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise SnapshotError(f"split.configured.{key} must be a share between 0 and 1, got {value!r}")
    return float(value)


def _split(raw: Any) -> Split | None:
    """``{"configured": {stable, candidate, mirror, sticky}, "observed": {stable, candidate, mirrored,
    mirror_eligible}}``: the step's configured shares and, optionally, the routed counts."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("configured"), Mapping):
        raise SnapshotError("split must be an object with configured shares (and optionally observed counts)")
    conf = raw["configured"]
    stable, candidate = _share(conf, "stable"), _share(conf, "candidate")
    if abs(stable + candidate - 1.0) > 1e-6:
        raise SnapshotError(
            f"split.configured: stable {stable:g} + candidate {candidate:g} must add up to 1 (shares of live requests)"
        )
    sticky = conf.get("sticky", False)
    if not isinstance(sticky, bool):
        raise SnapshotError(f"split.configured.sticky must be true or false, got {sticky!r}")
    observed = None
    if raw.get("observed") is not None:
        obs = raw["observed"]
        if not isinstance(obs, Mapping):
            raise SnapshotError("split.observed must be an object of routed counts")
        counts = {k: _count(obs.get(k, 0), f"split.observed.{k}") for k in ("stable", "candidate", "mirrored",
                                                                             "mirror_eligible")}  # fmt: skip
        if counts["mirrored"] > counts["mirror_eligible"]:
            raise SnapshotError(
                f"split.observed.mirrored ({counts['mirrored']}) exceeds split.observed.mirror_eligible "
                f"({counts['mirror_eligible']})"
            )
        observed = RoutedCounts(**counts)
    return Split(stable, candidate, _share(conf, "mirror", 0.0), sticky, observed)


def _design(raw: Any) -> QualityDesign | None:
    if raw is None:
        return None
    if raw not in get_args(QualityDesign):
        raise SnapshotError(f"quality_design must be paired or unpaired, got {raw!r}")
    design: QualityDesign = raw
    return design


def parse_snapshot(raw: Any) -> Snapshot:
    """Check and convert a snapshot dict; raises :class:`SnapshotError` naming the first problem."""
    if not isinstance(raw, Mapping):
        raise SnapshotError("a snapshot must be a JSON object")
    error = raw.get("error")
    warnings: list[str] = [str(w) for w in raw.get("warnings", []) or []]
    if error:
        return Snapshot.failed(str(error), warnings=warnings)
    for track in TRACKS:
        if track not in raw:
            raise SnapshotError(f"missing track {track!r}")
    stable = _track(raw["stable"], "stable", warnings)
    candidate = _track(raw["candidate"], "candidate", warnings)
    elapsed = raw.get("elapsed_seconds")
    if elapsed is not None and (isinstance(elapsed, bool) or not isinstance(elapsed, int | float)):
        raise SnapshotError("elapsed_seconds must be a number")
    reference = None
    if raw.get("reference") is not None:
        try:
            reference = profile_from_dict(raw["reference"])
        except ProfileError as exc:
            raise SnapshotError(f"reference is not a reference profile (docs/metrics.md): {exc}") from exc
    return Snapshot(
        stable,
        candidate,
        elapsed_seconds=float(elapsed) if elapsed is not None else None,
        reference=reference,
        custom=_custom(raw.get("custom")),
        warnings=tuple(warnings),
        evidence=_evidence(raw.get("evidence")),
        pairs=_pairs(raw.get("pairs")),
        split=_split(raw.get("split")),
        quality_design=_design(raw.get("quality_design")),
    )
