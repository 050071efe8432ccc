"""Canary quality when the tracks' labels arrive differently: the product's ``quality.harm`` (unpaired accuracy).

``_accuracy_unpaired`` conditions the cumulative wrong labelled rows on the candidate's cumulative share of
labelled rows (``grid_harm_log_e`` with ``QUALITY_UNPAIRED``). That needs each labelled row, of either track,
to have been wrong with the same probability under "the candidate is no worse". Routing is random, so the
tracks serve the same traffic; but when the label's delay or chance depends on the track (on the
prediction: a model whose answer triggers an action that yields the truth sooner) and the error rate
drifts within the step, one track's labelled rows come from other minutes than the other's.

One canary step: 100 requests/s, one look a minute, 60 looks, the candidate at ``share`` (10 % and 50 %) of
the requests; each track's answers served in look ``s`` labelled with chance 30 % (``chance``), the label
arriving ``delay`` looks later (deterministic: the extreme of a delay difference), counted only in this step
(the gateway's ``counts_in_step``: only answers served since the step started). 90 % base accuracy; stable's
rows are wrong with probability 10 % times the look's scale, the candidate's ``10 % + effect`` times it
(``effect`` 0: A/A); with drift the scale is x0.6 at the step's start to x1.4 at its end, linear in time.

Conditions (``CONDITIONS``): ``a`` control (equal delays, no drift); ``b+k`` the candidate's labels ``k``
looks later than stable's, no drift; ``b-k`` stable's ``k`` looks later; ``c`` drift only; ``d+k`` / ``d-k``
both; ``e`` drift and the candidate's rows labelled with chance 15 % against stable's 30 %; ``f`` / ``f0``
(outcome-dependent, not track-dependent) the labels of *wrong* answers 5 looks later than right ones', on
both tracks, with and without drift; ``g-k`` / ``g+k`` drift and random delays: each row's label delay
geometric (a chance ``1 / (k + 1)`` of arriving each look) with mean ``k`` looks for stable (``g-``) or the
candidate (``g+``), the other track's at once.

Tests, each at ``quality.harm``'s alpha share under the default policy (1.25 %):

- ``product``: ``grid_harm_log_e`` with the product's share rule and ``QUALITY_UNPAIRED`` on the counts
  arrived by each look (the array version ``quality_power.grid_log_e``, checked against the product's
  functions by ``quality_power.check``; the Beta share is computed wherever the generalised likelihood
  ratio bound says it could matter); at every run's first rollback, and the look before it, the product's
  ``quality_results`` is called on the same counts and must agree (``product_disagreements``);
- ``naive``: the one-sided pooled two-proportion z-test at level 1.25 %, repeated at every look;
- ``increment``: ``label_strata.increment_log_e`` (each look's new wrong rows against its new labelled share);
- ``stratified``: ``label_strata.stratified_log_e``, strata by the look that served the answer, closed at the
  condition's largest delay (``close``; known here, a policy setting in a product), at 10 looks for ``g``
  (labels later than that are not counted; ``strata_labelled_by_60_*``: the rows in the strata entered by
  look 60, against ``labelled_by_60_*``, those the product counts).

Shadow (paired, 100 % mirror) under the same conditions: one label scores both models, so a label process
can only be the request's: every pair's label arrives the largest of the two tracks' delays late, with the
candidate's chance; in ``f`` / ``f0`` pairs whose *served* (stable's) answer was wrong come 5 looks later.
The models disagree on 6 % of rows times the scale. ``product``: ``grid_harm_log_e`` with share 1/2 and
``QUALITY_PAIRED`` (checked against ``quality_results`` as above); ``naive``: a one-sided McNemar z-test.

Rows: the share of runs rolled back by look 20 and 60, with binomial standard errors; for the canary the
mean served look of the labelled rows counted by look 60 per track (the time mix the test assumes equal).
A/A rows run ``runs`` rollouts, the power rows (-2 and -5 pp, 10 % share) ``runs / 2``.

Usage: ``python bench/quality_label_delay.py [--runs N]``; writes ``bench/results/quality-label-delay.json``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from label_strata import increment_log_e, stratified_log_e
from mlrollout.analysis.judge import split_alpha
from mlrollout.analysis.quality import Labels, Pairs, QualitySettings, quality_results
from mlrollout.analysis.sequential import QUALITY_PAIRED, QUALITY_UNPAIRED, OddsMixture
from mlrollout.api.rolloutpolicy import Margin
from quality_power import (
    ALPHA,
    BASE,
    DEFAULT_TESTS,
    DISAGREE,
    LABELLED,
    LOOK_SECONDS,
    RPS,
    Array,
    _arrived,
    beta_log_e,
    check,
    first_look,
    glr_log,
    grid_log_e,
)
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "quality-label-delay.json"
LOOKS = 60
SHARES = (0.1, 0.5)
DRIFT = (0.6, 1.4)
POWER_EFFECTS = (0.02, 0.05)
TESTS = ("product", "naive", "increment", "stratified")
PAIRED_TESTS = ("product", "naive")
Fired = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Condition:
    name: str
    drift: bool
    delay_stable: int = 0
    delay_candidate: int = 0
    chance_stable: float = LABELLED
    chance_candidate: float = LABELLED
    wrong_later: int = 0  # the labels of wrong answers this many looks later (both tracks)
    random_delays: bool = False  # each row's delay geometric with the track's delay as its mean
    close_age: int | None = None  # the strata's closing age if not the largest fixed delay

    @property
    def close(self) -> int:
        """The strata's closing age (looks): by default the age by which every label has arrived."""
        if self.close_age is not None:
            return self.close_age
        return max(self.delay_stable, self.delay_candidate) + self.wrong_later


CONDITIONS = (
    Condition("a", False),
    *(Condition(f"b+{k}", False, delay_candidate=k) for k in (1, 5, 10)),
    *(Condition(f"b-{k}", False, delay_stable=k) for k in (1, 5, 10)),
    Condition("c", True),
    *(Condition(f"d+{k}", True, delay_candidate=k) for k in (1, 5, 10)),
    *(Condition(f"d-{k}", True, delay_stable=k) for k in (1, 5, 10)),
    Condition("e", True, chance_candidate=0.15),
    Condition("f0", False, wrong_later=5),
    Condition("f", True, wrong_later=5),
    *(Condition(f"g-{k}", True, delay_stable=k, random_delays=True, close_age=10) for k in (1, 5)),
    Condition("g+5", True, delay_candidate=5, random_delays=True, close_age=10),
)
POWER_CONDITIONS = ("a", "c", "d+5", "d-5", "d+10", "d-10", "e", "g-5", "g+5")


def scale(drift: bool) -> Array:
    """The error scale of the answers served in each look (1..LOOKS), at the look's middle."""
    if not drift:
        return np.ones(LOOKS)
    start, end = DRIFT
    out: Array = start + (end - start) * (np.arange(1, LOOKS + 1) - 0.5) / LOOKS
    return out


Piece = tuple[int, Array, Array]


def _pieces(right: Array, wrong: Array, delay: int, c: Condition, rng: np.random.Generator) -> list[Piece]:
    """The rows served in each look split by their label's delay in looks: ``(delay, right, wrong)``. Fixed
    delays: the wrong rows' labels ``wrong_later`` looks after the right ones'. Random: each row's delay
    geometric with mean ``delay`` (a constant chance ``1 / (delay + 1)`` of arriving each look), the rows
    still waiting after ``LOOKS - 1`` looks put there (they are never counted)."""
    if not c.random_delays:
        return [(delay, right, np.zeros_like(wrong)), (delay + c.wrong_later, np.zeros_like(right), wrong)]
    hazard, pieces = 1.0 / (delay + 1), []
    left_right, left_wrong = right.astype(np.int64), wrong.astype(np.int64)
    for lag in range(LOOKS):
        now_right = rng.binomial(left_right, hazard) if lag < LOOKS - 1 else left_right
        now_wrong = rng.binomial(left_wrong, hazard) if lag < LOOKS - 1 else left_wrong
        pieces.append((lag, now_right.astype(float), now_wrong.astype(float)))
        left_right, left_wrong = left_right - now_right, left_wrong - now_wrong
    return pieces


def _label_arrivals(pieces: list[Piece]) -> tuple[Array, Array]:
    """Cumulative (labelled, wrong) rows arrived by each look."""
    labelled, wrong = np.zeros_like(pieces[0][1]), np.zeros_like(pieces[0][1])
    for lag, right_part, wrong_part in pieces:
        if lag < LOOKS:
            labelled += _arrived(np.cumsum(right_part + wrong_part, axis=1), lag)
            wrong += _arrived(np.cumsum(wrong_part, axis=1), lag)
    return labelled, wrong


def _strata(pieces: list[Piece], close: int) -> tuple[Array, Array]:
    """Per served look, the (labelled, wrong) rows whose label arrived within ``close`` looks."""
    kept = [(r, w) for lag, r, w in pieces if lag <= close]
    labelled: Array = sum((r + w for r, w in kept), np.zeros_like(pieces[0][1]))
    wrong: Array = sum((w for _, w in kept), np.zeros_like(pieces[0][1]))
    return labelled, wrong


def _mean_served_look(pieces: list[Piece]) -> float:
    """The mean served look of the labelled rows counted by the step's last look."""
    looks = np.arange(1, LOOKS + 1)
    counted = sum(((r + w) * (looks <= LOOKS - lag) for lag, r, w in pieces), np.zeros_like(pieces[0][1]))
    return float((counted * looks).sum() / counted.sum())


def _product_fired(k: Array, n: Array, share: Array, usable: Fired, mixture: OddsMixture, bar: float) -> Fired:
    """Where ``grid_harm_log_e`` reaches ``bar``: the Beta share computed only where, bounded by the
    likelihood ratio maximised over shares, it could lift the mixture over the bar."""
    share = np.where(usable, share, 0.5)
    before = glr_log(k, n, share)
    could = usable & (grid_log_e(k, n, share, before, mixture) >= bar)
    if could.any():
        before[could] = beta_log_e(k[could], n[could], share[could])
    out: Fired = usable & (grid_log_e(k, n, share, before, mixture) >= bar)
    return out


def _first(fired: Fired) -> npt.NDArray[np.int64]:
    """Per run, the first look index that fired, -1 if none."""
    out: npt.NDArray[np.int64] = np.where(fired.any(axis=1), fired.argmax(axis=1), -1)
    return out


def _disagreements(fired: Fired, decide: Any) -> int:
    """Runs where the product's own function does not fail at the array version's first rollback or does not
    pass at the look before it (``decide(run, look) -> bool``: the product fails there)."""
    bad = 0
    for run, look in enumerate(_first(fired)):
        if look < 0:
            continue
        bad += int(not decide(run, look)) + int(look > 0 and decide(run, look - 1))
    return bad


def _rates(fired: dict[str, Fired]) -> dict[str, float]:
    out = {}
    runs = next(iter(fired.values())).shape[0]
    for name, hit in fired.items():
        for by in (20, 60):
            p = float(hit[:, :by].any(axis=1).mean())
            out[f"{name}_by_{by}"], out[f"{name}_by_{by}_se"] = p, math.sqrt(p * (1 - p) / runs)
    return out


def canary_row(c: Condition, share: float, effect: float, runs: int, seed: int, alpha: float) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 61, CONDITIONS.index(c), round(share * 100), round(effect * 1000)])
    bar, settings = math.log(1 / alpha), QualitySettings("accuracy", alpha, 0.05, Margin(absolute=0.01), 100)
    sc = scale(c.drift)
    per_look = RPS * LOOK_SECONDS
    tracks = {}
    for name, track_share, chance, delay, rate in (
        ("stable", 1 - share, c.chance_stable, c.delay_stable, 1 - BASE),
        ("candidate", share, c.chance_candidate, c.delay_candidate, 1 - BASE + effect),
    ):
        served = rng.poisson(per_look * track_share * chance, (runs, LOOKS)).astype(float)
        wrong = rng.binomial(served.astype(np.int64), np.minimum(rate * sc, 1.0)).astype(float)
        tracks[name] = _pieces(served - wrong, wrong, delay, c, rng)
    (s_lab, s_wrong_in), (c_lab, c_wrong_in) = (_label_arrivals(tracks[t]) for t in ("stable", "candidate"))
    (s_strata, s_strata_wrong), (c_strata, c_strata_wrong) = (_strata(tracks[t], c.close) for t in tracks)
    all_lab, all_wrong = s_lab + c_lab, s_wrong_in + c_wrong_in
    usable = (s_lab > 0) & (c_lab > 0)
    share_now = c_lab / np.maximum(all_lab, 1)
    fired = {"product": _product_fired(c_wrong_in, all_wrong, share_now, usable, QUALITY_UNPAIRED, bar)}

    def product_fails(run: int, look: int) -> bool:
        stable = Labels(int(s_lab[run, look]), int(s_wrong_in[run, look]))
        candidate = Labels(int(c_lab[run, look]), int(c_wrong_in[run, look]))
        return quality_results(stable, candidate, None, settings, design="unpaired")[0].decision == "fail"

    disagreements = _disagreements(fired["product"], product_fails)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = all_wrong / all_lab
        z = (c_wrong_in / c_lab - s_wrong_in / s_lab) / np.sqrt(pooled * (1 - pooled) * (1 / c_lab + 1 / s_lab))
    fired["naive"] = usable & (pooled > 0) & (pooled < 1) & (np.nan_to_num(z) >= stats.norm.isf(alpha))
    fired["increment"] = increment_log_e(c_wrong_in, all_wrong, c_lab, all_lab, QUALITY_UNPAIRED) >= bar
    strata = stratified_log_e(c_strata_wrong, s_strata_wrong + c_strata_wrong, c_strata, s_strata + c_strata,
                              c.close, QUALITY_UNPAIRED)  # fmt: skip
    fired["stratified"] = strata >= bar
    mix = {name: _mean_served_look(pieces) for name, pieces in tracks.items()}
    return {
        "design": "canary", **asdict(c), "close": c.close, "share": share, "effect": effect, "runs": runs,
        "alpha": alpha, **_rates(fired), "product_disagreements": disagreements,
        "labelled_by_60_stable": float(s_lab[:, -1].mean()), "labelled_by_60_candidate": float(c_lab[:, -1].mean()),
        "strata_labelled_by_60_stable": float(s_strata[:, : LOOKS - c.close].sum(axis=1).mean()),
        "strata_labelled_by_60_candidate": float(c_strata[:, : LOOKS - c.close].sum(axis=1).mean()),
        "mean_served_look_stable": mix["stable"], "mean_served_look_candidate": mix["candidate"],
        "look_90": {name: first_look(hit) for name, hit in fired.items()} if effect else None,
    }  # fmt: skip


def paired_row(c: Condition, runs: int, seed: int, alpha: float) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 62, CONDITIONS.index(c)])
    bar, settings = math.log(1 / alpha), QualitySettings("accuracy", alpha, 0.05, Margin(absolute=0.01), 100)
    half = np.minimum(DISAGREE * scale(c.drift) / 2, 0.5)
    n = rng.poisson(RPS * LOOK_SECONDS * c.chance_candidate, (runs, LOOKS))
    stable_only = rng.binomial(n, half).astype(float)
    candidate_only = rng.binomial(n - stable_only.astype(np.int64), half / (1 - half)).astype(float)
    delay = max(c.delay_stable, c.delay_candidate)
    against = _arrived(np.cumsum(stable_only, axis=1), delay)  # the served (stable's) answer right
    favour = _arrived(np.cumsum(candidate_only, axis=1), delay + c.wrong_later)  # stable's answer wrong
    events = against + favour
    fired = {"product": _product_fired(against, events, np.full_like(events, 0.5), events > 0, QUALITY_PAIRED, bar)}

    def product_fails(run: int, look: int) -> bool:
        pairs = Pairs(both_right=1000, stable_only=int(against[run, look]), candidate_only=int(favour[run, look]))
        return quality_results(Labels(), Labels(), pairs, settings, design="paired")[0].decision == "fail"

    disagreements = _disagreements(fired["product"], product_fails)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.nan_to_num((against - favour) / np.sqrt(events))
    fired["naive"] = (events > 0) & (z >= stats.norm.isf(alpha))
    return {"design": "shadow", **asdict(c), "delay_pairs": delay, "share": 1.0, "effect": 0.0, "runs": runs,
            "alpha": alpha, **_rates(fired), "product_disagreements": disagreements}  # fmt: skip


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    check(np.random.default_rng([seed, 60]))
    started, cpu0, load0 = time.time(), time.process_time(), list(os.getloadavg())
    rows = [canary_row(c, share, 0.0, runs, seed, alpha) for share in SHARES for c in CONDITIONS]
    rows += [paired_row(c, runs, seed, alpha) for c in CONDITIONS if not c.name.startswith(("b-", "d-", "g"))]
    by_name = {c.name: c for c in CONDITIONS}
    rows += [canary_row(by_name[name], SHARES[0], effect, max(runs // 2, 1), seed, alpha)
             for effect in POWER_EFFECTS for name in POWER_CONDITIONS]  # fmt: skip
    meta = {
        "started_utc": _utc(started), "finished_utc": _utc(time.time()), "wall_seconds": time.time() - started,
        "cpu_seconds": time.process_time() - cpu0, "loadavg_start": load0, "loadavg_end": list(os.getloadavg()),
    }  # fmt: skip
    for row in rows:
        row["meta"] = meta
    return rows


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _pct(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2%} ± {row[key + '_se']:.2%}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| design | condition | share | candidate accuracy | product by 20 / 60 | naive by 20 / 60 | increment by 60 | "
        "stratified by 60 | mean served look stable / candidate | 90 % at look (product / stratified) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        canary = r["design"] == "canary"
        lines.append(
            f"| {r['design']} | {r['name']} | {r['share']:.0%} | {-r['effect'] * 100:+.0f} pp | "
            f"{_pct(r, 'product_by_20')} / {_pct(r, 'product_by_60')} | "
            f"{_pct(r, 'naive_by_20')} / {_pct(r, 'naive_by_60')} | "
            + (f"{_pct(r, 'increment_by_60')} | {_pct(r, 'stratified_by_60')} | "
               f"{r['mean_served_look_stable']:.1f} / {r['mean_served_look_candidate']:.1f} | "
               if canary else "- | - | - | ")
            + (f"{r['look_90']['product']} / {r['look_90']['stratified']} |" if canary and r["look_90"] else "- |")
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 2000, argv)


if __name__ == "__main__":
    sys.exit(main())
