"""The gate's rules, pure: each comparison's decision, and the verdict of them all (docs/evaluation.md).

Work in *improvement* (the effect in the direction that is better for the metric: +accuracy, -log loss) and
let ``m`` be the margin at the reference's level:

- with stable (overall): **pass** when the whole interval of the improvement is above ``-m`` (no worse than
  the margin, shown); **fail** when the whole interval is below ``-m`` (worse beyond the margin, shown);
  otherwise **inconclusive** (this holdout cannot tell);
- with the trivial baseline: **pass** when the whole interval is above 0 (better, shown); **fail** when the
  candidate is not better at all (improvement <= 0); otherwise inconclusive;
- on a slice (at its Bonferroni share of alpha): **fail** when worse beyond the margin is shown there; a
  slice that only cannot tell does not hold the rollout up (most slices are small), it is listed.

The verdict: **fail** if any comparison fails; **pass** if stable's and the baseline's pass; else
**inconclusive**. Every decision's reason says the numbers it rests on.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlrollout_serving.contract.evaluation import HIGHER_IS_BETTER, Check, CheckKind, MarginSpec, Verdict, finite
from mlrollout_serving.evaluation.stats import Paired


def improvement(metric: str, paired: Paired) -> tuple[float, float, float]:
    """The effect and its interval turned so that larger is better: (estimate, low, high)."""
    if HIGHER_IS_BETTER[metric]:
        return paired.effect, paired.low, paired.high
    return -paired.effect, -paired.high, -paired.low


def n(value: float) -> str:
    return f"{value:.4g}"


def signed(value: float) -> str:
    return f"{value:+.4g}"


def interval(paired: Paired) -> str:
    return f"{signed(paired.effect)} [{signed(paired.low)}, {signed(paired.high)}]"


def _p(paired: Paired) -> str:
    return f"p={paired.p_value:.2g}"


def versus_stable(
    metric: str, paired: Paired, margin: MarginSpec, alpha: float, kind: CheckKind = "stable", name: str = "stable"
) -> Check:
    """Non-inferiority to stable within the margin (see the module's rules)."""
    allowed = margin.allowed(paired.reference)
    _, low, high = improvement(metric, paired)
    where = "" if kind == "stable" else f" on {name}"
    numbers = f"{metric} {n(paired.candidate)} vs stable {n(paired.reference)}{where}: {interval(paired)}, {_p(paired)}"
    decision: Verdict
    if low >= -allowed:
        decision = "pass"
        verdict = "better" if low > 0 else "no worse than the margin"
        reason = f"{verdict}: {numbers} (margin {n(allowed)})"
    elif high < -allowed:
        decision = "fail"
        reason = f"worse beyond the margin {n(allowed)}: {numbers}"
    else:
        decision = "inconclusive"
        reason = f"cannot tell: {numbers} reaches past the margin {n(allowed)} (a larger holdout would decide)"
    return _check(kind, name, decision, paired, alpha, allowed, reason)


def versus_baseline(metric: str, paired: Paired, alpha: float, baseline: str, words: str) -> Check:
    """The candidate must beat the trivial baseline (see the module's rules)."""
    estimate, low, _ = improvement(metric, paired)
    numbers = f"{metric} {n(paired.candidate)} vs {n(paired.reference)} ({words}): {interval(paired)}, {_p(paired)}"
    decision: Verdict
    if low > 0:
        decision, reason = "pass", f"beats the {baseline} baseline: {numbers}"
    elif estimate <= 0:
        decision, reason = "fail", f"does not beat the {baseline} baseline: {numbers}"
    else:
        decision, reason = "inconclusive", f"not shown to beat the {baseline} baseline: {numbers}"
    return _check("baseline", baseline, decision, paired, alpha, None, reason)


def _check(
    kind: CheckKind, name: str, decision: Verdict, paired: Paired, alpha: float, margin: float | None, reason: str
) -> Check:
    return Check(
        kind=kind,
        name=name,
        decision=decision,
        rows=paired.rows,
        reference=finite(paired.reference),
        candidate=finite(paired.candidate),
        effect=finite(paired.effect),
        interval=(finite(paired.low), finite(paired.high)),
        alpha=finite(alpha),
        test=paired.test,
        p_value=finite(paired.p_value),
        margin=None if margin is None else finite(margin),
        reason=reason,
    )


def too_small(name: str, rows: int, why: str) -> Check:
    """A slice that was not compared (too few rows, one class only): listed, never deciding."""
    return Check(kind="slice", name=name, decision="inconclusive", rows=rows, reason=f"not compared: {why}")


def verdict(checks: Sequence[Check]) -> tuple[Verdict, str]:
    """The gate's answer and its one-line reason."""
    failing = [c for c in checks if c.decision == "fail"]
    if failing:
        worst = failing[0]
        more = f" (and {len(failing) - 1} more failing check(s))" if len(failing) > 1 else ""
        return "fail", f"{worst.reason}{more}"
    deciding = [c for c in checks if c.kind in ("stable", "baseline")]
    open_ = [c for c in deciding if c.decision != "pass"]
    if open_:
        return "inconclusive", str(open_[0].reason)
    stable = next(c for c in deciding if c.kind == "stable")
    baseline = next((c for c in deciding if c.kind == "baseline"), None)
    tail = f"; beats the {baseline.name} baseline ({n(baseline.reference or 0.0)})" if baseline is not None else ""
    return "pass", f"{stable.reason}{tail}"
