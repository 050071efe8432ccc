"""Decision quality: how often each judge rolls back healthy canaries, promotes bad ones, and how fast.

A simulator draws request streams for stable and candidate (Poisson arrivals, Bernoulli errors, log-normal
latencies binned on the contract's buckets, multinomial predictions), accumulates them look by look, and
asks three judges for a verdict at every look, stopping each run at its first promote or rollback:

- ``ours``: ``mlrollout.analysis.judge`` with the default policy (anytime-valid, docs/analysis.md);
- ``flagger``: Flagger-style fixed thresholds on the last interval's candidate error rate and p99, rollback
  after ``FLAGGER_FAILED_CHECKS`` failed checks, promote after ``FLAGGER_ITERATIONS`` looks;
- ``kayenta``: Kayenta-style repeated fixed-sample tests (one-sided two-proportion z-test, Mann-Whitney on
  the binned latencies, chi-square on predictions, each at 0.05) on the cumulative data at every look;
  any significant difference rolls back, surviving all looks promotes.

Every snapshot also carries the configured split and the routed counts, so ``ours`` checks for a sample-ratio
mismatch at every look (a mismatch keeps it inconclusive); the other two do not check the split.

Quality scenarios (issue #14; neither Flagger nor Kayenta reads labels): accuracy 90 % for stable, the
candidate 0, 1, 2 or 5 points lower, 30 % of requests labelled, each label 0 or 5 looks late, in a shadow step
(100 % mirror: one label scores both models, ``quality.harm`` paired) and a 10 % canary step (unpaired). The
draws are ``quality_power.py``'s (``accuracy_row``: the same streams, so the same numbers there and here):

- ``ours``: ``judge()`` with quality on, on snapshots that carry the labelled rows the gateway would have
  counted by each look (pairs in shadow, each track's rows in a canary) beside an A/A canary's requests,
  latencies and classes, on ``--seeds`` runs, stopping at the first promote or rollback;
- the harm test alone (``quality.harm``'s e-process), a fixed-sample test repeated at every look (naive) and
  the oracle (the most powerful fixed-sample test, run once at the sample where it first reaches 90 %
  power: the fewest labelled rows a valid test needs), on ``ACCURACY_RUNS_PER_RUN`` times as many runs of the
  same draws, evaluated in tenths of a look for the labelled rows at 90 % power (quality_power.py).

Issue #14's goals are checked per row: false rollbacks of an A/A at most 5 % (the verdict, and the harm test
over every look simulated), -2 pp caught within 5 shadow looks of labels in at least 90 % of runs, the
labelled rows for 90 % power within 1.5x the oracle's (a row where ours or the oracle needs more looks
than simulated is reported as a miss, never dropped).

Usage: ``python bench/decision_quality.py [--seeds N] [--looks N] [--only NAME ...]``. Writes
``bench/results/decisions.json`` and prints the tables that docs/analysis.md shows.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from mlrollout.analysis import judge, parse_snapshot
from mlrollout.analysis.judge import alpha_shares
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout_serving.contract.metrics import LATENCY_BUCKETS
from quality_power import ACCURACY_RUNS_PER_RUN, BASE, DELAYS, DESIGNS, EFFECTS, LABELLED, SUB, accuracy_row

RESULTS = Path(__file__).parent / "results" / "decisions.json"
FINITE = np.array([b for b in LATENCY_BUCKETS if math.isfinite(b)])
LABELS = [f"{b:g}" for b in FINITE] + ["+Inf"]
LATENCY_MEDIAN = 0.020
LATENCY_SIGMA = 0.5
STABLE_CLASSES = np.array([0.3, 0.4, 0.3])

FLAGGER_MAX_ERROR_RATE = 0.015
FLAGGER_MAX_P99 = 0.100
FLAGGER_FAILED_CHECKS = 5
FLAGGER_ITERATIONS = 10
KAYENTA_ALPHA = 0.05

Counts = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str  # "aa" (healthy: any rollback is false) or "regression" (any promote is false)
    base_error: float = 0.01
    candidate_error: float | None = None
    latency_factor: float = 1.0
    class_shift: float = 0.0
    rps: float = 100.0
    share: float = 0.10  # the configured weight
    realised: float | None = None  # the share the router actually delivers (None: the configured one)
    interval: float = 60.0
    slo: bool = True  # the default error SLO (maxRate 5%); off: maxRate null
    targets: dict[str, float] = field(default_factory=dict)

    def policy(self) -> RolloutPolicySpec:
        """The default policy, with the error SLO set aside where the scenario says so."""
        return RolloutPolicySpec() if self.slo else NO_ERROR_SLO


NO_ERROR_SLO = RolloutPolicySpec.model_validate({"analysis": {"metrics": {"errorRate": {"maxRate": None}}}})
NO_SLO = " (no SLO)"
SPLIT_FALSE_FLAGS = 0.01  # a correct split is flagged in at most 1% of healthy runs


def scenarios() -> list[Scenario]:
    healthy = {"false_rollback_max": 0.05, "promote_min": 0.80}
    not_promoted = {"promote_max": 0.05}
    ratios = [
        Scenario(f"errors x{ratio:g} ({base * 100:g}->{base * ratio * 100:.3g}%){NO_SLO}", "regression",
                 base_error=base, candidate_error=base * ratio, slo=False, targets=not_promoted)
        for base in (0.001, 0.01, 0.03, 0.2) for ratio in (1.3, 1.5)
    ]  # fmt: skip
    return [
        *(Scenario(f"A/A err {r:.1%}", "aa", base_error=r, targets=healthy) for r in (0.005, 0.01, 0.014, 0.02, 0.03)),
        # the default error SLO (maxRate) is 5%: a candidate exactly at it is held, never promoted
        Scenario("A/A err 5.0% (= SLO)", "aa", base_error=0.05, targets={"false_rollback_max": 0.05}),
        *(
            Scenario(f"A/A err {r:.1%}{NO_SLO}", "aa", base_error=r, slo=False, targets=healthy)
            for r in (0.001, 0.01, 0.03, 0.2)
        ),
        Scenario("A/A low traffic (10 rps)", "aa", rps=10.0, targets={"false_rollback_max": 0.05}),
        Scenario("errors +0.5pp (1.0->1.5%)", "regression", candidate_error=0.015, targets=not_promoted),
        *ratios,
        Scenario("errors x2 (1->2%)", "regression", candidate_error=0.02, targets={"rollback_by_5": 0.90}),
        Scenario(
            "errors x2 (2->4%)", "regression", base_error=0.02, candidate_error=0.04, targets={"rollback_by_3": 0.90}
        ),
        Scenario("errors x3 (1->3%)", "regression", candidate_error=0.03),
        Scenario("latency +10%", "regression", latency_factor=1.1, targets=not_promoted),
        Scenario("latency +30%", "regression", latency_factor=1.3, targets={"rollback_by_5": 0.90}),
        Scenario("latency +100%", "regression", latency_factor=2.0),
        Scenario("latency +30%, low traffic", "regression", latency_factor=1.3, rps=10.0),
        Scenario("predictions shift (PSI~0.05)", "aa", class_shift=0.1, targets={"false_rollback_max": 0.05}),
        Scenario("predictions shift (PSI~0.9)", "regression", class_shift=0.45),
        # a broken split, otherwise identical tracks: every comparison is suspect, nothing may be promoted
        Scenario("split 7% of 10% (SRM)", "split", realised=0.07, targets={"flag_by_5": 0.90, "promote_max": 0.0}),
    ]


def _candidate_classes(shift: float) -> npt.NDArray[np.float64]:
    target = np.array([0.05, 0.15, 0.8])
    return (1 - shift / 0.5) * STABLE_CLASSES + (shift / 0.5) * target if shift else STABLE_CLASSES


def _latency_probs(factor: float) -> npt.NDArray[np.float64]:
    cdf = stats.lognorm(LATENCY_SIGMA, scale=LATENCY_MEDIAN * factor).cdf(FINITE)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def simulate(
    sc: Scenario, seeds: int, looks: int, rng: np.random.Generator
) -> dict[str, dict[str, npt.NDArray[np.int64]]]:
    """Per-look increments for both tracks, shape ``(seeds, looks[, bins])``."""
    out = {}
    candidate_error = sc.candidate_error if sc.candidate_error is not None else sc.base_error
    share = sc.realised if sc.realised is not None else sc.share
    tracks = (
        ("stable", 1 - share, sc.base_error, 1.0, STABLE_CLASSES),
        ("candidate", share, candidate_error, sc.latency_factor, _candidate_classes(sc.class_shift)),
    )
    for track, share, err, lat, cls in tracks:
        n = rng.poisson(sc.rps * share * sc.interval, size=(seeds, looks))
        errors = rng.binomial(n, err)
        latency = rng.multinomial(n, _latency_probs(lat))
        predictions = rng.multinomial(n - errors, cls)
        out[track] = {"requests": n, "errors": errors, "latency": latency, "predictions": predictions}
    return out


def _snapshot(
    cum: dict[str, dict[str, npt.NDArray[np.int64]]], seed: int, look: int, share: float = 0.1
) -> dict[str, Any]:
    snap: dict[str, Any] = {"elapsed_seconds": 60.0 * (look + 1)}
    for track, data in cum.items():
        buckets = np.cumsum(data["latency"][seed, look])
        snap[track] = {
            "requests": int(data["requests"][seed, look]),
            "errors": int(data["errors"][seed, look]),
            "latency_buckets": dict(zip(LABELS, (int(x) for x in buckets), strict=True)),
            "predictions": {str(i): int(x) for i, x in enumerate(data["predictions"][seed, look])},
        }
    routed = {track: snap[track]["requests"] for track in ("stable", "candidate")}
    snap["split"] = {"configured": {"stable": 1 - share, "candidate": share}, "observed": routed}
    return snap


def _p99(latency: npt.NDArray[np.int64]) -> float:
    """histogram_quantile(0.99) of one bucket-count vector (linear within the bucket)."""
    total = latency.sum()
    if total == 0:
        return 0.0
    cdf = np.cumsum(latency) / total
    i = int(np.searchsorted(cdf, 0.99))
    if i >= len(FINITE):
        return float(FINITE[-1])
    lo_b, lo_c = (FINITE[i - 1], cdf[i - 1]) if i > 0 else (0.0, 0.0)
    return float(lo_b + (FINITE[i] - lo_b) * (0.99 - lo_c) / max(cdf[i] - lo_c, 1e-12))


def _mann_whitney_p(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> float:
    """One-sided p-value that ``b`` (candidate) is stochastically larger, from bucket counts, with ties."""
    n1, n2 = a.sum(), b.sum()
    if n1 == 0 or n2 == 0:
        return 1.0
    t = a + b
    ranks = np.cumsum(t) - (t - 1) / 2.0
    u = float((b * ranks).sum() - n2 * (n2 + 1) / 2.0)
    n = n1 + n2
    var = n1 * n2 / 12.0 * ((n + 1) - ((t**3 - t).sum()) / (n * (n - 1)))
    return float(special.ndtr(-(u - n1 * n2 / 2.0) / math.sqrt(var))) if var > 0 else 1.0


SPLIT_FLAG = "split-flag"  # ours: inconclusive because of a sample-ratio mismatch (the run goes on)


def judge_ours(cum: Any, sc: Scenario, seed: int, look: int) -> str:
    result = judge(parse_snapshot(_snapshot(cum, seed, look, sc.share)), sc.policy())
    if result.verdict == "inconclusive" and any(m.name == "split" and m.decision != "pass" for m in result.metrics):
        return SPLIT_FLAG
    return str(result.verdict)


def judge_flagger(cum: Any, inc: Any, seed: int, look: int, looks: int, state: dict[str, int]) -> str:
    c = {k: v[seed, look] for k, v in inc["candidate"].items()}
    rate = c["errors"] / c["requests"] if c["requests"] else 0.0
    if rate > FLAGGER_MAX_ERROR_RATE or _p99(c["latency"]) > FLAGGER_MAX_P99:
        state["failed"] = state.get("failed", 0) + 1
    if state.get("failed", 0) >= FLAGGER_FAILED_CHECKS:
        return "rollback"
    return "promote" if look + 1 >= FLAGGER_ITERATIONS else "continue"


def judge_kayenta(cum: Any, inc: Any, seed: int, look: int, looks: int) -> str:
    s = {k: v[seed, look] for k, v in cum["stable"].items()}
    c = {k: v[seed, look] for k, v in cum["candidate"].items()}
    ps, pc = s["errors"] / max(s["requests"], 1), c["errors"] / max(c["requests"], 1)
    pooled = (s["errors"] + c["errors"]) / max(s["requests"] + c["requests"], 1)
    se = math.sqrt(pooled * (1 - pooled) * (1 / max(s["requests"], 1) + 1 / max(c["requests"], 1)))
    p_err = float(special.ndtr(-(pc - ps) / se)) if se > 0 else 1.0
    p_lat = _mann_whitney_p(s["latency"], c["latency"])
    table = np.array([s["predictions"], c["predictions"]])
    table = table[:, table.sum(axis=0) > 0]
    p_pred = float(stats.chi2_contingency(table, correction=False)[1]) if table.shape[1] > 1 else 1.0
    if min(p_err, p_lat, p_pred) < KAYENTA_ALPHA:
        return "rollback"
    return "promote" if look + 1 >= looks else "continue"


Outcome = tuple[str, int, int | None]


def run_judge(name: str, sc: Scenario, cum: Any, inc: Any, seeds: int, looks: int) -> list[Outcome]:
    """(final verdict, 1-based look of the decision or ``looks`` when undecided, first look a split
    mismatch was flagged or None) per seed."""
    outcomes = []
    for seed in range(seeds):
        state: dict[str, int] = {}
        verdict, look, flagged = "continue", looks, None
        for t in range(looks):
            if name == "ours":
                v = judge_ours(cum, sc, seed, t)
                if v == SPLIT_FLAG and flagged is None:
                    flagged = t + 1
            elif name == "flagger":
                v = judge_flagger(cum, inc, seed, t, looks, state)
            else:
                v = judge_kayenta(cum, inc, seed, t, looks)
            if v in ("promote", "rollback"):
                verdict, look = v, t + 1
                break
        outcomes.append((verdict, look, flagged))
    return outcomes


def summarise(name: str, outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    rollbacks = [t for v, t, _ in outcomes if v == "rollback"]
    promotes = [t for v, t, _ in outcomes if v == "promote"]
    flags = [f for _, _, f in outcomes if f is not None]
    decided = sorted(rollbacks + promotes)
    return {
        "rollback_rate": len(rollbacks) / n,
        "promote_rate": len(promotes) / n,
        "undecided_rate": (n - len(decided)) / n,
        "median_looks_to_decision": float(np.median(decided)) if decided else None,
        "rollback_by_3": sum(t <= 3 for t in rollbacks) / n,
        "rollback_by_5": sum(t <= 5 for t in rollbacks) / n,
        # only ours checks the split; a run stops at its first promote or rollback, so this is "flagged first"
        "flag_rate": len(flags) / n if name == "ours" else None,
        "flag_by_5": sum(f <= 5 for f in flags) / n if name == "ours" else None,
    }


def check_targets(sc: Scenario, row: dict[str, Any]) -> list[str]:
    """Which of the scenario's targets our judge missed (empty when all met)."""
    missed = []
    t = sc.targets
    if "false_rollback_max" in t and row["rollback_rate"] > t["false_rollback_max"]:
        missed.append(f"false rollback {row['rollback_rate']:.1%} > {t['false_rollback_max']:.0%}")
    if "promote_min" in t and row["promote_rate"] < t["promote_min"]:
        missed.append(f"promoted {row['promote_rate']:.1%} < {t['promote_min']:.0%}")
    if "promote_max" in t and row["promote_rate"] > t["promote_max"]:
        missed.append(f"promoted {row['promote_rate']:.1%} > {t['promote_max']:.0%}")
    for key in ("rollback_by_3", "rollback_by_5", "flag_by_5"):
        if key in t and row[key] < t[key]:
            missed.append(f"{key} {row[key]:.1%} < {t[key]:.0%}")
    if sc.group == "aa" and row["flag_rate"] > SPLIT_FALSE_FLAGS:
        missed.append(f"correct split flagged in {row['flag_rate']:.1%} > {SPLIT_FALSE_FLAGS:.0%}")
    return missed


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if pct else f"{x:g}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: per scenario and judge, the error that matters and the speed."""
    lines = [
        "| scenario | judge | rollback | promote | undecided | median looks | rolled back by look 3 / 5 "
        "| split flagged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        for j in ("ours", "flagger", "kayenta"):
            r = row["judges"][j]
            mark = "" if j != "ours" else (" ✅" if not row["missed"] else " ❌")
            lines.append(
                f"| {row['scenario'] if j == 'ours' else ''} | {j}{mark} | {_fmt(r['rollback_rate'])} | "
                f"{_fmt(r['promote_rate'])} | {_fmt(r['undecided_rate'])} | "
                f"{_fmt(r['median_looks_to_decision'], pct=False)} | "
                f"{_fmt(r['rollback_by_3'])} / {_fmt(r['rollback_by_5'])} | {_fmt(r.get('flag_rate'))} |"
            )
    return "\n".join(lines)


# Quality from labels (issue #14): accuracy scenarios, the draws of quality_power.py


QUALITY_POLICY = RolloutPolicySpec.model_validate({"analysis": {"metrics": {"quality": {"enabled": True}}}})
"""The default policy with quality on (accuracy, margin 1 % of stable's accuracy)."""
ORACLE_TIMES = 1.5  # issue #14: labelled rows for 90 % power within 1.5x the oracle's
CAUGHT_WITHIN = 5  # issue #14: -2 pp caught within 5 shadow looks (of labels: a delay postpones every test alike)


@dataclass(frozen=True)
class QualityScenario:
    design: str  # "shadow" (100 % mirror, paired) or "canary" (10 %, unpaired)
    delay: int  # looks between a request and its label
    effect: float  # accuracy points the candidate loses (0: A/A)

    @property
    def name(self) -> str:
        step = "shadow 100% mirror" if self.design == "shadow" else "canary 10%"
        what = "A/A" if not self.effect else f"-{self.effect * 100:g}pp"
        return f"quality {what} ({step}, labels {self.delay} looks late)"

    @property
    def targets(self) -> dict[str, float]:
        if not self.effect:
            return {"false_rollback_max": 0.05, "harm_by_last_max": 0.05}
        out = {"promote_max": 0.05, "oracle_ratio_max": ORACLE_TIMES}
        if self.design == "shadow" and self.effect == 0.02:
            out["caught_min"] = 0.90
        return out


def quality_scenarios() -> list[QualityScenario]:
    return [QualityScenario(d, delay, e) for d in DESIGNS for delay in DELAYS for e in EFFECTS]


def _with_labels(snap: dict[str, Any], counts: dict[str, npt.NDArray[np.float64]], run: int, sub: int,
                 design: str) -> dict[str, Any]:  # fmt: skip
    """The snapshot with the labelled rows the gateway counted by then: shadow, the pairs (and stable's own
    labelled rows; the candidate answered no client); canary, each track's labelled and wrong rows."""

    def at(key: str) -> int:
        return int(counts[key][run, sub])

    if design == "shadow":
        pairs = {key: at(key) for key in ("both_right", "both_wrong", "stable_only", "candidate_only")}
        snap["pairs"] = pairs
        snap["stable"]["labels"] = {"labelled": sum(pairs.values()),
                                    "incorrect": pairs["both_wrong"] + pairs["candidate_only"]}  # fmt: skip
        snap["candidate"]["labels"] = {"labelled": 0, "incorrect": 0}
    else:
        for track in ("stable", "candidate"):
            snap[track]["labels"] = {"labelled": at(f"{track}_labelled"), "incorrect": at(f"{track}_incorrect")}
    return snap


def run_quality_judge(sc: QualityScenario, counts: dict[str, npt.NDArray[np.float64]], seeds: int, looks: int,
                      seed: int) -> list[Outcome]:  # fmt: skip
    """``judge()`` with quality on, at every look of the first ``seeds`` runs, stopping at the first promote or
    rollback. The other families see an A/A canary (1 % errors, equal latencies and classes): the alpha
    split is the default one, and their own false alarms count as the operator's."""
    backdrop = Scenario(sc.name, "aa")
    inc = simulate(backdrop, seeds, looks, np.random.default_rng([seed, zlib.crc32(sc.name.encode())]))
    cum = {t: {k: np.cumsum(v, axis=1) for k, v in d.items()} for t, d in inc.items()}
    outcomes: list[Outcome] = []
    for run in range(seeds):
        verdict, look = "continue", looks
        for t in range(looks):
            snap = _with_labels(_snapshot(cum, run, t, backdrop.share), counts, run, (t + 1) * SUB - 1, sc.design)
            v = str(judge(parse_snapshot(snap), QUALITY_POLICY).verdict)
            if v in ("promote", "rollback"):
                verdict, look = v, t + 1
                break
        outcomes.append((verdict, look, None))
    return outcomes


def check_quality_alpha(harm_alpha: float) -> None:
    """quality_power.py's alpha share (its DEFAULT_TESTS) is the one ``judge`` gives quality.harm here."""
    backdrop = Scenario("alpha", "aa")
    inc = simulate(backdrop, 1, 1, np.random.default_rng(0))
    counts = {"stable_labelled": np.ones((1, 1)), "stable_incorrect": np.zeros((1, 1)),
              "candidate_labelled": np.ones((1, 1)), "candidate_incorrect": np.zeros((1, 1))}  # fmt: skip
    snap = parse_snapshot(_with_labels(_snapshot(inc, 0, 0), counts, 0, 0, "canary"))
    share = alpha_shares(snap, QUALITY_POLICY)["quality.harm"]
    assert math.isclose(share, harm_alpha), (share, harm_alpha)


def quality_row(sc: QualityScenario, seeds: int, looks: int, seed: int) -> dict[str, Any]:
    """One quality scenario: the operator's verdicts on ``seeds`` runs, and quality_power.py's row (the harm
    e-process, the repeated fixed-sample test, the oracle) on ``ACCURACY_RUNS_PER_RUN`` times as many runs of
    the same draws (the first ``seeds`` are the judged ones)."""
    power, counts = accuracy_row(sc.design, sc.delay, sc.effect, ACCURACY_RUNS_PER_RUN * seeds, seed, looks)
    check_quality_alpha(power["alpha"])
    outcomes = run_quality_judge(sc, counts, seeds, looks, seed)
    ours = summarise("ours", outcomes)
    caught_by = sc.delay + CAUGHT_WITHIN
    ours["rollback_within_5_labelled_looks"] = sum(v == "rollback" and t <= caught_by for v, t, _ in outcomes) / seeds
    row = {"scenario": sc.name, "config": asdict(sc) | {"base_accuracy": BASE, "labelled": LABELLED},
           "judges": {"ours": ours}, "harm_test": power}  # fmt: skip
    row["missed"] = check_quality_targets(sc, row, looks)
    return row


def check_quality_targets(sc: QualityScenario, row: dict[str, Any], looks: int) -> list[str]:
    """Which of issue #14's goals the row missed: false rollbacks (the verdict, and the harm test alone over
    ``ACCURACY_RUNS_PER_RUN`` times the runs), promotions of a worse model, -2 pp caught within 5 shadow
    looks of labels, the labelled rows for 90 % power within 1.5x the oracle's (unmeasured when the oracle
    or ours needs more than the looks simulated: a miss too)."""
    t, ours, power = sc.targets, row["judges"]["ours"], row["harm_test"]
    missed = []
    if "false_rollback_max" in t and ours["rollback_rate"] > t["false_rollback_max"]:
        missed.append(f"false rollback {ours['rollback_rate']:.1%} > {t['false_rollback_max']:.0%}")
    harm = power[f"ours_by_{looks}"]
    if "harm_by_last_max" in t and harm > t["harm_by_last_max"]:
        missed.append(f"harm test fired by look {looks} in {harm:.1%} > {t['harm_by_last_max']:.0%}")
    if "promote_max" in t and ours["promote_rate"] > t["promote_max"]:
        missed.append(f"promoted {ours['promote_rate']:.1%} > {t['promote_max']:.0%}")
    if "caught_min" in t:
        for what, rate in (("verdict", ours["rollback_within_5_labelled_looks"]),
                           ("harm test", _within(power, sc.delay + CAUGHT_WITHIN))):  # fmt: skip
            if rate is None or rate < t["caught_min"]:
                missed.append(f"{what}: caught within {CAUGHT_WITHIN} looks of labels in {_fmt(rate)} < 90%")
    if "oracle_ratio_max" in t:
        ratio = power["ratio"]
        if ratio is None:
            reached = "ours" if power["oracle_rows_90"] else "the oracle"
            missed.append(f"labelled rows vs oracle unmeasured: {reached} not at 90 % power within {looks} looks")
        elif ratio > t["oracle_ratio_max"]:
            missed.append(f"labelled rows {ratio:.2f}x the oracle's > {t['oracle_ratio_max']:g}x")
    return missed


def _within(power: dict[str, Any], look: int) -> float | None:
    """The harm test's share of runs fired by ``look`` (None beyond the looks simulated)."""
    by_look: list[float] = power["ours_by_look"]
    return by_look[look - 1] if look <= len(by_look) else None


def quality_table(rows: list[dict[str, Any]], looks: int) -> str:
    """Markdown table: per quality scenario, the operator's verdicts and the harm test against the oracle."""
    lines = [
        "| scenario | ours (judge): rollback / promote / undecided | median looks | rolled back within 5 looks of "
        f"labels: judge / harm test | harm test / naive (repeated test) fired by look {looks} | 90 % power at look: "
        "ours / oracle | labelled rows at 90 % power: oracle | ours / oracle (goal <= 1.5x) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        r, h = row["judges"]["ours"], row["harm_test"]
        mark = " ✅" if not row["missed"] else " ❌"
        effect = bool(h["effect_pp"])
        within = (
            "-"
            if not effect
            else f"{_fmt(r['rollback_within_5_labelled_looks'])} / "
            + _fmt(_within(h, row["config"]["delay"] + CAUGHT_WITHIN))
        )
        power_at = "-" if not effect else f"{h['ours_look_90'] or f'>{looks}'} / {h['oracle_look_90'] or f'>{looks}'}"
        oracle = "-" if not effect else (f"{h['oracle_rows_90']:.0f}" if h["oracle_rows_90"] else f">{looks} looks")
        ratio = "-" if not effect else (f"{h['ratio']:.2f}x" if h["ratio"] else "unmeasured")
        lines.append(
            f"| {row['scenario']}{mark} | {_fmt(r['rollback_rate'])} / {_fmt(r['promote_rate'])} / "
            f"{_fmt(r['undecided_rate'])} | {_fmt(r['median_looks_to_decision'], pct=False)} | {within} | "
            f"{_fmt(h[f'ours_by_{looks}'])} / {_fmt(h[f'naive_by_{looks}'])} | {power_at} | {oracle} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seeds", type=int, default=200, help="simulated rollouts per scenario (default 200)")
    p.add_argument("--looks", type=int, default=20, help="looks per rollout, one per minute (default 20)")
    p.add_argument("--seed", type=int, default=20261126, help="random seed of the whole run")
    p.add_argument("--only", nargs="*", default=None, help="run only scenarios whose name contains one of these")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rows = []
    started = time.monotonic()
    for sc in scenarios():
        if args.only and not any(o.lower() in sc.name.lower() for o in args.only):
            continue
        # one stream per scenario, so `--only` reproduces exactly the rows of the full run
        rng = np.random.default_rng([args.seed, zlib.crc32(sc.name.encode())])
        inc = simulate(sc, args.seeds, args.looks, rng)
        cum = {t: {k: np.cumsum(v, axis=1) for k, v in d.items()} for t, d in inc.items()}
        judges = {
            j: summarise(j, run_judge(j, sc, cum, inc, args.seeds, args.looks)) for j in ("ours", "flagger", "kayenta")
        }
        row = {"scenario": sc.name, "config": asdict(sc), "judges": judges, "missed": check_targets(sc, judges["ours"])}
        rows.append(row)
        print(f"{sc.name}: ours {judges['ours']}  missed={row['missed']}", file=sys.stderr, flush=True)
    quality_rows = []
    for qs in quality_scenarios():
        if args.only and not any(o.lower() in qs.name.lower() for o in args.only):
            continue
        quality_rows.append(quality_row(qs, args.seeds, args.looks, args.seed))
        print(f"{qs.name}: {quality_rows[-1]['judges']['ours']}  missed={quality_rows[-1]['missed']}", file=sys.stderr,
              flush=True)  # fmt: skip
    doc = {
        "seeds": args.seeds,
        "looks": args.looks,
        "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
        "python": platform.python_version(),
        "rows": rows,
        "quality": quality_rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(rows))
    print("\n" + quality_table(quality_rows, args.looks))
    missed = [f"{r['scenario']}: {m}" for r in rows + quality_rows for m in r["missed"]]
    print("\nall targets met" if not missed else "\ntargets missed:\n" + "\n".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
