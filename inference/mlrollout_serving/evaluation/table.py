"""The report as a table for people (``mlrollout evaluate`` without ``--json``, and the Job's log)."""

from __future__ import annotations

from mlrollout_serving.contract.evaluation import HIGHER_IS_BETTER, Check, EvaluationReport

HEADER = (
    "check",
    "rows",
    "reference",
    "candidate",
    "effect [interval]",
    "level",
    "p-value",
    "effect limit",
    "decision",
)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _row(check: Check, higher_is_better: bool) -> tuple[str, ...]:
    name = {"stable": "vs stable", "baseline": f"vs baseline {check.name}", "slice": check.name}[check.kind]
    if check.effect is None or check.interval is None:
        return (name, str(check.rows), "", "", (check.reason or ""), "", "", "", check.decision)
    low, high = check.interval
    level = f"{100 * (1 - (check.alpha or 0)):.4g}%"
    effect = f"{check.effect:+.4g} [{low:+.4g}, {high:+.4g}]"
    p_value = "" if check.p_value is None else f"{check.p_value:.2g}"
    # the effect must stay above -margin (higher is better) or below +margin (lower is better)
    margin = (
        "" if check.margin is None else f">= -{check.margin:.4g}" if higher_is_better else f"<= +{check.margin:.4g}"
    )
    return (name, str(check.rows), _num(check.reference), _num(check.candidate), effect, level, p_value, margin,
            check.decision)  # fmt: skip


def render(report: EvaluationReport) -> str:
    """Title, one row per comparison, then the verdict with its reason."""
    lines = []
    if report.problem is None:
        digest = f" (sha256 {report.dataset_sha256[:12]}…)" if report.dataset_sha256 else ""
        lines.append(f"{report.metric} of candidate and stable on {report.rows} holdout rows{digest}")
        higher = HIGHER_IS_BETTER.get(report.metric or "", True)
        table = [HEADER, *(_row(c, higher) for c in report.checks)]
        widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
        for r in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if report.omitted:
            lines.append(f"({report.omitted} slice comparison(s) not shown)")
        tests = sorted({c.test for c in report.checks if c.test})
        lines.extend(f"test: {t}" for t in tests)
    lines.append(f"verdict: {report.verdict.upper()}: {report.reason}")
    return "\n".join(lines)
