"""Which quality test a step runs: the step's design (paired where it mirrors), never whether pairs exist.

The race this guards against (issue #14): in a shadow step after a canary, answers the candidate served to
clients before the gateway loaded the shadow's route table carry a feedback id issued after the step's start,
so their labels count in the shadow step. Chosen by whether pairs exist, the unpaired test ran on those few
rows until the first pair: a second chance at quality.harm's alpha share. Here they are never a test's rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from tests.unit.analysis.snapshots import healthy, judged

from mlrollout.analysis import AnalysisTarget, Measurement, StaticProvider, collect_snapshot
from mlrollout.analysis.quality import HARM_MAE_PAIRED, HARM_PAIRED, QualitySettings, quality_results
from mlrollout.analysis.snapshot import Labels, Pairs, Snapshot, SnapshotError, Split, parse_snapshot
from mlrollout.api.analysis import MetricResult, QualityDesign
from mlrollout.api.rolloutpolicy import Margin

ACCURACY = QualitySettings("accuracy", alpha_harm=0.0125, alpha_promote=0.05, margin=Margin(absolute=0.01),
                           min_labels=100)  # fmt: skip
MAE = QualitySettings("mae", 0.0125, 0.05, Margin(relative=0.05), 100, error_bound=5.0)
QUALITY_ON = {"analysis": {"metrics": {"quality": {"enabled": True, "minLabels": 100}}}}


def harm_of(results: list[MetricResult]) -> MetricResult:
    return next(r for r in results if r.name == "quality.harm")


# --- the snapshot says the step's design ---


def test_the_snapshot_carries_the_design_the_target_was_given() -> None:
    """A mesh shadow step: no pairs are asked for (only the built-in gateway pairs), yet the step is paired,
    so its quality waits for pairs rather than running the unpaired test on whatever labels there are."""
    provider = StaticProvider(lambda promql: Measurement())
    cases: list[tuple[QualityDesign, bool, bool]] = [("paired", True, True), ("paired", False, False),
                                                     ("unpaired", True, False)]  # fmt: skip
    for design, gateway_in_path, asks_pairs in cases:
        target = AnalysisTarget("ns", "wine", "s1", "c1", "model", gateway_in_path=gateway_in_path, design=design)
        assert (target.quality_design, target.paired) == (design, asks_pairs)
        assert collect_snapshot(provider, target, 60, quality=True).quality_design == design
    # a target built without a step (tests, benches): paired exactly where the mirroring steps' series are read
    assert AnalysisTarget("ns", "wine", "s1", "c1", "model").quality_design == "paired"
    assert AnalysisTarget("ns", "wine", "s1", "c1", "gateway").quality_design == "unpaired"
    assert AnalysisTarget("ns", "wine", "s1", "c1", "model", gateway_in_path=False).quality_design == "unpaired"


def test_a_snapshot_that_does_not_say_is_paired_when_it_mirrors_or_has_pairs_at_all() -> None:
    base = Snapshot.failed("x")
    assert base.design == "unpaired"
    assert Snapshot(base.stable, base.candidate, split=Split(1.0, 0.0, 1.0)).design == "paired"
    assert Snapshot(base.stable, base.candidate, pairs=Pairs()).design == "paired"  # zero pairs: still paired
    said = Snapshot(base.stable, base.candidate, pairs=Pairs(both_right=5), quality_design="unpaired")
    assert said.design == "unpaired"
    snap = healthy()
    assert parse_snapshot({**snap, "quality_design": "paired"}).design == "paired"
    assert parse_snapshot(snap).quality_design is None
    with pytest.raises(SnapshotError, match="quality_design must be paired or unpaired"):
        parse_snapshot({**snap, "quality_design": "shadow"})


# --- the race: the candidate's rows of the moment before the table change ---


def test_the_candidates_rows_in_a_mirroring_step_wait_for_pairs_and_are_named() -> None:
    """300 rows of the candidate, 20 % wrong, against stable's 10 %: chosen by whether pairs exist, the
    unpaired test rolls back on them alone. The step mirrors: no test runs, nothing carries, and the reason
    says which rows are not used; samples are the pairs (none), so maxLabelWait still ends a step without any."""
    stable, candidate = Labels(labelled=2700, incorrect=270), Labels(labelled=300, incorrect=60)
    old_choice = harm_of(quality_results(stable, candidate, None, ACCURACY, design="unpaired"))
    assert old_choice.decision == "fail"  # the second chance the old choice gave these rows
    harm = harm_of(quality_results(stable, candidate, None, ACCURACY, design="paired"))
    assert (harm.decision, harm.e_value, harm.test) == ("inconclusive", None, None)
    assert harm.samples is not None and (harm.samples.stable, harm.samples.candidate) == (0.0, 0.0)
    assert str(harm.reason).startswith("no labelled pairs yet")
    assert "300 labelled rows the candidate served to clients before the gateway loaded" in str(harm.reason)


ONCE_PAIRED = (
    (ACCURACY, Labels(5200, 600), Pairs(4300, 450, 130, 120), Labels(300, 60)),
    (MAE, Labels(5200, 0, 4600.0, 9000.0, 4600.0, 9000.0),
     Pairs(4500, 0, 300, 200, 4000.0, 4100.0, 900.0, 4000.0, 4100.0, 900.0),
     Labels(300, 0, 600.0, 1500.0, 600.0, 1500.0)),
)  # fmt: skip


@pytest.mark.parametrize(("settings_", "stable", "pairs", "race"), ONCE_PAIRED, ids=["accuracy", "mae"])
def test_once_pairs_come_the_candidates_rows_change_nothing_but_the_reason(
    settings_: QualitySettings, stable: Labels, pairs: Pairs, race: Labels
) -> None:
    alone = quality_results(stable, Labels(), pairs, settings_, design="paired")
    beside = quality_results(stable, race, pairs, settings_, design="paired")
    assert harm_of(alone).e_value is not None and harm_of(alone).test in (HARM_PAIRED, HARM_MAE_PAIRED)
    for a, b in zip(alone, beside, strict=True):
        assert a.model_dump(exclude={"reason"}) == b.model_dump(exclude={"reason"})
    assert "300 labelled rows the candidate served" in str(harm_of(beside).reason)


def test_pairs_in_a_step_that_does_not_mirror_are_not_used_and_named() -> None:
    stable, candidate = Labels(labelled=9000, incorrect=900), Labels(labelled=1000, incorrect=100)
    alone = quality_results(stable, candidate, None, ACCURACY, design="unpaired")
    pairs = Pairs(both_right=100, both_wrong=0, stable_only=40, candidate_only=0)  # would say "worse" paired
    beside = quality_results(stable, candidate, pairs, ACCURACY, design="unpaired")
    for a, b in zip(alone, beside, strict=True):
        assert a.model_dump(exclude={"reason"}) == b.model_dump(exclude={"reason"})
    assert harm_of(beside).decision == "pass" and "140 labelled pairs are not used" in str(harm_of(beside).reason)


def test_judge_in_a_mirroring_step_carries_only_the_paired_evidence() -> None:
    """The second of two analysed steps, with the first step's quality.harm carried in: before the first
    pair nothing is measured, so nothing new carries (the step keeps what it carried in); with pairs the
    evidence out is the paired e-process's, whatever the candidate's own rows say."""
    snap: dict[str, Any] = healthy()
    snap["evidence"] = {"step": 1, "steps": 2, "carried": {"quality.harm": 3.0}}
    snap["quality_design"] = "paired"
    snap["stable"]["labels"] = {"labelled": 2700, "incorrect": 270}
    snap["candidate"]["labels"] = {"labelled": 300, "incorrect": 60}
    waiting = judged(snap, QUALITY_ON)
    assert waiting.verdict != "rollback" and "quality.harm" not in waiting.evidence
    snap["pairs"] = {"both_right": 4300, "both_wrong": 450, "stable_only": 130, "candidate_only": 120}
    with_rows = judged(snap, QUALITY_ON)
    snap["candidate"]["labels"] = {"labelled": 0, "incorrect": 0}
    without = judged(snap, QUALITY_ON)
    assert with_rows.evidence["quality.harm"] == without.evidence["quality.harm"]
    harm = next(m for m in with_rows.metrics if m.name == "quality.harm")
    assert harm.e_value is not None and harm.test is not None and harm.test.startswith("sequential McNemar")


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), accuracy=st.sampled_from([0.8, 0.9, 0.97]),
       weight=st.sampled_from([0.05, 0.2, 0.5]))  # fmt: skip
def test_race_rows_give_equal_models_no_rollback_chance_of_their_own(seed: int, accuracy: float, weight: float) -> None:
    """Equal models, a canary at ``weight`` before the shadow step. Each run: 0 to 300 labelled rows the
    candidate served before the gateway loaded the shadow's table (stable's rows of that moment beside them,
    at the canary's split), arriving over the step's first 1 to 3 looks before any pair; then 1 800 labelled
    pairs a look (the models disagree on 6 % of rows) to look 20. ``quality.harm`` as the judge computes it in
    the paired step never measures the race rows (no e-value before the first pair), and rolls back at most
    about alpha of 200 runs, looking at every look."""
    rng = np.random.default_rng(seed)
    runs, looks, per_look, half = 200, 20, 1800, 0.03
    fired = 0
    for _ in range(runs):
        race_c = int(rng.integers(0, 301))
        race_s = int(rng.negative_binomial(race_c, weight)) if race_c else int(rng.integers(0, 50))
        wrong_c, wrong_s = int(rng.binomial(race_c, 1 - accuracy)), int(rng.binomial(race_s, 1 - accuracy))
        before = int(rng.integers(1, 4))  # looks that see race rows only
        cells = rng.multinomial(per_look, [accuracy - half, 1 - accuracy - half, half, half], size=looks)
        pairs = np.zeros(4, dtype=np.int64)
        for t in range(1, looks + 1):
            share = min(t / before, 1.0)
            candidate = Labels(round(race_c * share), round(wrong_c * share))
            stable = Labels(round(race_s * share), round(wrong_s * share))
            if t > before:
                pairs = pairs + cells[t - 1]
                stable = Labels(stable.labelled + int(pairs.sum()), stable.incorrect + int(pairs[1] + pairs[3]))
            p = Pairs(*(int(x) for x in pairs))
            harm = harm_of(quality_results(stable, candidate, p, ACCURACY, design="paired"))
            if t <= before:
                assert harm.e_value is None and harm.decision == "inconclusive", harm
            if harm.decision == "fail":
                fired += 1
                break
    assert stats.binom.sf(fired - 1, runs, ACCURACY.alpha_harm) > 1e-3, fired  # not more than alpha allows
