"""Two candidate repairs of the canary accuracy harm test for label processes that differ by track (bench only).

``quality.harm`` in a canary step (``_accuracy_unpaired``) conditions the cumulative wrong labelled rows on
the cumulative labelled share: valid when every labelled row, whatever its track, was wrong with the same
probability under "the candidate is no worse". When the candidate's labels arrive later (or earlier) than
stable's and the error rate drifts within the step, the two tracks' labelled rows come from different
minutes and that fails (``bench/quality_label_delay.py`` measures by how much). Both repairs here keep the
product's fixed odds ratios (``OddsMixture.log_ratios``) and replace its Beta share (not a product of
per-cell factors) by nothing: the fixed weights are renormalised to one.

- :func:`increment_log_e`: each look's *new* wrong rows against that look's *new* labelled share; for a
  fixed odds ratio the product over looks of the per-look likelihood ratios is a test supermartingale when
  each look's new labelled rows of both tracks were wrong with the same probability (the conditioning
  argument per increment). That holds with equal label delays under drift, or with unequal delays and no
  drift; not with both (a look's new candidate rows were served in another minute than stable's).
- :func:`stratified_log_e`: strata by the minute that *served* the answer (the feedback id's issue time),
  each closed at a fixed age (labels older than it are not counted) and entering the e-process only then,
  with its own labelled share. Within a stratum both tracks served the same minute's traffic, so under the
  null each wrong row is the candidate's with probability at most the stratum's share whatever the drift,
  and strata are independent: for each fixed odds ratio the product over closed strata is a test
  supermartingale (in the filtration of closed strata) for any drift and any track-dependent delay shorter
  than the closing age. A label later than the age is lost (never counted), which costs power, not validity,
  as long as whether it is late does not depend on whether the answer was wrong.

Pure array functions; shapes ``(..., cells)`` with the cells (looks or strata) on the last axis.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special

from mlrollout.analysis.sequential import OddsMixture

Array = npt.NDArray[np.float64]


def ratio_log_lr(k: Array, n: Array, share: Array, log_ratio: float) -> Array:
    """Per cell, the log likelihood ratio of ``k`` of ``n`` events being the candidate's, at odds ``exp(log_ratio)``
    times ``share``'s against ``share``: one term of ``grid_harm_log_e``. 0 where a cell has no event or its
    share is not inside (0, 1) (one track without labelled rows: no evidence)."""
    k, n, share = np.asarray(k, float), np.asarray(n, float), np.asarray(share, float)
    usable = (n > 0) & (share > 0) & (share < 1)
    s = np.where(usable, share, 0.5)
    theta = special.expit(special.logit(s) + log_ratio)
    out: Array = np.where(usable, k * np.log(theta / s) + (n - k) * (np.log1p(-theta) - np.log1p(-s)), 0.0)
    return out


def mixture_log_e(per_ratio: list[Array], mixture: OddsMixture) -> Array:
    """The average, at the mixture's fixed weights renormalised to one (no Beta share), of the per-ratio
    likelihood ratios ``exp(per_ratio[j])``, in logs."""
    if len(per_ratio) != len(mixture.weights):
        raise ValueError(f"{len(per_ratio)} ratio processes for {len(mixture.weights)} weights")
    total = sum(mixture.weights)
    terms = [math.log(w / total) + x for w, x in zip(mixture.weights, per_ratio, strict=True)]
    out: Array = special.logsumexp(np.stack(terms), axis=0)
    return out


def _increments(cumulative: Array) -> Array:
    c = np.asarray(cumulative, float)
    out: Array = np.diff(c, axis=-1, prepend=np.zeros((*c.shape[:-1], 1)))
    return out


def increment_log_e(
    candidate_wrong: Array, wrong: Array, candidate_labelled: Array, labelled: Array, mixture: OddsMixture
) -> Array:
    """The per-look-increment e-process at every look, from the cumulative counts at each look (last axis):
    for each odds ratio the running sum of each look's log likelihood ratio (its new wrong rows, the
    candidate's among them, against its new rows' labelled share), then :func:`mixture_log_e`. A look where
    either track got no new labelled row adds nothing. The state carried from look to look is one running
    sum per ratio (and the counts at the last look)."""
    dk, dn = _increments(candidate_wrong), _increments(wrong)
    dc, dl = _increments(candidate_labelled), _increments(labelled)
    share = np.where(dl > 0, dc / np.maximum(dl, 1), 0.0)
    per_ratio = [np.cumsum(ratio_log_lr(dk, dn, share, lr), axis=-1) for lr in mixture.log_ratios]
    return mixture_log_e(per_ratio, mixture)


def stratified_log_e(
    candidate_wrong: Array, wrong: Array, candidate_labelled: Array, labelled: Array, close: int,
    mixture: OddsMixture,
) -> Array:  # fmt: skip
    """The issue-time stratified e-process at every look ``1..S``: the counts are per stratum (the last axis:
    the answers served in look ``s``, counted when their label arrived within ``close`` looks), stratum
    ``s`` enters at look ``s + close``. For each odds ratio the sum of the entered strata's log likelihood
    ratios (each against the stratum's own labelled share), then :func:`mixture_log_e`. The state carried
    is one running sum per ratio, plus each open stratum's counts (``close + 1`` strata a track)."""
    if close < 0:
        raise ValueError(f"a stratum cannot close before its answers are served (close={close})")
    share = np.where(np.asarray(labelled) > 0, np.asarray(candidate_labelled) / np.maximum(labelled, 1), 0.0)
    per_ratio = []
    for lr in mixture.log_ratios:
        summed = np.cumsum(ratio_log_lr(candidate_wrong, wrong, share, lr), axis=-1)
        strata = summed.shape[-1]
        entered = np.zeros_like(summed)
        if close < strata:
            entered[..., close:] = summed[..., : strata - close]
        per_ratio.append(entered)
    return mixture_log_e(per_ratio, mixture)
