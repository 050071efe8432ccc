"""Sample-ratio mismatch (SRM): the realised traffic split against the configured one, at every look.

Every comparison assumes requests reach the candidate at random with the configured probability. A broken
split (a stuck route table, a gateway replica on an old table, a mesh ignoring weights, copies dropped under
load) breaks that assumption silently: the candidate then sees a different population, and no margin or
e-value means what it says. The router's own counts are tested at every look against the configured share,
with an anytime-valid e-value, so looking every interval never turns chance into an alarm (a chi-square test
repeated at every look does: ``bench/split_power.py``).

Which counts: in canary steps the requests the gateway routed to each track (a candidate answer replaced by
stable's through the ``stable`` fallback still counts as routed to the candidate); in shadow and blue-green
preview steps the copies offered to the candidate out of the requests eligible for one (answered 200 by the
primary). Sticky A/B (mode ``ab``) assigns *keys* to tracks: one busy client moves the request share as
much as it likes without anything being wrong, so request counts are not tested there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special

from mlrollout.analysis.result import metric_result
from mlrollout.analysis.snapshot import Split
from mlrollout.api.analysis import MetricDecision, MetricResult

__all__ = ["SPLIT_ALPHA", "SPLIT_TEST", "split_log_e", "split_result"]

SPLIT_ALPHA = 0.001
"""False-alarm budget of the check, per analysed step. A mismatch blocks promotion (and, past maxDuration,
the step ends as the policy's onInconclusive says), so false alarms must be rare; real mismatches of the kind
that matter (7% of a 10% weight) give e-values in the thousands within a few looks at ordinary traffic."""

SPLIT_TEST = "sample-ratio mismatch: Beta-mixture e-value against the configured share within the tolerance"


def split_log_e(k: int, n: int, expected: float, tolerance: float) -> float:
    """Log e-value against "each of the ``n`` counted requests went the candidate's way with a probability
    within ``expected * (1 ± tolerance)``", from ``k`` that did.

    The Jeffreys (Beta(1/2, 1/2)) mixture of the binomial likelihood divided by its maximum over that band
    (Lindon & Malek 2022 use the same mixture for sequential SRM tests; universal inference, Wasserman et al.
    2020, makes the band a composite null): for every share in the band the mixture over the share's
    likelihood is a test martingale, and dividing by the maximum only makes it smaller.
    """
    if n <= 0:
        return 0.0
    k = min(max(int(k), 0), int(n))
    lo, hi = expected * (1.0 - tolerance), min(1.0, expected * (1.0 + tolerance))
    theta = min(max(k / n, lo), hi)
    if (theta <= 0.0 and k > 0) or (theta >= 1.0 and k < n):
        return math.inf  # a share the configuration excludes was realised
    log_mix = float(special.betaln(k + 0.5, n - k + 0.5) - special.betaln(0.5, 0.5))
    log_null = (k * math.log(theta) if k else 0.0) + ((n - k) * math.log1p(-theta) if k < n else 0.0)
    return log_mix - log_null


@dataclass(frozen=True)
class _Check:
    label: str
    k: int
    n: int
    expected: float

    @property
    def observed(self) -> float:
        return self.k / self.n


def _pct(x: float) -> str:
    return f"{x * 100:.3g}%"


def split_result(split: Split, tolerance: float, alpha: float = SPLIT_ALPHA) -> MetricResult:
    """``split``: inconclusive when a realised share is shown outside the tolerance, else pass.

    Never ``fail``: a broken split says the evidence is suspect, not that the candidate is bad. The routed
    share and the mirror share are two tests when both apply, each at half of ``alpha``.
    """
    observed = split.observed
    assert observed is not None
    checks: list[_Check] = []
    routed = observed.stable + observed.candidate
    if not split.sticky and routed > 0:
        checks.append(_Check("traffic split", observed.candidate, routed, split.candidate))
    if (split.mirror > 0 or observed.mirrored > 0) and observed.mirror_eligible > 0:
        checks.append(_Check("mirror share", observed.mirrored, observed.mirror_eligible, split.mirror))
    samples = (float(observed.stable), float(observed.candidate))
    if not checks:
        why = "sticky A/B assigns keys, not requests" if split.sticky else "no routed requests yet"
        return metric_result("split", "pass", f"traffic split not tested: {why}", test=SPLIT_TEST, samples=samples)
    threshold = len(checks) / alpha
    scored = [(math.exp(min(split_log_e(c.k, c.n, c.expected, tolerance), 700.0)), c) for c in checks]
    e_value, worst = max(scored, key=lambda pair: pair[0])
    flagged = [(e, c) for e, c in scored if e >= threshold]
    decision: MetricDecision
    if flagged:
        decision, reason = (
            "inconclusive",
            "; ".join(
                f"{c.label} {_pct(c.observed)} observed vs {_pct(c.expected)} configured (SRM, e={e:.3g})"
                for e, c in flagged
            ),
        )
    else:
        decision = "pass"
        reason = ", ".join(f"{c.label} {_pct(c.observed)} observed vs {_pct(c.expected)} configured" for c in checks)
        reason += f": within {tolerance:.0%} (e={e_value:.3g})"
        if split.sticky:
            reason += "; routed share not tested (sticky A/B assigns keys, not requests)"
    return metric_result(
        "split",
        decision,
        reason,
        test=SPLIT_TEST,
        samples=samples,
        effect=worst.observed - worst.expected,
        e_value=e_value,
        threshold=threshold,
    )
