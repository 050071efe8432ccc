"""Model quality from ground truth: labels joined to the predictions each track served.

Two designs, each step's fixed by its configuration before any label (``design``: paired where the step
mirrors, unpaired in a canary; docs/analysis.md, "Quality"), never by what its counts hold:

- **Paired (shadow steps).** Every labelled request was answered by both models (the client's answer by
  stable, the mirrored copy by the candidate), so one label scores both. Only discordant pairs carry
  information about which model is better: ``stable_only`` (stable right, candidate wrong) and
  ``candidate_only``. Under "the candidate is no worse" a discordant pair favours stable with probability at
  most 1/2, so a conditional binomial mixture e-process applies with share 1/2: a sequential McNemar test.
  The mixture is a fixed one over likelihood ratios at odds ratios x1.36, x1.8 and x6.7, with a twentieth on
  the error-rate test's Beta prior (``grid_harm_log_e``, ``QUALITY_PAIRED``). The paired difference of
  accuracies has per-row values in {-1, 0, 1}, whose mean and variance come from the pair counts; a
  normal-mixture confidence sequence bounds it.
- **Unpaired (canary steps).** Each track answered its own requests. An incorrect labelled row comes from
  the candidate with probability at most the candidate's share of labelled rows when it is no worse: the
  error-rate harm test's conditioning, on labelled rows, with a mixture of its own (``QUALITY_UNPAIRED``:
  the same accuracy drop is a smaller odds ratio here). The difference of accuracies is bounded like the
  error-rate difference.

Regressors (``mae``): per-row absolute errors, each clipped at the policy's ``errorBound`` ``B``
(``min(|error|, B)``, in ``[0, B]``): the tests are about the *clipped* MAE, because no test of a mean is valid
in finite samples for unbounded data (one unseen huge error can move the mean anywhere; Bahadur & Savage
1956). Below ``B`` nothing changes; a row beyond it counts as ``B``. Harm is a betting e-process on bounded
rows (``bounded_mean_log_e``; Fan et al. 2015, Howard et al. 2021, Waudby-Smith & Ramdas 2023), valid at
every sample size whatever the shape within the bound (for independent rows: docs/analysis.md, "Assumptions"),
from running sums only:

- paired (shadow): each row's ``min(|e_c|, B) - min(|e_s|, B)`` in ``[-B, B]``;
- unpaired (canary): each track's clipped errors in ``[0, B]``; for a common level ``m`` the candidate's
  e-process against "MAE_c <= m" times stable's against "MAE_s >= m" is a test supermartingale, and under
  the null some ``m`` lies between the two MAEs, so the infimum over ``m`` is an e-process
  (``bounded_two_sample_log_e``). It needs no traffic share and pays each track's own spread.

Non-inferiority bounds the clipped difference with the matching confidence sequences (``bounded_mean_cs``):
paired, on the per-row difference; unpaired, the candidate's upper bound minus stable's lower bound, each at
half the level. The asymptotic normal-mixture tests these replace rolled back 19 % (paired) and 83 %
(unpaired) of candidates a hair worse on 99.9 % of rows and far better on 0.1 % (equal MAEs) against
1.25 % allowed; these stay within alpha on any bounded rows (``bench/quality_power.py``). Not a sign test
on which model was closer: that asks a different question (a candidate a little worse on most rows and far
better on the rest has the lower MAE and is closer less often), so it would roll back a better model.

Rows of the other design are not used, and said so in ``quality.harm``'s reason: in a paired step, labelled
rows the candidate served to clients (answers served under the previous canary step's table, before the
gateway loaded this step's: they count in this step, ``counts_in_step``); in an unpaired one, pairs. Chosen by
whether pairs exist, the unpaired test ran on those few rows until the first pair: a second chance at the
alpha share (``bench/quality_design_race.py``).

A row a model gave no prediction for (NaN, no class, a request it failed that a fallback answered, a
failed shadow copy) is in these counts as a wrong answer, or an error of ``B``: the gateway counts it
against the model that was asked, so a model failing on hard rows is not judged on the rest only.

Labels arrive late and for some requests only; routing is random, so the comparison stays fair while both
tracks face the same label process. It does not when a label's delay differs by track and the error rate
drifts within the step (the unpaired test's labelled rows then come from other minutes per track), nor,
drift or not, when the delay depends on the answer (an action taken on it yields the truth sooner) and the
models answer differently: the rows labelled first are then right more or less often than the rest of their
track. Nor, in either design, when it depends on the outcome: the accuracy *levels* are then biased, and in
a shadow step a label that comes later when the served (stable's) answer was wrong delays one kind of
discordant pair only, which reads as harm (docs/analysis.md, "Labels that differ by track"; a canary's test
stayed within alpha when wrong answers' labels came later alike on both tracks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mlrollout.analysis.result import harm_decision, metric_result, non_inferiority_decision
from mlrollout.analysis.sequential import (
    QUALITY_PAIRED,
    QUALITY_UNPAIRED,
    beta_mixture_proportion_cs,
    bounded_mean_cs,
    bounded_mean_log_e,
    bounded_two_sample_log_e,
    gaussian_mixture_cs,
    grid_harm_log_e,
    log_to_e,
)
from mlrollout.analysis.snapshot import Labels, Pairs
from mlrollout.api.analysis import MetricResult, QualityDesign
from mlrollout.api.rolloutpolicy import Margin
from mlrollout_serving.contract.metrics import DEFAULT_ERROR_BOUND

__all__ = ["Labels", "Pairs", "QualitySettings", "paired_mae_log_e", "quality_results", "unpaired_mae_log_e"]

HARM_PAIRED = "sequential McNemar: conditional binomial mixture SPRT on discordant pairs"
HARM_UNPAIRED = "conditional binomial mixture SPRT on incorrect labelled rows (one-sided)"
HARM_MAE_PAIRED = "betting e-process on the paired clipped-error difference (finite-sample)"
NI_PAIRED = "normal-mixture confidence sequence on the paired difference"
NI_UNPAIRED = "normal-mixture confidence sequence on the difference"
HARM_MAE_UNPAIRED = "two-sample betting e-process on the clipped errors (finite-sample)"
NI_MAE_PAIRED = "empirical-Bernstein confidence sequence on the paired clipped-error difference"
NI_MAE_UNPAIRED = "empirical-Bernstein confidence sequences on each clipped MAE"


@dataclass(frozen=True)
class QualitySettings:
    metric: Literal["accuracy", "mae"]
    alpha_harm: float
    alpha_promote: float
    margin: Margin
    min_labels: int
    carry: Callable[[float], float] = float  # the step's e-value -> the rollout's (carry.py); alone: itself
    error_bound: float = DEFAULT_ERROR_BOUND  # mae: each row's absolute error is clipped here

    @property
    def alpha_difference(self) -> float:
        """The level of the difference's confidence sequence: all of the promotion alpha for an absolute
        margin; half when the margin scales with stable's level, whose bound takes the other half."""
        return self.alpha_promote if self.margin.scale == 0 else self.alpha_promote / 2

    @property
    def alpha_level(self) -> float:
        return self.alpha_promote - self.alpha_difference


def _margin(s: QualitySettings, stable_bound: Callable[[float], float]) -> float:
    """The margin at stable's level bounded from the side that makes it smaller (``stable_bound(alpha)``:
    a lower bound of stable's accuracy or MAE at that level). The margin grows with the level, so when the
    bound holds the margin used is at most the one at stable's true level: non-inferiority stays valid,
    which plugging in stable's estimate would not be (docs/analysis.md, "Margins")."""
    if s.margin.scale == 0:
        return s.margin.least
    return s.margin.allowed(max(stable_bound(s.alpha_level), 0.0))


def _accuracy_lower(correct: int, n: int) -> Callable[[float], float]:
    return lambda alpha: beta_mixture_proportion_cs(correct, n, alpha).lo if n else 0.0


def _mae_lower(labels: Labels, bound: float) -> Callable[[float], float]:
    """A lower bound of stable's clipped MAE from its labelled rows (none: 0, so the margin is the floor)."""
    if not labels.labelled or labels.clipped_sum is None:
        return lambda alpha: 0.0
    n, total, total_sq = labels.labelled, labels.clipped_sum, labels.clipped_sumsq or 0.0
    return lambda alpha: bounded_mean_cs(n, total, total_sq, 0.0, bound, alpha).lo


def _pp(x: float) -> str:
    return f"{x * 100:+.2f} pp"


def quality_results(
    stable: Labels, candidate: Labels, pairs: Pairs | None, s: QualitySettings, *, design: QualityDesign
) -> list[MetricResult]:
    """``quality.harm`` and ``quality.nonInferiority`` in the step's design: paired on ``pairs`` (waiting until
    the first), unpaired on each track's labelled rows. One e-process per step, never the other as well."""
    if design == "paired":
        results, unused = _paired(stable, pairs or Pairs(), s), candidate.labelled
        note = f"{unused} {UNUSED_ROWS}"
    else:
        results, unused = _unpaired(stable, candidate, s), pairs.rows if pairs is not None else 0
        note = f"{unused} {UNUSED_PAIRS}"
    if not unused:
        return results
    return [r.model_copy(update={"reason": f"{r.reason}; {note}"}) if r.name == "quality.harm" else r
            for r in results]  # fmt: skip


UNUSED_ROWS = (
    "labelled rows the candidate served to clients before the gateway loaded this step's route table are not used"
)
UNUSED_PAIRS = "labelled pairs are not used (a step that does not mirror is judged on each track's rows)"
NO_PAIRS = "no labelled pairs yet (a step that mirrors is judged on pairs)"


def _paired(stable: Labels, pairs: Pairs, s: QualitySettings) -> list[MetricResult]:
    if not pairs.rows:
        return _waiting(NO_PAIRS, (0.0, 0.0))
    if s.metric == "accuracy":
        return _accuracy_paired(pairs, s)
    sums: list[float | None] = [stable.clipped_sum, stable.clipped_sumsq] if stable.labelled else []
    sums += [pairs.stable_clipped_sum, pairs.candidate_clipped_sum, pairs.clipped_diff_sumsq]
    return _mae_unusable(s, sums, (float(pairs.rows), float(pairs.rows))) or _mae_paired(pairs, stable, s)


def _unpaired(stable: Labels, candidate: Labels, s: QualitySettings) -> list[MetricResult]:
    if s.metric == "accuracy":
        return _accuracy_unpaired(stable, candidate, s)
    sums: list[float | None] = [stable.clipped_sum, stable.clipped_sumsq] if stable.labelled else []
    sums += [candidate.clipped_sum, candidate.clipped_sumsq] if candidate.labelled else []
    samples = (float(stable.labelled), float(candidate.labelled))
    return _mae_unusable(s, sums, samples) or _mae_unpaired(stable, candidate, s)


def _mae_unusable(s: QualitySettings, sums: list[float | None], samples: tuple[float, float]) -> list[MetricResult]:
    """Why the MAE tests cannot run on these sums (waiting results), or nothing when they can."""
    if not (math.isfinite(s.error_bound) and s.error_bound > 0):
        return _waiting(f"the error bound {s.error_bound!r} is not a positive number", (0.0, 0.0))
    if any(x is None for x in sums):
        return _waiting(NO_CLIPPED_SUMS, samples)
    if not all(math.isfinite(x) for x in sums if x is not None):
        # NaN compares false with every threshold: the harm test would pass and the interval say nothing; a
        # gateway's sums turn NaN or Inf only by a bug or a series from elsewhere, so no evidence either way
        return _waiting("the absolute-error sums are not finite (NaN or Inf): no evidence either way", (0.0, 0.0))
    return []


NO_CLIPPED_SUMS = (
    "the gateway exports no clipped absolute-error sums at this error bound (a gateway older than the "
    "finite-sample MAE tests, or a bound not in the contract's CLIP_BOUNDS): no evidence either way"
)


def _waiting(reason: str, samples: tuple[float, float]) -> list[MetricResult]:
    return [
        metric_result(n, "inconclusive", reason, samples=samples) for n in ("quality.harm", "quality.nonInferiority")
    ]


def _accuracy_paired(p: Pairs, s: QualitySettings) -> list[MetricResult]:
    n = p.rows
    samples = (float(n), float(n))
    acc_s, acc_c = (p.both_right + p.stable_only) / n, (p.both_right + p.candidate_only) / n
    discordant = p.stable_only + p.candidate_only
    # harm: a discordant pair favours stable (the candidate is worse on it) with probability <= 1/2 under H0
    e_value = s.carry(log_to_e(grid_harm_log_e(p.stable_only, discordant, 0.5, QUALITY_PAIRED)))
    harm, threshold = harm_decision(e_value, s.alpha_harm)
    effect = acc_c - acc_s
    variance = max(discordant / n - effect * effect, 1.0 / (n + 1)) / n
    margin = _margin(s, _accuracy_lower(p.both_right + p.stable_only, n))
    cs = gaussian_mixture_cs(effect, variance, s.alpha_difference, (max(margin, 1e-3) / 2.0) ** 2)
    interval = (max(cs.lo, -1.0), min(cs.hi, 1.0))
    return _accuracy_pair_of_results(harm, threshold, e_value, effect, interval, margin, (acc_s, acc_c), samples,
                                     n >= s.min_labels, s, paired=True)  # fmt: skip


def _accuracy_unpaired(stable: Labels, candidate: Labels, s: QualitySettings) -> list[MetricResult]:
    samples = (float(stable.labelled), float(candidate.labelled))
    if not stable.labelled or not candidate.labelled:
        which = "stable" if not stable.labelled else "the candidate"
        return _waiting(f"no labelled rows for {which} yet", samples)
    acc_s = 1.0 - stable.incorrect / stable.labelled
    acc_c = 1.0 - candidate.incorrect / candidate.labelled
    share = candidate.labelled / (candidate.labelled + stable.labelled)
    wrong = candidate.incorrect + stable.incorrect
    e_value = s.carry(log_to_e(grid_harm_log_e(candidate.incorrect, wrong, share, QUALITY_UNPAIRED)))
    harm, threshold = harm_decision(e_value, s.alpha_harm)
    effect = acc_c - acc_s

    def smoothed(wrong: int, n: int) -> float:
        return (wrong + 0.5) / (n + 1.0)

    ws, wc = smoothed(stable.incorrect, stable.labelled), smoothed(candidate.incorrect, candidate.labelled)
    variance = ws * (1 - ws) / stable.labelled + wc * (1 - wc) / candidate.labelled
    margin = _margin(s, _accuracy_lower(stable.labelled - stable.incorrect, stable.labelled))
    cs = gaussian_mixture_cs(effect, variance, s.alpha_difference, (max(margin, 1e-3) / 2.0) ** 2)
    interval = (max(cs.lo, -1.0), min(cs.hi, 1.0))
    enough = min(stable.labelled, candidate.labelled) >= s.min_labels
    return _accuracy_pair_of_results(harm, threshold, e_value, effect, interval, margin, (acc_s, acc_c), samples,
                                     enough, s, paired=False)  # fmt: skip


def _accuracy_pair_of_results(
    harm: Literal["pass", "fail"], threshold: float, e_value: float, effect: float, interval: tuple[float, float],
    margin: float, estimate: tuple[float, float], samples: tuple[float, float], enough: bool, s: QualitySettings,
    paired: bool,
) -> list[MetricResult]:  # fmt: skip
    """The two accuracy results in the words the seed asks for: better by X [interval], no worse than -m, worse."""
    acc_s, acc_c = estimate
    lo, hi = interval
    ni = non_inferiority_decision(-lo, margin, enough)
    if lo > 0:
        effect_text = f"better by {_pp(effect)} [{_pp(lo)}, {_pp(hi)}]"
    elif ni == "pass":
        effect_text = f"no worse than {_pp(-margin)} ({_pp(effect)} [{_pp(lo)}, {_pp(hi)}])"
    else:
        effect_text = f"{_pp(effect)} [{_pp(lo)}, {_pp(hi)}] not yet within {_pp(-margin)}" + (
            "" if enough else f" (fewer than {s.min_labels} labelled rows)"
        )
    accuracy = f"accuracy {acc_c:.2%} vs stable {acc_s:.2%}"
    return [
        metric_result(
            "quality.harm",
            harm,
            f"worse: {accuracy} (e-value >= {threshold:.0f})"
            if harm == "fail"
            else f"no evidence it is worse: {accuracy}",
            test=HARM_PAIRED if paired else HARM_UNPAIRED,
            samples=samples,
            estimate=estimate,
            effect=effect,
            interval=interval,
            e_value=e_value,
            threshold=threshold,
        ),
        metric_result(
            "quality.nonInferiority",
            ni,
            f"{accuracy}: {effect_text}",
            test=NI_PAIRED if paired else NI_UNPAIRED,
            samples=samples,
            estimate=estimate,
            effect=effect,
            interval=interval,
            threshold=-margin,
        ),
    ]


def paired_mae_log_e(p: Pairs, bound: float) -> float:
    """The paired harm e-process: rows ``min(|e_c|, B) - min(|e_s|, B)`` in ``[-B, B]``, mean <= 0 when the
    candidate is no worse, so :func:`bounded_mean_log_e` with floor ``-B``."""
    total = (p.candidate_clipped_sum or 0.0) - (p.stable_clipped_sum or 0.0)
    return bounded_mean_log_e(p.rows, total, p.clipped_diff_sumsq or 0.0, 0.0, -bound)


def unpaired_mae_log_e(stable: Labels, candidate: Labels, bound: float) -> float:
    """The unpaired harm e-process: each track's clipped errors in ``[0, B]``, against "the candidate's clipped
    MAE is at most stable's" (:func:`bounded_two_sample_log_e`: the infimum over a common level of the two
    one-sample e-processes' product)."""
    return bounded_two_sample_log_e(
        candidate.labelled, candidate.clipped_sum or 0.0, candidate.clipped_sumsq or 0.0,
        stable.labelled, stable.clipped_sum or 0.0, stable.clipped_sumsq or 0.0, bound,
    )  # fmt: skip


def _mae_paired(p: Pairs, stable: Labels, s: QualitySettings) -> list[MetricResult]:
    n, bound = p.rows, s.error_bound
    samples = (float(n), float(n))
    total_s, total_c = p.stable_clipped_sum or 0.0, p.candidate_clipped_sum or 0.0
    mae_s, mae_c = total_s / n, total_c / n
    total, total_sq = total_c - total_s, p.clipped_diff_sumsq or 0.0
    e_value = s.carry(log_to_e(paired_mae_log_e(p, bound)))
    harm, threshold = harm_decision(e_value, s.alpha_harm)
    margin = _margin(s, _mae_lower(stable, bound))  # stable answered every client request of the step
    cs = bounded_mean_cs(n, total, total_sq, -bound, bound, s.alpha_difference)
    return _mae_pair_of_results(harm, threshold, e_value, total / n, (cs.lo, cs.hi), margin, (mae_s, mae_c),
                                samples, n >= s.min_labels, s, HARM_MAE_PAIRED, NI_MAE_PAIRED)  # fmt: skip


def _mae_unpaired(stable: Labels, candidate: Labels, s: QualitySettings) -> list[MetricResult]:
    samples = (float(stable.labelled), float(candidate.labelled))
    if not stable.labelled or not candidate.labelled:
        which = "stable" if not stable.labelled else "the candidate"
        return _waiting(f"no labelled rows for {which} yet", samples)
    bound, n_s, n_c = s.error_bound, stable.labelled, candidate.labelled
    s1, s2 = stable.clipped_sum or 0.0, stable.clipped_sumsq or 0.0
    c1, c2 = candidate.clipped_sum or 0.0, candidate.clipped_sumsq or 0.0
    mae_s, mae_c = s1 / n_s, c1 / n_c
    diff = mae_c - mae_s
    # non-inferiority: each track's clipped MAE in [0, B], half the level each (a union bound)
    cs_s = bounded_mean_cs(n_s, s1, s2, 0.0, bound, s.alpha_difference / 2)
    cs_c = bounded_mean_cs(n_c, c1, c2, 0.0, bound, s.alpha_difference / 2)
    interval = (cs_c.lo - cs_s.hi, cs_c.hi - cs_s.lo)
    margin = _margin(s, _mae_lower(stable, bound))
    enough = min(n_s, n_c) >= s.min_labels
    e_value = s.carry(log_to_e(unpaired_mae_log_e(stable, candidate, bound)))
    harm, threshold = harm_decision(e_value, s.alpha_harm)
    return _mae_pair_of_results(harm, threshold, e_value, diff, interval, margin, (mae_s, mae_c), samples,
                                enough, s, HARM_MAE_UNPAIRED, NI_MAE_UNPAIRED)  # fmt: skip


def _mae_pair_of_results(
    harm: Literal["pass", "fail"], threshold: float, e_value: float | None, diff: float, interval: tuple[float, float],
    margin: float, estimate: tuple[float, float] | None, samples: tuple[float, float], enough: bool,
    s: QualitySettings, harm_test: str, ni_test: str,
) -> list[MetricResult]:  # fmt: skip
    lo, hi = interval
    ni = non_inferiority_decision(hi, margin, enough)
    if hi < 0:
        effect_text = f"better: MAE lower by {-diff:.4g} [{-hi:.4g}, {-lo:.4g}]"
    elif ni == "pass":
        effect_text = f"no worse than +{margin:.4g} (MAE {diff:+.4g} [{lo:+.4g}, {hi:+.4g}])"
    else:
        effect_text = f"MAE {diff:+.4g} [{lo:+.4g}, {hi:+.4g}] not yet within +{margin:.4g}" + (
            "" if enough else f" (fewer than {s.min_labels} labelled rows)"
        )
    return [
        metric_result(
            "quality.harm",
            harm,
            {
                "fail": f"worse: MAE (errors clipped at {s.error_bound:g}) higher by {diff:.4g}",
                "pass": f"no evidence it is worse (MAE {diff:+.4g}, errors clipped at {s.error_bound:g})",
            }[harm],
            test=harm_test,
            samples=samples,
            estimate=estimate,
            effect=diff,
            interval=interval,
            e_value=e_value,
            threshold=threshold if e_value is not None else 0.0,
        ),
        metric_result(
            "quality.nonInferiority",
            ni,
            effect_text,
            test=ni_test,
            samples=samples,
            estimate=estimate,
            effect=diff,
            interval=interval,
            threshold=margin,
        ),
    ]
