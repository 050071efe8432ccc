"""Model quality from ground truth: labels joined to the predictions each track served.

Two designs, chosen by what the step produced (docs/analysis.md, "Quality"):

- **Paired (shadow steps).** Every labelled request was answered by both models (the client's answer by
  stable, the mirrored copy by the candidate), so one label scores both. Only discordant pairs carry
  information about which model is better: ``stable_only`` (stable right, candidate wrong) and
  ``candidate_only``. Under "the candidate is no worse" a discordant pair favours stable with probability at
  most 1/2, so the conditional binomial mixture e-process of the harm tests applies with share 1/2: a
  sequential McNemar test. The paired difference of accuracies has per-row values in {-1, 0, 1}, whose mean
  and variance come from the pair counts; a normal-mixture confidence sequence bounds it.
- **Unpaired (canary steps).** Each track answered its own requests. An incorrect labelled row comes from
  the candidate with probability at most the candidate's share of labelled rows when it is no worse: the
  error-rate harm test, on labelled rows. The difference of accuracies is bounded like the error-rate
  difference.

Regressors (``mae``): per-row absolute errors. Harm is a one-sided normal-mixture e-process on the MAE
difference and non-inferiority its two-sided confidence sequence: paired, on the mean per-row difference of
absolute errors from its running sums; unpaired, on the difference of the two MAEs. Both asymptotic
(Waudby-Smith et al. 2021, time-uniform central limit theory). Not a sign test on which model was closer:
that asks a different question (a candidate a little worse on most rows and far better on the rest has the
lower MAE and is closer less often), so it would roll back a better model; it also needed 3-4x the labels
(``bench/quality_power.py``).

Labels arrive late and for some requests only; both tracks face the same label process because routing
is random, so the comparison stays fair. When the delay or the chance of a label depends on the outcome
(wrong answers get reported more often, say) the accuracy *levels* are biased, though still equally for
both tracks in a paired design; docs/analysis.md says what remains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mlrollout.analysis.result import harm_decision, metric_result, non_inferiority_decision
from mlrollout.analysis.sequential import (
    beta_mixture_proportion_cs,
    gaussian_mixture_cs,
    harm_log_e,
    log_to_e,
    one_sided_normal_mixture_log_e,
)
from mlrollout.analysis.snapshot import Labels, Pairs
from mlrollout.api.analysis import MetricResult
from mlrollout.api.rolloutpolicy import Margin

__all__ = ["Labels", "Pairs", "QualitySettings", "quality_results"]

HARM_PAIRED = "sequential McNemar: conditional binomial mixture SPRT on discordant pairs"
HARM_UNPAIRED = "conditional binomial mixture SPRT on incorrect labelled rows (one-sided)"
HARM_MAE_PAIRED = "one-sided normal-mixture e-process on the paired MAE difference (asymptotic)"
NI_PAIRED = "normal-mixture confidence sequence on the paired difference"
NI_UNPAIRED = "normal-mixture confidence sequence on the difference"
HARM_MAE_UNPAIRED = "one-sided normal-mixture e-process on the MAE difference (asymptotic)"


@dataclass(frozen=True)
class QualitySettings:
    metric: Literal["accuracy", "mae"]
    alpha_harm: float
    alpha_promote: float
    margin: Margin
    min_labels: int
    carry: Callable[[float], float] = float  # the step's e-value -> the rollout's (carry.py); alone: itself

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


def _mae_lower(labels: Labels) -> Callable[[float], float]:
    """A lower bound of stable's MAE from its labelled rows (none: 0, so the margin is the floor)."""
    if not labels.labelled:
        return lambda alpha: 0.0
    mean, variance = _mean_and_variance(labels.abs_error_sum, labels.abs_error_sumsq, labels.labelled)
    return lambda alpha: gaussian_mixture_cs(mean, variance, alpha, _tau2(variance, labels.labelled)).lo


def _pp(x: float) -> str:
    return f"{x * 100:+.2f} pp"


def quality_results(stable: Labels, candidate: Labels, pairs: Pairs | None, s: QualitySettings) -> list[MetricResult]:
    """``quality.harm`` and ``quality.nonInferiority``: paired when the step produced pairs, else unpaired."""
    if s.metric == "accuracy":
        if pairs is not None and pairs.rows:
            return _accuracy_paired(pairs, s)
        return _accuracy_unpaired(stable, candidate, s)
    sums = [stable.abs_error_sum, stable.abs_error_sumsq]
    if pairs is not None and pairs.rows:
        sums += [pairs.stable_error_sum, pairs.candidate_error_sum, pairs.diff_sumsq]
    else:
        sums += [candidate.abs_error_sum, candidate.abs_error_sumsq]
    if not all(math.isfinite(x) for x in sums):
        # NaN compares false with every threshold: the harm test would pass and the interval say nothing; a
        # gateway's sums turn NaN or Inf only by a bug or a series from elsewhere, so no evidence either way
        return _waiting("the absolute-error sums are not finite (NaN or Inf): no evidence either way", (0.0, 0.0))
    if pairs is not None and pairs.rows:
        return _mae_paired(pairs, stable, s)
    return _mae_unpaired(stable, candidate, s)


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
    e_value = s.carry(log_to_e(harm_log_e(p.stable_only, discordant, 0.5)))
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
    e_value = s.carry(log_to_e(harm_log_e(candidate.incorrect, candidate.incorrect + stable.incorrect, share)))
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


def _tau2(variance: float, n: int) -> float:
    """Mixing variance of the confidence sequences on a mean: tightest around a hundred labelled rows."""
    return max(variance * n / 100.0, 1e-12)


def _mean_and_variance(total: float, total_sq: float, n: int) -> tuple[float, float]:
    """Mean and the variance of the mean from a running sum and sum of squares (n >= 1)."""
    mean = total / n
    spread = max(total_sq / n - mean * mean, 0.0)
    return mean, max(spread, 1e-12) / n


def _mae_paired(p: Pairs, stable: Labels, s: QualitySettings) -> list[MetricResult]:
    n = p.rows
    samples = (float(n), float(n))
    mae_s, mae_c = p.stable_error_sum / n, p.candidate_error_sum / n
    diff, variance = _mean_and_variance(p.candidate_error_sum - p.stable_error_sum, p.diff_sumsq, n)
    tau2 = _tau2(variance, n)
    e_value = s.carry(log_to_e(one_sided_normal_mixture_log_e(diff, variance, tau2)))
    harm, threshold = harm_decision(e_value, s.alpha_harm)
    margin = _margin(s, _mae_lower(stable))  # stable answered every client request of the step, paired or not
    cs = gaussian_mixture_cs(diff, variance, s.alpha_difference, tau2)
    return _mae_pair_of_results(harm, threshold, e_value, diff, (cs.lo, cs.hi), margin, (mae_s, mae_c), samples,
                                n >= s.min_labels, s, HARM_MAE_PAIRED, NI_PAIRED)  # fmt: skip


def _mae_unpaired(stable: Labels, candidate: Labels, s: QualitySettings) -> list[MetricResult]:
    samples = (float(stable.labelled), float(candidate.labelled))
    if not stable.labelled or not candidate.labelled:
        which = "stable" if not stable.labelled else "the candidate"
        return _waiting(f"no labelled rows for {which} yet", samples)
    mae_s, var_s = _mean_and_variance(stable.abs_error_sum, stable.abs_error_sumsq, stable.labelled)
    mae_c, var_c = _mean_and_variance(candidate.abs_error_sum, candidate.abs_error_sumsq, candidate.labelled)
    diff, variance = mae_c - mae_s, var_s + var_c
    margin = _margin(s, _mae_lower(stable))
    n = min(stable.labelled, candidate.labelled)
    tau2 = _tau2(variance, n)
    cs = gaussian_mixture_cs(diff, variance, s.alpha_difference, tau2)
    e_value = s.carry(log_to_e(one_sided_normal_mixture_log_e(diff, variance, tau2)))
    harm, threshold = harm_decision(e_value, s.alpha_harm)
    return _mae_pair_of_results(harm, threshold, e_value, diff, (cs.lo, cs.hi), margin, (mae_s, mae_c), samples,
                                n >= s.min_labels, s, HARM_MAE_UNPAIRED, NI_UNPAIRED)  # fmt: skip


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
            f"worse: MAE higher by {diff:.4g}" if harm == "fail" else f"no evidence it is worse (MAE {diff:+.4g})",
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
