"""Pure rendering: a ModelDeployment (the typed API model) -> text for a terminal.

Everything here is a function of its arguments (the object, the effective steps, the clock), so the
status view is unit-tested to the character and the I/O layer only fetches, parses and prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from mlrollout.api.analysis import MetricResult
from mlrollout.api.common import parse_duration
from mlrollout.api.evaluation import EvaluationCheck, EvaluationStatus
from mlrollout.api.modeldeployment import (
    AnalysisStatus,
    AutoscalingStatus,
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentStatus,
    RevisionStatus,
)
from mlrollout.api.rolloutpolicy import Step
from mlrollout.rollout import evaluated
from mlrollout.rollout.timefmt import parse

BAR_WIDTH = 24


# --- small formatting helpers ---------------------------------------------------------------------


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp, or None when absent or unreadable."""
    if not text:
        return None
    try:
        return parse(text)
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """Like kubectl's ages: 45s, 3m20s, 2h5m, 3d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60}m" if (s % 3600) // 60 else f"{s // 3600}h"
    return f"{s // 86400}d{(s % 86400) // 3600}h" if (s % 86400) // 3600 else f"{s // 86400}d"


def ago(text: str | None, now: datetime) -> str:
    """'3m20s ago' for a timestamp, '-' when there is none."""
    when = parse_time(text)
    return "-" if when is None else f"{duration((now - when).total_seconds())} ago"


def clock(text: str | None) -> str:
    """HH:MM:SS (UTC) of a timestamp, '-' when there is none."""
    when = parse_time(text)
    return "-" if when is None else when.astimezone(UTC).strftime("%H:%M:%S")


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """[#######.........] for a fraction in 0..1 (clamped), with the percentage."""
    f = min(1.0, max(0.0, fraction))
    filled = round(f * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {round(f * 100):3d}%"


def number(value: float | None) -> str:
    """Estimates and effects: four significant digits, '-' when absent."""
    return "-" if value is None else f"{value:.4g}"


def signed(value: float | None) -> str:
    """An effect with its sign."""
    return "-" if value is None else f"{value:+.4g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns separated by two spaces, like kubectl get."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


# --- steps --------------------------------------------------------------------------------------------


def candidate_requests(status: ModelDeploymentStatus) -> int | None:
    """Requests the candidate has answered since it started, from the last analysis' sample sizes."""
    metrics = status.last_analysis.metrics if status.last_analysis else None
    counts = [int(m.samples.candidate) for m in metrics or [] if m.samples and m.samples.candidate is not None]
    return max(counts) if counts else None


def step_progress(step: Step, status: ModelDeploymentStatus, now: datetime) -> tuple[float | None, str]:
    """How far the current step is (0..1, or None when unknown) and a note saying why."""
    current = status.current_step
    started = parse_time(current.started_at) if current else None
    elapsed = (now - started).total_seconds() if started else None
    notes: list[str] = []
    fraction: float | None = None
    analysed = step.shadow or step.canary or step.blue_green
    if analysed is not None:
        seen = candidate_requests(status)
        if seen is not None:
            in_step = max(0, seen - (current.requests_at_start if current else 0))
            notes.append(f"requests {in_step}/{analysed.min_requests}")
            fraction = 1.0 if analysed.min_requests == 0 else min(1.0, in_step / analysed.min_requests)
        if elapsed is not None:
            notes.append(f"{duration(elapsed)} of max {analysed.max_duration}")
    elif step.evaluate is not None:
        if elapsed is not None:
            ev = evaluated.current(status)
            job = ev.job if ev is not None else "its Job"
            notes.append(f"{job}: {duration(elapsed)} of max {step.evaluate.max_duration}")
    elif step.pause is not None:
        hold = parse_duration(step.pause.duration) if step.pause.duration else None
        if elapsed is not None and hold:
            fraction = min(1.0, elapsed / hold)
            notes.append(f"{duration(elapsed)} of {step.pause.duration}")
        elif elapsed is not None:
            notes.append(f"waiting {duration(elapsed)} for `kubectl mlrollout resume`")
    return fraction, ", ".join(notes)


def render_steps(steps: Sequence[Step] | None, status: ModelDeploymentStatus, now: datetime) -> list[str]:
    """The strategy with the current step marked, and a bar for the whole rollout."""
    current = status.current_step
    if current is None:
        return []
    index = current.index
    if not steps:
        started = ago(current.started_at, now)
        return [f"Step:       {index + 1} ({current.kind}), started {started} (policy steps unknown)"]
    fraction, note = step_progress(steps[index], status, now) if index < len(steps) else (None, "")
    overall = (index + (fraction or 0.0)) / len(steps)
    lines = [f"Steps:      {bar(overall)}  step {index + 1} of {len(steps)}"]
    state = {"Paused": "paused", "Degraded": "stopped"}.get(str(status.phase), "running")
    if status.hold:
        state = "holding"
    rows: list[list[str]] = []
    for i, step in enumerate(steps):
        if i < index:
            mark, where = " ", "done"
        elif i == index:
            mark, where = ">", state + (f" ({note})" if note else "")
        else:
            mark, where = " ", ""
        rows.append([f"{mark} {i + 1}", step.kind, step.summary(), where])
    lines += table(["  #", "KIND", "WHAT", "STATE"], rows, indent="  ")
    if status.hold:
        lines.append(f"  holding: {status.hold}")
    forecast = render_forecast(steps[index] if index < len(steps) else None, status)
    if forecast:
        lines.append(forecast)
    if current.carried_in:  # evidence against the candidate from earlier steps (docs/analysis.md)
        shown = ", ".join(f"{test} {number(value)}" for test, value in sorted(current.carried_in.items()))
        lines.append(f"  evidence carried from earlier steps: {shown}")
    return lines


def render_forecast(step: Step | None, status: ModelDeploymentStatus) -> str:
    """The last look's time-to-decision forecast for the current step, against its maxDuration."""
    forecast = status.last_analysis.forecast if status.last_analysis else None
    if forecast is None:
        return ""
    rate = f"{forecast.candidate_rate:.3g} candidate requests/s"
    analysed = step.shadow or step.canary or step.blue_green if step is not None else None
    limit = parse_duration(analysed.max_duration) if analysed is not None else None
    if forecast.seconds is None:
        return f"  forecast: a candidate like stable would not pass this step at {rate}"
    slowest = f", slowest {forecast.slowest}" if forecast.slowest else ""
    requests = f"{forecast.candidate_requests:,.0f} candidate requests at " if forecast.candidate_requests else ""
    text = f"  forecast: a candidate like stable passes after {duration(forecast.seconds)} ({requests}{rate}{slowest})"
    if analysed is not None and limit is not None and forecast.seconds > limit:
        text += f"; beyond maxDuration {analysed.max_duration}"
    return text


# --- the status view ----------------------------------------------------------------------------------


def _revision_line(rev: RevisionStatus | None) -> str:
    if rev is None:
        return "-"
    return f"{rev.model_version}  (revision {rev.number}, {rev.revision[:12]}, sha256 {rev.sha256[:12]}...)"


def _metric_row(m: MetricResult) -> list[str]:
    evidence = [f"e={number(m.e_value)}"] if m.e_value is not None else []
    evidence += [f"p={number(m.p_value)}"] if m.p_value is not None else []
    samples, estimate = m.samples, m.estimate
    return [
        m.name,
        m.decision,
        f"{number(samples.stable if samples else None)}/{number(samples.candidate if samples else None)}",
        number(estimate.stable if estimate else None),
        number(estimate.candidate if estimate else None),
        signed(m.effect),
        f"[{signed(m.interval[0])}, {signed(m.interval[1])}]" if m.interval else "-",
        number(m.threshold),
        " ".join(evidence) or "-",
    ]


def render_analysis(analysis: AnalysisStatus | None, now: datetime) -> list[str]:
    """The last verdict, the alpha it was judged at (when recorded) and, per metric, the evidence behind it."""
    if analysis is None:
        return ["Analysis:   none yet"]
    alpha = f" (alpha {number(analysis.alpha)})" if analysis.alpha is not None else ""
    lines = [
        f"Analysis:   {analysis.verdict.upper()}{alpha} at {clock(analysis.time)} "
        f"({ago(analysis.time, now)}): {analysis.reason}"
    ]
    metrics = analysis.metrics or []
    if not metrics:
        return lines
    headers = ["METRIC", "DECISION", "N S/C", "STABLE", "CANDIDATE", "EFFECT", "INTERVAL", "LIMIT", "EVIDENCE"]
    table_lines = table(headers, [_metric_row(m) for m in metrics])
    lines.append(table_lines[0])
    for m, line in zip(metrics, table_lines[1:], strict=True):
        lines.append(line)
        detail = " - ".join(dict.fromkeys(x for x in (m.test, m.reason) if x))
        if detail:
            lines.append(f"      {detail}")
    return lines


def _check_row(c: EvaluationCheck) -> list[str]:
    return [
        c.name if c.kind != "stable" else "vs stable",
        c.decision,
        str(c.rows),
        number(c.reference),
        number(c.candidate),
        signed(c.effect),
        f"[{signed(c.interval[0])}, {signed(c.interval[1])}]" if c.interval else "-",
        f"{round((1 - c.alpha) * 100, 2):g}%" if c.alpha is not None else "-",
        number(c.p_value),
        number(c.margin),
    ]


def render_evaluation(ev: EvaluationStatus | None, now: datetime) -> list[str]:
    """The offline evaluation (an evaluate step's Job): the verdict and, per comparison, both scores, the
    paired effect with its interval, the test and p-value (the baseline's row has the baseline's score)."""
    if ev is None:
        return []
    when = ev.finished_at or ev.started_at
    lines = [f"Evaluation: {ev.phase.upper()} (Job {ev.job}, attempt {ev.attempt}) at {clock(when)} "
             f"({ago(when, now)}): {ev.reason}"]  # fmt: skip
    if ev.rows is not None or ev.dataset_sha256:
        digest = f", dataset sha256 {ev.dataset_sha256[:12]}..." if ev.dataset_sha256 else ""
        lines.append(f"  {ev.metric or '-'} on n={ev.rows if ev.rows is not None else '-'} holdout rows{digest}")
    checks = ev.checks or []
    if checks:
        headers = ["CHECK", "DECISION", "N", "REFERENCE", "CANDIDATE", "EFFECT", "INTERVAL", "LEVEL", "P", "MARGIN"]
        table_lines = table(headers, [_check_row(c) for c in checks])
        lines.append(table_lines[0])
        for c, line in zip(checks, table_lines[1:], strict=True):
            lines.append(line)
            if c.test:
                lines.append(f"      {c.test}")
    if ev.omitted:
        lines.append(f"  ({ev.omitted} passing slice comparisons not shown; see the Job's log)")
    return lines


def render_history(md: ModelDeployment, now: datetime) -> str:
    """Past rollouts, newest first, then the revisions `undo --to-revision` can bring back."""
    status = md.status or ModelDeploymentStatus()
    history = list(reversed(status.history or []))
    lines = [f"History of {_ref(md)}:"]
    if not history:
        lines.append("  no rollouts yet")
    else:
        rows = [
            [str(h.number), h.model_version, h.outcome, ago(h.finished_at or h.started_at, now), _span(h),
             h.sha256[:12], h.reason]
            for h in history
        ]  # fmt: skip
        lines += table(["REV", "VERSION", "OUTCOME", "WHEN", "TOOK", "SHA256", "REASON"], rows)
    if status.revisions:
        stable = status.stable.revision if status.stable else None
        candidate = status.candidate.revision if status.candidate else None
        rows = []
        for r in sorted(status.revisions, key=lambda r: r.number, reverse=True):
            role = "stable" if r.revision == stable else "candidate" if r.revision == candidate else ""
            rows.append([str(r.number), r.model_version, r.revision[:12], role, r.model_uri])
        lines += ["", "Revisions (kubectl mlrollout undo NAME --to-revision N):"]
        lines += table(["REV", "VERSION", "HASH", "ROLE", "URI"], rows)
    return "\n".join(lines)


def render_hpa(label: str, hpa: AutoscalingStatus) -> str:
    """One HPA in a line: whose, its target, the pods it saw and wants, and why it does not scale when it cannot."""

    def count(n: int | None) -> str:
        return "?" if n is None else str(n)

    line = f"{label} HPA on {hpa.target}: {count(hpa.current_replicas)} pods, wants {count(hpa.desired_replicas)}"
    if hpa.scaling_active == "False":
        return f"{line}; NOT scaling, replicas held: {hpa.message}"
    return line if hpa.scaling_active == "True" else f"{line} (the HPA has not reported yet)"


def _span(entry: HistoryEntry) -> str:
    start, end = parse_time(entry.started_at), parse_time(entry.finished_at)
    return duration((end - start).total_seconds()) if start and end else "-"


def _ref(md: ModelDeployment) -> str:
    return f"{md.metadata.get('namespace', '?')}/{md.metadata.get('name', '?')}"


def render_status(md: ModelDeployment, steps: Sequence[Step] | None, now: datetime) -> str:
    """The whole live view of one ModelDeployment."""
    status = md.status or ModelDeploymentStatus()
    phase = status.phase or "Unknown"
    lines = [f"ModelDeployment {_ref(md)}   {phase}"]
    if status.message:
        lines.append(f"  {status.message}")
    generation, observed = md.metadata.get("generation"), status.observed_generation
    if isinstance(generation, int) and (observed is None or observed < generation):
        lines.append(f"  (the operator has not yet acted on generation {generation}; it last saw {observed or 'none'})")
    lines.append("")
    model = md.spec.model
    lines.append(f"Spec:       {model.name} {model.version}  ({model.uri})")
    if status.policy:
        lines.append(f"Policy:     {status.policy}")
    lines.append(f"Stable:     {_revision_line(status.stable)}")
    if status.candidate:
        lines.append(f"Candidate:  {_revision_line(status.candidate)}")
    traffic = status.traffic
    if traffic:
        route = f"  (route table v{traffic.version})" if traffic.version else ""
        lines.append(
            f"Traffic:    stable {traffic.stable}%  candidate {traffic.candidate}%  mirror {traffic.mirror}%{route}"
        )
    for approval in status.approvals or []:
        if status.candidate is None or approval.revision != status.candidate.revision:
            continue
        if approval.state == "waiting":
            answer = f"; last answer {ago(approval.time, now)}: {approval.message}" if approval.message else ""
            lines.append(
                f"Approval:   waiting for approval from {approval.type} hook {approval.hook} "
                f"(since {ago(approval.since, now)}){answer}"
            )
        else:
            lines.append(f"Approval:   {approval.type} hook {approval.hook} approved {ago(approval.time, now)}")
    step_lines = render_steps(steps, status, now)
    if step_lines:
        lines += ["", *step_lines]
    elif phase == "Healthy":
        lines.append("Rollout:    none in progress")
    held = status.held_back
    if held:
        lines.append(f"Held back:  revision {held.number} ({held.outcome}, {ago(held.time, now)}): {held.reason}")
        lines.append("            change the spec, `kubectl mlrollout retry` or `kubectl mlrollout undo`")
    for gone in status.scale_downs or []:
        reason = f" ({gone.reason})" if gone.reason else ""
        lines.append(f"Scale-down: revision {gone.revision[:12]} at {clock(gone.at)}{reason}")
    evaluation = render_evaluation(evaluated.current(status), now)  # never an earlier rollout's (a retry's)
    if not evaluation and status.current_step is not None and status.current_step.kind == "evaluate":
        evaluation = ["Evaluation: not yet evaluated in this rollout (its Job is being asked for)"]
    if evaluation:
        lines += ["", *evaluation]
    lines += ["", *render_analysis(status.last_analysis, now)]
    if status.history:
        lines += ["", "Recent rollouts:"]
        rows = [
            [str(h.number), h.model_version, h.outcome, ago(h.finished_at or h.started_at, now), h.reason]
            for h in reversed(status.history[-5:])
        ]
        lines += table(["REV", "VERSION", "OUTCOME", "WHEN", "REASON"], rows)
    scaled = [(label, hpa) for label, hpa in (("stable", status.autoscaling), ("gateway", status.gateway_autoscaling))
              if hpa is not None]  # fmt: skip
    if scaled:
        lines += [""]
        lines += [
            f"{'Scaling:' if i == 0 else '':<12}{render_hpa(label, hpa)}" for i, (label, hpa) in enumerate(scaled)
        ]
    if status.conditions:
        shown = "  ".join(f"{c.type}={c.status}" + (f" ({c.reason})" if c.reason else "") for c in status.conditions)
        lines += ["", f"Conditions: {shown}"]
    last = status.last_command
    if last:
        message = f": {last.message}" if last.message else ""
        lines.append(f"Command:    {last.verb} {last.result} at {clock(last.time)}{message}")
    return "\n".join(lines) + "\n"
