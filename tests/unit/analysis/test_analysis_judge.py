"""The combination rule and the verdict's shape."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from pydantic import ValidationError
from tests.unit.analysis.snapshots import PROMOTABLE, healthy, judged, track

from mlrollout.analysis import MIN_SAMPLES, SnapshotError, parse_snapshot
from mlrollout.analysis.judge import HARM_WEIGHT, split_alpha
from mlrollout.analysis.sequential import homogeneity_log_e
from mlrollout.api.analysis import Judgement, Samples
from mlrollout.api.modeldeployment import AnalysisStatus
from mlrollout.api.rolloutpolicy import RolloutPolicySpec

REFERENCE = {"version": 1, "features": [{"name": "f0", "edges": [0.0], "proportions": [0.5, 0.5]}]}


def names(result: Judgement) -> dict[str, str]:
    return {m.name: m.decision for m in result.metrics}


def test_healthy_candidate_is_promoted_with_every_default_check() -> None:
    result = judged(healthy(**PROMOTABLE))
    assert result.verdict == "promote", result.reason
    assert names(result) == {
        "errorRate.harm": "pass",
        "errorRate.nonInferiority": "pass",
        "errorRate.slo": "pass",
        "latency.harm": "pass",
        "latency.nonInferiority": "pass",
        "predictionDrift": "pass",
    }
    assert result.skipped == ["inputDrift: no reference profile", "split: no routed counts in the snapshot"]
    assert result.samples == Samples(stable=216_000, candidate=24_000)


def test_a_judgement_goes_into_status_as_it_is() -> None:
    result = judged(healthy())
    status = AnalysisStatus(time="2026-01-01T00:00:00Z", verdict=result.verdict, reason=result.reason,
                            metrics=result.metrics)  # fmt: skip
    assert status.metrics == result.metrics  # the same values, not a copy in another shape
    stored = AnalysisStatus.model_validate(status.to_dict())  # and they survive the round trip through JSON
    assert stored.metrics == result.metrics


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"errors": 180}, "errorRate.harm"),
        ({"latency": 0.04}, "latency.harm"),
        ({"classes": (0.05, 0.15, 0.8)}, "predictionDrift"),
    ],
)
def test_any_failing_harm_test_rolls_back(change: dict[str, Any], failing: str) -> None:
    snap = healthy()
    if "errors" in change:
        snap["candidate"]["errors"] = change["errors"]
    if "latency" in change:
        snap["candidate"] = track(6_000, median=change["latency"])
    if "classes" in change:
        snap["candidate"] = track(6_000, classes=change["classes"])
    result = judged(snap)
    assert result.verdict == "rollback"
    assert names(result)[failing] == "fail"
    assert failing in result.reason


def test_rollback_is_allowed_on_few_samples_but_promotion_is_not() -> None:
    snap = {"stable": track(5000), "candidate": {"requests": 40, "errors": 40}}
    assert judged(snap).verdict == "rollback"
    small = {"stable": track(50), "candidate": track(50)}
    result = judged(small)
    assert result.verdict == "inconclusive"
    assert f"need {MIN_SAMPLES}" in result.reason


def test_continue_while_non_inferiority_is_not_yet_shown() -> None:
    result = judged(healthy(stable=1_800, candidate=200))
    assert result.verdict == "continue"
    assert "nonInferiority" in result.reason


@pytest.mark.parametrize(
    "snapshot",
    [
        {"error": "Prometheus at http://prometheus:9090 is unreachable: Connection refused"},
        {"stable": {"requests": 0, "errors": 0}, "candidate": {"requests": 0, "errors": 0}},
    ],
)
def test_no_evidence_is_inconclusive(snapshot: Any) -> None:
    result = judged(snapshot)
    assert result.verdict == "inconclusive"
    assert result.reason


@pytest.mark.parametrize(
    ("snapshot", "where"),
    [
        ({"stable": track(1000)}, "missing track 'candidate'"),
        ({"stable": track(1000), "candidate": {"requests": 10, "errors": 11}}, r"candidate.errors \(11\)"),
        ({"stable": track(1000), "candidate": {"requests": "many"}}, "candidate.requests"),
        ([], "a snapshot must be a JSON object"),
    ],
)
def test_malformed_snapshots_are_refused_where_they_are_read(snapshot: Any, where: str) -> None:
    with pytest.raises(SnapshotError, match=where):
        parse_snapshot(snapshot)


def test_missing_latency_histogram_blocks_promotion() -> None:
    snap = healthy()
    del snap["candidate"]["latency_buckets"]
    result = judged(snap)
    assert result.verdict == "inconclusive" and "latency histogram" in result.reason


def test_alpha_is_split_over_tests_that_can_roll_back() -> None:
    default = judged(healthy())
    thresholds = {m.name: m.threshold for m in default.metrics}
    # error harm (weight 2), error SLO (1), latency harm (2), prediction drift (1): alpha 0.05 over weight 6
    assert thresholds["errorRate.harm"] == pytest.approx(6 / 2 / 0.05)
    assert thresholds["latency.harm"] == pytest.approx(6 / 2 / 0.05)
    drift = next(m for m in default.metrics if m.name == "predictionDrift")
    assert drift.decision == "pass"  # its threshold field is maxPsi; its alpha share is 0.05 / 6
    policy = {
        "significance": {"alpha": 0.1},
        "analysis": {"metrics": {"latency": {"enabled": False}, "predictionDrift": {"enabled": False},
                                 "errorRate": {"maxRate": None}}},
    }  # fmt: skip
    only_errors = judged(healthy(), policy)
    assert names(only_errors) == {"errorRate.harm": "pass", "errorRate.nonInferiority": "pass"}
    harm = next(m for m in only_errors.metrics if m.name == "errorRate.harm")
    assert harm.threshold == pytest.approx(10.0)
    assert only_errors.alpha == 0.1


def test_input_drift_and_custom_metrics_take_part() -> None:
    snap = healthy()
    snap["reference"] = REFERENCE
    snap["candidate"]["features"] = {"f0": [3000, 3000]}
    snap["custom"] = {"queue": {"stable": 1.0, "candidate": 2.0}}
    policy = {"analysis": {"metrics": {"custom": [{"name": "queue", "query": "x", "max": 5}]}}}
    result = judged(snap, policy)
    assert names(result)["inputDrift"] == "pass" and names(result)["custom.queue"] == "pass"
    assert result.verdict == "promote"
    bad = copy.deepcopy(snap)
    bad["custom"]["queue"]["candidate"] = 9.0
    assert judged(bad, policy).verdict == "rollback"
    drifted = copy.deepcopy(snap)
    drifted["candidate"]["features"] = {"f0": [5800, 200]}
    assert judged(drifted, policy).verdict == "rollback"


def test_parsed_spec_keeps_explicit_nulls() -> None:
    spec = RolloutPolicySpec.model_validate({"analysis": {"metrics": {"errorRate": {"maxRate": None}}}})
    assert "errorRate.slo" not in names(judged(healthy(), spec))
    assert "errorRate.slo" not in names(judged(healthy(), spec.to_dict()))  # to_dict keeps the meaningful null
    assert "errorRate.slo" in names(judged(healthy(), {}))  # absent: the default SLO


def test_full_rolloutpolicy_manifest_is_accepted_and_bad_policy_raises() -> None:
    manifest = {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "RolloutPolicy",
        "spec": {"significance": {"alpha": 0.01}},
    }
    assert judged(healthy(), manifest).alpha == 0.01
    with pytest.raises(ValidationError):
        judged(healthy(), {"significance": {"alpha": 5}})


def test_bucket_layout_mismatch_and_forced_monotone_warn() -> None:
    snap = healthy()
    del snap["candidate"]["latency_buckets"]["0.0005"]
    snap["stable"]["latency_buckets"]["0.2"] = snap["stable"]["latency_buckets"]["0.15"] - 5
    result = judged(snap)
    assert any("shared bounds" in w for w in result.warnings)
    assert any("forced monotone" in w for w in result.warnings)
    assert result.verdict == "promote"


def test_split_alpha_favours_harm_tests_and_spends_exactly_alpha() -> None:
    shares = split_alpha(0.05, [("errorRate.harm", True), ("errorRate.slo", False), ("latency.harm", True)])
    assert sum(shares.values()) == pytest.approx(0.05)
    assert shares["errorRate.harm"] == pytest.approx(HARM_WEIGHT * shares["errorRate.slo"])
    assert shares["latency.harm"] == shares["errorRate.harm"]
    assert split_alpha(0.1, [("errorRate.harm", True)]) == {"errorRate.harm": pytest.approx(0.1)}
    assert split_alpha(0.05, []) == {}


def test_drift_is_held_to_its_own_smaller_alpha_share() -> None:
    """Drift has weight 1 against the harm tests' 2: with the default policy its e-value bar is 6/alpha = 120
    while error harm's is 60. A clear shift whose e-value lies between the two does not roll back yet."""
    snap = healthy()
    stable_predictions = [float(snap["stable"]["predictions"][k]) for k in ("0", "1", "2")]

    def shifted(n: int) -> list[int]:
        return [round(n * p) for p in (0.05, 0.15, 0.8)]  # PSI far above maxPsi 0.2

    sizes = range(10, 200)
    e = {n: math.exp(homogeneity_log_e([stable_predictions, [float(x) for x in shifted(n)]])) for n in sizes}
    between = next(n for n in sizes if 60 <= e[n] < 120)
    beyond = next(n for n in sizes if e[n] >= 120)
    verdicts = {}
    for n in (between, beyond):
        snap["candidate"]["predictions"] = dict(zip(("0", "1", "2"), shifted(n), strict=True))
        result = judged(snap)
        verdicts[n] = next(m for m in result.metrics if m.name == "predictionDrift").decision
    assert verdicts == {between: "inconclusive", beyond: "fail"}
