"""The evaluation's wire format: the request's rules, the report's exit codes, its fit in a termination
message, and the reader that tells a report from a crash's log tail."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlrollout.api.rolloutpolicy import Margin
from mlrollout_serving.contract.evaluation import (
    MESSAGE_LIMIT,
    Check,
    EvaluateExit,
    EvaluationFormatError,
    EvaluationReport,
    EvaluationRequest,
    MarginSpec,
    Verdict,
    margin_allowed,
    parse_report,
)

REQUEST = {
    "stable": {"uri": "http://store/a.onnx", "sha256": "a" * 64},
    "candidate": {"uri": "http://store/b.onnx"},
    "dataset": {"uri": "http://store/holdout.csv", "label": "quality"},
}


@pytest.mark.parametrize(
    "margin",
    [Margin(relative=0.01), Margin(relative=0.3, floor=0.0025), Margin(absolute=0.02), Margin(relative=0, floor=0.01)],
)
def test_the_policy_margin_and_the_wire_margin_are_one_rule(margin: Margin) -> None:
    spec = MarginSpec(relative=margin.relative, floor=margin.floor, absolute=margin.absolute)
    for level in (0.0, 0.001, 0.05, 0.5, 0.93, 1.0, 12.5):
        assert spec.allowed(level) == margin.allowed(level) == margin_allowed(level, margin.relative, margin.floor,
                                                                              margin.absolute)  # fmt: skip


def test_request_defaults_and_rules() -> None:
    request = EvaluationRequest.from_wire(REQUEST)
    assert (request.metric, request.effective_baseline, request.alpha, request.resamples) == (
        "accuracy",
        "majority",
        0.05,
        2000,
    )
    assert request.margin.allowed(0.9) == pytest.approx(0.009)
    assert EvaluationRequest.from_wire({**REQUEST, "metric": "rmse"}).effective_baseline == "mean"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"metric": "accuracy", "baseline": "mean"}, "baseline mean is for regression metrics"),
        ({"metric": "mae", "baseline": "majority"}, "baseline majority is for classification metrics"),
        ({"slices": ["quality"]}, "cannot also be a slice"),
        ({"margin": {"relative": 0.1, "absolute": 0.1}}, "exactly one of relative, absolute"),
        ({"metric": "f1"}, "metric: expected one of accuracy, balancedAccuracy"),
        ({"alpha": 0}, "greater than 0"),
    ]
    for bad, words in cases:
        with pytest.raises(EvaluationFormatError, match=words):
            EvaluationRequest.from_wire({**REQUEST, **bad})
    wire = json.dumps(EvaluationRequest.from_wire(REQUEST).to_wire())
    assert EvaluationRequest.from_json(wire) == request


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({**REQUEST, "stable": {"uri": "http://store/a.onnx", "sha256": "A" * 64}}, r"^stable\.sha256: must be 64 "),
        ({**REQUEST, "dataset": {"uri": "x", "label": ""}}, r"^dataset\.label: must be 1 to 256 characters"),
        ({**REQUEST, "dataset": {"uri": "x"}}, r"^dataset\.label: required$"),
        ({"stable": {"uri": "x"}}, r"^candidate: required \(so are dataset\)$"),
        ({**REQUEST, "resamples": "2000"}, r"^resamples: expected an integer, got '2000'$"),
        ({**REQUEST, "resamples": True}, r"^resamples: expected an integer"),
        ({**REQUEST, "alpha": float("nan")}, r"^alpha: expected a finite number"),
        ({**REQUEST, "slices": "segment"}, r"^slices: expected a list, got str$"),
        ({**REQUEST, "slices": ["a", 3]}, r"^slices\.1: expected a string, got int$"),
        ({**REQUEST, "slices": [f"c{i}" for i in range(9)]}, r"^slices: at most 8 slices"),
        ({**REQUEST, "baseline": None, "margin": None}, r"^margin: expected an object, got null$"),
        ({**REQUEST, "margin": {"floor": 0.1, "absolute": 0.1}}, r"^margin: floor goes with a relative margin$"),
        ({**REQUEST, "margins": {"relative": 0.1}}, r"^margins: unknown field$"),
        ([REQUEST], r"^expected an object, got list$"),
    ],
)  # fmt: skip
def test_a_bad_request_is_refused_naming_the_field(bad: Any, words: str) -> None:
    with pytest.raises(EvaluationFormatError, match=words):
        EvaluationRequest.from_wire(bad)


def test_the_wire_is_camel_case_both_ways_and_snake_case_is_read_too() -> None:
    report = EvaluationReport(verdict="pass", reason="better", metric="rocAuc", dataset_sha256="d" * 64,
                              checks=(_slice(1),))  # fmt: skip
    wire = report.to_wire()
    assert wire["datasetSha256"] == "d" * 64 and wire["checks"][0]["pValue"] == 0.000123456
    assert wire["checks"][0]["interval"] == [0.00512345, 0.0171234] and "problem" not in wire
    assert EvaluationReport.from_wire(wire) == report
    assert EvaluationReport.from_wire({"verdict": "fail", "reason": "", "dataset_sha256": "x"}).dataset_sha256 == "x"


def test_building_one_checks_the_same_rules_as_reading_one() -> None:
    with pytest.raises(EvaluationFormatError, match=r"^rows: must be at least 0"):
        Check(kind="stable", name="stable", decision="pass", rows=-1)
    with pytest.raises(EvaluationFormatError, match=r"^verdict: expected one of pass, fail, inconclusive"):
        EvaluationReport(verdict="promote", reason="")  # type: ignore[arg-type]
    with pytest.raises(EvaluationFormatError, match="exactly one of relative, absolute"):
        MarginSpec()


def _slice(i: int, decision: Verdict = "pass") -> Check:
    return Check(
        kind="slice", name=f"region=r{i:03d}", decision=decision, rows=1000 + i, reference=0.912345, candidate=0.923456,
        effect=0.011111, interval=(0.00512345, 0.0171234), alpha=0.000416667,
        test="exact McNemar (discordant pairs), Bonett-Price interval", p_value=0.000123456, margin=0.00912345,
        reason="no worse than the margin: accuracy 0.9235 vs stable 0.9123 on region=r001: +0.01111 [...]",
    )  # fmt: skip


def test_a_report_with_many_slices_fits_a_termination_message_keeping_the_failing_ones() -> None:
    overall = Check(kind="stable", name="stable", decision="pass", rows=120_000, reason="fine")
    checks = (overall, *(_slice(i, "fail" if i in (7, 90) else "pass") for i in range(120)))
    report = EvaluationReport(verdict="fail", reason="worse on region=r007", metric="accuracy", rows=120_000,
                              checks=checks)  # fmt: skip
    assert len(report.to_json()) > MESSAGE_LIMIT
    message = report.to_message()
    assert len(message.encode()) <= MESSAGE_LIMIT
    back = parse_report(message)
    kept = [c.name for c in back.checks]
    assert kept[0] == "stable" and "region=r007" in kept and "region=r090" in kept
    assert len(back.checks) - 1 + back.omitted == 120
    assert back.verdict == "fail" and back.reason == report.reason


def test_a_small_report_is_left_whole() -> None:
    report = EvaluationReport(verdict="pass", reason="better", checks=(_slice(1),))
    assert parse_report(report.to_message()) == report


def test_even_absurd_reports_fit() -> None:
    failing = tuple(_slice(i, "fail") for i in range(60))
    report = EvaluationReport(verdict="fail", reason="x" * 2048, checks=failing)
    assert len(report.to_message().encode()) <= MESSAGE_LIMIT


def test_exit_codes() -> None:
    assert EvaluationReport(verdict="pass", reason="").exit_code == EvaluateExit.PASS
    assert EvaluationReport(verdict="fail", reason="").exit_code == EvaluateExit.FAIL
    assert (int(EvaluateExit.PASS), int(EvaluateExit.FAIL)) == (0, 1)  # what the CLI's callers read
    assert EvaluationReport(verdict="inconclusive", reason="").exit_code == EvaluateExit.FAIL
    assert EvaluationReport(verdict="inconclusive", reason="", problem="badInput").exit_code == 2
    assert EvaluationReport(verdict="inconclusive", reason="", problem="error").exit_code == 3


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "not JSON"),
        ("Traceback (most recent call last):\n  File ...\nMemoryError", "not JSON"),
        ('{"verdict": "pass"}', "kind is not mlrollout.io/evaluation"),
        ('["mlrollout.io/evaluation"]', "kind is not"),
        (json.dumps({"kind": "mlrollout.io/evaluation", "version": 1, "verdict": "promote", "reason": ""}),
         "invalid evaluation report"),
    ],
)  # fmt: skip
def test_anything_but_a_report_is_refused_with_a_reason(text: str, words: str) -> None:
    with pytest.raises(EvaluationFormatError, match=words):
        parse_report(text)
