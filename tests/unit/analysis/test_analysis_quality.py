"""Quality from labels: paired (McNemar) and unpaired accuracy, MAE; the words the verdict uses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from tests.unit.analysis.snapshots import healthy, judged

from mlrollout.analysis import AnalysisTarget, Measurement, Sample, StaticProvider, collect_snapshot
from mlrollout.analysis.quality import QualitySettings, quality_results
from mlrollout.analysis.sequential import (
    QUALITY_PAIRED,
    QUALITY_UNPAIRED,
    grid_harm_log_e,
    one_sided_normal_mixture_log_e,
)
from mlrollout.analysis.snapshot import Labels, Pairs
from mlrollout.api.rolloutpolicy import Margin

ACCURACY = QualitySettings("accuracy", alpha_harm=0.0125, alpha_promote=0.05, margin=Margin(absolute=0.01),
                           min_labels=100)  # fmt: skip


def by_name(results: list) -> dict:  # type: ignore[type-arg]
    return {r.name: r for r in results}


def test_paired_worse_candidate_fails_harm_and_says_worse() -> None:
    # 5000 labelled requests, 2 pp worse: 175 pairs stable right only, 75 candidate right only
    pairs = Pairs(both_right=4300, both_wrong=450, stable_only=175, candidate_only=75)
    results = by_name(quality_results(Labels(), Labels(), pairs, ACCURACY, design="paired"))
    harm = results["quality.harm"]
    assert harm.decision == "fail" and harm.reason.startswith("worse: accuracy 87.50% vs stable 89.50%")
    assert harm.effect == pytest.approx(-0.02) and harm.test.startswith("sequential McNemar")
    assert results["quality.nonInferiority"].decision == "inconclusive"


def test_paired_better_candidate_is_better_by_an_interval() -> None:
    pairs = Pairs(both_right=4300, both_wrong=450, stable_only=60, candidate_only=190)
    results = by_name(quality_results(Labels(), Labels(), pairs, ACCURACY, design="paired"))
    ni = results["quality.nonInferiority"]
    assert results["quality.harm"].decision == "pass"
    assert ni.decision == "pass" and "better by +2.60 pp [" in ni.reason
    assert ni.interval is not None and 0 < ni.interval[0] < 0.026 < ni.interval[1]


def test_equal_models_are_no_worse_than_the_margin() -> None:
    pairs = Pairs(both_right=8600, both_wrong=900, stable_only=250, candidate_only=250)
    ni = by_name(quality_results(Labels(), Labels(), pairs, ACCURACY, design="paired"))["quality.nonInferiority"]
    assert ni.decision == "pass" and "no worse than -1.00 pp" in ni.reason


def test_unpaired_accuracy_is_the_error_rate_harm_test_on_labelled_rows() -> None:
    stable, candidate = Labels(labelled=9000, incorrect=900), Labels(labelled=1000, incorrect=160)
    results = by_name(quality_results(stable, candidate, None, ACCURACY, design="unpaired"))
    assert results["quality.harm"].decision == "fail" and results["quality.harm"].test.startswith("conditional")
    assert results["quality.harm"].estimate is not None
    assert results["quality.harm"].estimate.candidate == pytest.approx(0.84)


def test_a_relative_margin_is_taken_at_stables_lower_bound_and_never_below_its_floor() -> None:
    """Stable's estimated accuracy would widen the margin when noise raises it; its lower confidence bound
    cannot (docs/analysis.md, "Margins"). With few labels the margin is smaller than relative x estimate,
    and approaches it as labels come; a floor is the least it may be."""
    relative = dataclasses.replace(ACCURACY, margin=Margin(relative=0.02))

    def margin(pairs: Pairs, settings: QualitySettings = relative) -> float:
        ni = by_name(quality_results(Labels(), Labels(), pairs, settings, design="paired"))["quality.nonInferiority"]
        assert ni.threshold is not None
        return float(-ni.threshold)

    few, many = margin(Pairs(both_right=360, both_wrong=40)), margin(Pairs(both_right=36_000, both_wrong=4_000))
    assert few < many < 0.02 * 0.9 and many == pytest.approx(0.018, rel=0.03)
    floored = dataclasses.replace(ACCURACY, margin=Margin(relative=0.001, floor=0.02))
    assert margin(Pairs(both_right=360, both_wrong=40), floored) == pytest.approx(0.02)
    assert ACCURACY.alpha_difference == 0.05 and relative.alpha_difference == relative.alpha_level == 0.025


def test_no_labels_yet_is_inconclusive() -> None:
    results = quality_results(Labels(labelled=10), Labels(), None, ACCURACY, design="unpaired")
    assert [r.decision for r in results] == ["inconclusive", "inconclusive"]
    assert "no labelled rows for the candidate" in str(results[0].reason)


def test_few_labels_never_pass_non_inferiority() -> None:
    pairs = Pairs(both_right=40, both_wrong=5)
    ni = by_name(quality_results(Labels(), Labels(), pairs, ACCURACY, design="paired"))["quality.nonInferiority"]
    assert ni.decision == "inconclusive" and "fewer than 100 labelled rows" in str(ni.reason)


def test_one_sided_mixture_never_counts_a_better_candidate_as_evidence() -> None:
    assert one_sided_normal_mixture_log_e(-5.0, 1.0, 1.0) < 0
    assert one_sided_normal_mixture_log_e(5.0, 1.0, 1.0) > np.log(20)
    assert one_sided_normal_mixture_log_e(1.0, 0.0, 1.0) == 0.0


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), discordant=st.sampled_from([0.02, 0.06, 0.15]))
def test_identical_accuracy_rarely_rolls_back_over_many_looks(seed: int, discordant: float) -> None:
    """Equal accuracies, models that disagree on a share of rows, labels for 30% of 100 requests/s over 30
    looks of a minute, each look's labels arriving 0 to 5 looks late (at random): the paired harm test (the
    e-process quality.harm reports) crosses 1/alpha in at most about alpha of 300 rollouts."""
    rng = np.random.default_rng(seed)
    runs, looks, per_look = 300, 30, 1800
    half = discordant / 2
    probs = [0.9 - half, 0.1 - half, half, half]  # both right, both wrong, stable only, candidate only
    batches = rng.multinomial(per_look, probs, size=(runs, looks))
    arrival = np.arange(looks)[None, :] + rng.integers(0, 6, size=(runs, looks))  # the look that sees them
    arrived = np.zeros_like(batches)
    for run in range(runs):
        for sent in range(looks):
            if arrival[run, sent] < looks:
                arrived[run, arrival[run, sent]] += batches[run, sent]
    counts = arrived.cumsum(axis=1)
    bar = np.log(1 / ACCURACY.alpha_harm)
    crossed = sum(
        any(grid_harm_log_e(int(c[t, 2]), int(c[t, 2] + c[t, 3]), 0.5, QUALITY_PAIRED) >= bar for t in range(looks))
        for c in counts
    )
    assert stats.binom.sf(crossed - 1, runs, ACCURACY.alpha_harm) > 1e-3, crossed  # not more than alpha allows


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), accuracy=st.sampled_from([0.7, 0.9, 0.98]))
def test_identical_accuracy_in_a_canary_rarely_rolls_back_over_many_looks(seed: int, accuracy: float) -> None:
    """The unpaired design (10 % canary, its own mixture): equal accuracies, 1800 labelled rows a look over 30
    looks, each look's labels 0 to 5 looks late at random; quality.harm's e-process, with the candidate's share of
    labelled rows as quality_results computes it, crosses 1/alpha in at most about alpha of 300 rollouts."""
    rng = np.random.default_rng(seed)
    runs, looks, per_look = 300, 30, 1800
    rows_c = rng.binomial(per_look, 0.1, size=(runs, looks))
    batches = np.stack([rows_c, per_look - rows_c, rng.binomial(rows_c, 1 - accuracy),
                        rng.binomial(per_look - rows_c, 1 - accuracy)], axis=-1)  # fmt: skip
    arrival = np.arange(looks)[None, :] + rng.integers(0, 6, size=(runs, looks))
    arrived = np.zeros_like(batches)
    for run in range(runs):
        for sent in range(looks):
            if arrival[run, sent] < looks:
                arrived[run, arrival[run, sent]] += batches[run, sent]
    counts = arrived.cumsum(axis=1)  # labelled candidate, labelled stable, wrong candidate, wrong stable
    bar = np.log(1 / ACCURACY.alpha_harm)

    def fires(c: np.ndarray) -> bool:
        share = float(c[0]) / max(float(c[0] + c[1]), 1.0)
        return bool(grid_harm_log_e(int(c[2]), int(c[2] + c[3]), share, QUALITY_UNPAIRED) >= bar)

    crossed = sum(any(fires(c[t]) for t in range(looks) if c[t, 0] and c[t, 1]) for c in counts)
    assert stats.binom.sf(crossed - 1, runs, ACCURACY.alpha_harm) > 1e-3, crossed


QUALITY_ON = {"analysis": {"metrics": {"quality": {"enabled": True, "minLabels": 100}}}}


def test_judge_needs_quality_evidence_to_promote_once_quality_is_on() -> None:
    snap = healthy()
    assert judged(snap).verdict == "promote"
    no_labels = judged(snap, QUALITY_ON)
    assert no_labels.verdict == "continue" and "quality.nonInferiority" in no_labels.reason
    # unpaired (a canary step) and a 0.9-point margin: tens of thousands of labels before "no worse" shows
    snap["stable"]["labels"] = {"labelled": 400_000, "incorrect": 40_000}
    snap["candidate"]["labels"] = {"labelled": 45_000, "incorrect": 4_480}
    assert judged(snap, QUALITY_ON).verdict == "promote"
    snap["stable"]["labels"] = {"labelled": 30_000, "incorrect": 3_000}
    snap["candidate"]["labels"] = {"labelled": 3_400, "incorrect": 500}  # 85 % against 90 %
    worse = judged(snap, QUALITY_ON)
    assert worse.verdict == "rollback" and "quality.harm: worse" in worse.reason
    assert "quality.harm" in worse.evidence  # carried across steps like the other e-value tests


def test_judge_prefers_pairs_in_a_shadow_step() -> None:
    snap = healthy()
    snap["stable"]["labels"] = {"labelled": 5_000, "incorrect": 500}
    snap["pairs"] = {"both_right": 4_300, "both_wrong": 450, "stable_only": 175, "candidate_only": 75}
    result = judged(snap, QUALITY_ON)
    harm = next(m for m in result.metrics if m.name == "quality.harm")
    assert result.verdict == "rollback" and harm.test is not None and harm.test.startswith("sequential McNemar")


def test_feedback_series_become_labels_and_pairs() -> None:
    def answers(promql: str) -> Measurement:
        if "feedback_labels_total" in promql:
            return Measurement((Sample({"outcome": "correct"}, 90.0), Sample({"outcome": "incorrect"}, 10.0)))
        if "feedback_pairs_total" in promql and 'track="shadow"' in promql:
            return Measurement(tuple(Sample({"result": r}, v) for r, v in (("both_right", 80.0), ("stable_only", 3.0))))
        return Measurement()

    target = AnalysisTarget("ns", "wine", "s1", "c1", "model")
    snap = collect_snapshot(StaticProvider(answers), target, 60, quality=True)
    assert snap.stable.labels == Labels(labelled=100, incorrect=10)
    assert snap.pairs == Pairs(both_right=80, stable_only=3)
    assert collect_snapshot(StaticProvider(answers), target, 60).pairs is None  # quality off: not even asked
    # a canary step: the shadow step's labels that arrive late are not its evidence (they froze the paired
    # test at the shadow's last count, and no-worse could never be shown)
    canary = AnalysisTarget("ns", "wine", "s1", "c1", "gateway")
    snap = collect_snapshot(StaticProvider(answers), canary, 60, quality=True)
    assert snap.pairs is None and snap.candidate.labels == Labels(labelled=100, incorrect=10)
    # Gateway API or Istio: every step reads the model servers, but only the built-in gateway pairs mirrored
    # answers, so a canary there is no mirroring step either and the shadow's pairs are not asked for
    provider = StaticProvider(answers)
    mesh = AnalysisTarget("ns", "wine", "s1", "c1", "model", gateway_in_path=False)
    assert mesh.paired is False and target.paired is True and canary.paired is False
    assert collect_snapshot(provider, mesh, 60, quality=True).pairs is None
    assert not any("feedback_pair" in q for q in provider.queries)
