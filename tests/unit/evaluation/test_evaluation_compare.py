"""The gate's rules on plain numbers: pass, fail and inconclusive for metrics where higher and where lower
is better, the baseline, slices, and the verdict of them all."""

from __future__ import annotations

import pytest

from mlrollout_serving.contract.evaluation import MarginSpec
from mlrollout_serving.evaluation.compare import too_small, verdict, versus_baseline, versus_stable
from mlrollout_serving.evaluation.stats import Paired

MARGIN = MarginSpec(absolute=0.01)


def paired(reference: float, candidate: float, low: float, high: float) -> Paired:
    return Paired(1000, reference, candidate, candidate - reference, low, high, 0.04, "test")


@pytest.mark.parametrize(
    ("low", "high", "decision", "words"),
    [
        (0.002, 0.03, "pass", "better: "),
        (-0.009, 0.02, "pass", "no worse than the margin: "),
        (-0.01, 0.02, "pass", "no worse than the margin: "),  # exactly at the margin still passes
        (-0.05, -0.011, "fail", "worse beyond the margin 0.01: "),
        (-0.03, 0.01, "inconclusive", "cannot tell: "),
    ],
)
def test_accuracy_like_metrics(low: float, high: float, decision: str, words: str) -> None:
    check = versus_stable("accuracy", paired(0.9, 0.9 + (low + high) / 2, low, high), MARGIN, 0.05)
    assert check.decision == decision and (check.reason or "").startswith(words)
    assert (check.kind, check.margin, check.interval) == ("stable", 0.01, (low, high))


@pytest.mark.parametrize(
    ("low", "high", "decision"),
    [(-0.03, -0.002, "pass"), (-0.02, 0.01, "pass"), (0.011, 0.05, "fail"), (-0.01, 0.03, "inconclusive")],
)
def test_loss_like_metrics_are_turned_around(low: float, high: float, decision: str) -> None:
    """For log loss, MAE and RMSE a positive effect (candidate minus stable) is worse."""
    assert versus_stable("logLoss", paired(0.4, 0.4 + (low + high) / 2, low, high), MARGIN, 0.05).decision == decision


def test_a_relative_margin_is_taken_at_stables_level() -> None:
    check = versus_stable("mae", paired(20.0, 20.3, 0.1, 0.5), MarginSpec(relative=0.05), 0.05)
    assert check.margin == pytest.approx(1.0) and check.decision == "pass"


@pytest.mark.parametrize(
    ("candidate", "low", "decision", "words"),
    [
        (0.8, 0.1, "pass", "beats"),
        (0.62, -0.01, "inconclusive", "not shown to beat"),
        (0.55, -0.1, "fail", "does not beat"),
    ],
)
def test_the_baseline_must_be_beaten(candidate: float, low: float, decision: str, words: str) -> None:
    check = versus_baseline("accuracy", paired(0.6, candidate, low, low + 0.1), 0.05, "majority", "always class 0")
    assert check.decision == decision and (check.reason or "").startswith(f"{words} the majority baseline")
    assert "(always class 0)" in (check.reason or "") and check.margin is None


def test_the_verdict() -> None:
    good = versus_stable("accuracy", paired(0.9, 0.92, 0.01, 0.03), MARGIN, 0.05)
    unsure = versus_stable("accuracy", paired(0.9, 0.9, -0.03, 0.03), MARGIN, 0.05)
    bad = versus_stable("accuracy", paired(0.9, 0.8, -0.12, -0.08), MARGIN, 0.05)
    beaten = versus_baseline("accuracy", paired(0.6, 0.9, 0.25, 0.35), 0.05, "majority", "always class 0")
    losing = versus_baseline("accuracy", paired(0.6, 0.5, -0.15, -0.05), 0.05, "majority", "always class 0")
    slice_bad = versus_stable("accuracy", paired(0.9, 0.7, -0.3, -0.1), MARGIN, 0.01, kind="slice", name="r=a")
    slice_unsure = versus_stable("accuracy", paired(0.9, 0.9, -0.2, 0.2), MARGIN, 0.01, kind="slice", name="r=b")
    assert verdict([good, beaten])[0] == "pass"
    assert verdict([good])[0] == "pass"  # baseline none
    assert verdict([good, beaten, slice_unsure, too_small("r=c", 3, "3 rows")])[0] == "pass"  # slices only fail
    assert verdict([unsure, beaten]) == ("inconclusive", unsure.reason)
    assert verdict([good, losing]) == ("fail", losing.reason)
    result, reason = verdict([good, beaten, slice_bad])
    assert result == "fail" and " on r=a" in reason
    assert verdict([bad, losing])[1].endswith("(and 1 more failing check(s))")
