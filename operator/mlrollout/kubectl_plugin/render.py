"""Pure rendering: a ModelDeployment (as the API returns it) -> text for a terminal.

Everything here is a function of its arguments (the object, the effective steps, the clock), so the
status view is unit-tested to the character and the I/O layer only fetches and prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mlrollout.api.common import parse_duration

Obj = dict[str, Any]
BAR_WIDTH = 24


# --- small formatting helpers ---------------------------------------------------------------------


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 timestamp, or None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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


def ago(text: object, now: datetime) -> str:
    """'3m20s ago' for a timestamp, '-' when there is none."""
    when = parse_time(text)
    return "-" if when is None else f"{duration((now - when).total_seconds())} ago"


def clock(text: object) -> str:
    """HH:MM:SS (UTC) of a timestamp, '-' when there is none."""
    when = parse_time(text)
    return "-" if when is None else when.astimezone(UTC).strftime("%H:%M:%S")


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """[#######.........] for a fraction in 0..1 (clamped), with the percentage."""
    f = min(1.0, max(0.0, fraction))
    filled = round(f * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {round(f * 100):3d}%"


def number(value: object) -> str:
    """Estimates and effects: four significant digits, '-' when absent."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4g}"


def signed(value: object) -> str:
    """An effect with its sign."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return number(value)
    return f"{value:+.4g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns separated by two spaces, like kubectl get."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


# --- steps --------------------------------------------------------------------------------------------


def step_kind(step: Obj) -> str:
    """shadow, canary, pause or blueGreen: the one key a step sets."""
    for kind in ("shadow", "canary", "pause", "blueGreen"):
        if kind in step:
            return kind
    return "?"


def step_summary(step: Obj) -> str:
    """What a step does, in a few words."""
    kind = step_kind(step)
    body: Obj = step.get(kind) or {}
    if kind == "shadow":
        return f"mirror {body.get('mirrorPercent', 100)}%, min {body.get('minRequests', 200)} requests"
    if kind == "canary":
        return f"weight {body.get('weight', '?')}%, min {body.get('minRequests', 200)} requests"
    if kind == "pause":
        return f"hold {body['duration']}" if body.get("duration") else "hold until resumed"
    if kind == "blueGreen":
        preview = (
            f"preview mirror {body.get('previewMirrorPercent', 100)}%" if body.get("previewAnalysis", True) else ""
        )
        parts = [p for p in (preview, "switch all", f"keep old {body.get('scaleDownDelay', '10m')}") if p]
        return ", ".join(parts)
    return "unknown step"


def candidate_requests(status: Obj) -> int | None:
    """Requests the candidate has answered since it started, from the last analysis' sample sizes."""
    counts = [
        int(m["samples"]["candidate"])
        for m in (status.get("lastAnalysis") or {}).get("metrics") or []
        if isinstance((m.get("samples") or {}).get("candidate"), int | float)
    ]
    return max(counts) if counts else None


def _duration_seconds(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_duration(text)
    except ValueError:
        return None


def step_progress(step: Obj, status: Obj, now: datetime) -> tuple[float | None, str]:
    """How far the current step is (0..1, or None when unknown) and a note saying why."""
    current: Obj = status.get("currentStep") or {}
    kind = step_kind(step)
    body: Obj = step.get(kind) or {}
    started = parse_time(current.get("startedAt"))
    elapsed = (now - started).total_seconds() if started else None
    notes: list[str] = []
    fraction: float | None = None
    if kind in ("shadow", "canary", "blueGreen"):
        min_requests = int(body.get("minRequests", 200))
        seen = candidate_requests(status)
        if seen is not None:
            in_step = max(0, seen - int(current.get("requestsAtStart", 0)))
            notes.append(f"requests {in_step}/{min_requests}")
            fraction = 1.0 if min_requests == 0 else min(1.0, in_step / min_requests)
        max_seconds = _duration_seconds(body.get("maxDuration", "30m"))
        if elapsed is not None and max_seconds:
            notes.append(f"{duration(elapsed)} of max {body.get('maxDuration', '30m')}")
    elif kind == "pause":
        hold = _duration_seconds(body.get("duration"))
        if elapsed is not None and hold:
            fraction = min(1.0, elapsed / hold)
            notes.append(f"{duration(elapsed)} of {body['duration']}")
        elif elapsed is not None:
            notes.append(f"waiting {duration(elapsed)} for `kubectl mlrollout resume`")
    elif elapsed is not None:
        notes.append(f"running {duration(elapsed)}")
    return fraction, ", ".join(notes)


def render_steps(steps: Sequence[Obj] | None, status: Obj, now: datetime) -> list[str]:
    """The strategy with the current step marked, and a bar for the whole rollout."""
    current: Obj = status.get("currentStep") or {}
    if not current:
        return []
    index = int(current.get("index", 0))
    if not steps:
        started = ago(current.get("startedAt"), now)
        return [f"Step:       {index + 1} ({current.get('kind', '?')}), started {started} (policy steps unknown)"]
    fraction, note = step_progress(steps[index], status, now) if index < len(steps) else (None, "")
    overall = (index + (fraction or 0.0)) / len(steps)
    lines = [f"Steps:      {bar(overall)}  step {index + 1} of {len(steps)}"]
    state = {"Paused": "paused", "Degraded": "stopped"}.get(str(status.get("phase")), "running")
    if status.get("hold"):
        state = "holding"
    rows: list[list[str]] = []
    for i, step in enumerate(steps):
        if i < index:
            mark, where = " ", "done"
        elif i == index:
            mark, where = ">", state + (f" ({note})" if note else "")
        else:
            mark, where = " ", ""
        rows.append([f"{mark} {i + 1}", step_kind(step), step_summary(step), where])
    lines += table(["  #", "KIND", "WHAT", "STATE"], rows, indent="  ")
    if status.get("hold"):
        lines.append(f"  holding: {status['hold']}")
    carried: Obj = current.get("carriedIn") or {}
    if carried:  # evidence against the candidate from earlier steps (docs/analysis.md, "Evidence across steps")
        shown = ", ".join(f"{test} {number(value)}" for test, value in sorted(carried.items()))
        lines.append(f"  evidence carried from earlier steps: {shown}")
    return lines


# --- the status view ----------------------------------------------------------------------------------


def _revision_line(rev: Obj | None) -> str:
    if not rev:
        return "-"
    sha = str(rev.get("sha256", ""))[:12]
    return (
        f"{rev.get('modelVersion', '?')}  (revision {rev.get('number', '?')}, {str(rev.get('revision', ''))[:12]}, "
        f"sha256 {sha}...)"
    )


def render_analysis(analysis: Obj | None, now: datetime) -> list[str]:
    """The last verdict, the alpha it was judged at (when recorded) and, per metric, the evidence behind it."""
    if not analysis:
        return ["Analysis:   none yet"]
    alpha = f" (alpha {number(analysis['alpha'])})" if analysis.get("alpha") is not None else ""
    lines = [
        f"Analysis:   {str(analysis.get('verdict', '?')).upper()}{alpha} at {clock(analysis.get('time'))} "
        f"({ago(analysis.get('time'), now)}): {analysis.get('reason', '')}"
    ]
    metrics: list[Obj] = analysis.get("metrics") or []
    if not metrics:
        return lines
    rows: list[list[str]] = []
    for m in metrics:
        samples: Obj = m.get("samples") or {}
        estimate: Obj = m.get("estimate") or {}
        interval = m.get("interval")
        evidence = []
        if m.get("eValue") is not None:
            evidence.append(f"e={number(m['eValue'])}")
        if m.get("pValue") is not None:
            evidence.append(f"p={number(m['pValue'])}")
        rows.append(
            [
                str(m.get("name", "?")),
                str(m.get("decision", "?")),
                f"{number(samples.get('stable'))}/{number(samples.get('candidate'))}",
                number(estimate.get("stable")),
                number(estimate.get("candidate")),
                signed(m.get("effect")),
                f"[{signed(interval[0])}, {signed(interval[1])}]" if isinstance(interval, list) else "-",
                number(m.get("threshold")),
                " ".join(evidence) or "-",
            ]
        )
    headers = ["METRIC", "DECISION", "N S/C", "STABLE", "CANDIDATE", "EFFECT", "INTERVAL", "LIMIT", "EVIDENCE"]
    table_lines = table(headers, rows)
    lines.append(table_lines[0])
    for m, line in zip(metrics, table_lines[1:], strict=True):
        lines.append(line)
        detail = " - ".join(dict.fromkeys(str(x) for x in (m.get("test"), m.get("reason")) if x))
        if detail:
            lines.append(f"      {detail}")
    return lines


def render_history(md: Obj, now: datetime) -> str:
    """Past rollouts, newest first, then the revisions `undo --to-revision` can bring back."""
    status: Obj = md.get("status") or {}
    history: list[Obj] = list(reversed(status.get("history") or []))
    lines = [f"History of {_ref(md)}:"]
    if not history:
        lines.append("  no rollouts yet")
    else:
        rows = [
            [
                str(h.get("number", "?")),
                str(h.get("modelVersion", "?")),
                str(h.get("outcome", "?")),
                ago(h.get("finishedAt") or h.get("startedAt"), now),
                _span(h),
                str(h.get("sha256", ""))[:12],
                str(h.get("reason", "")),
            ]
            for h in history
        ]
        lines += table(["REV", "VERSION", "OUTCOME", "WHEN", "TOOK", "SHA256", "REASON"], rows)
    revisions: list[Obj] = status.get("revisions") or []
    if revisions:
        stable = (status.get("stable") or {}).get("revision")
        candidate = (status.get("candidate") or {}).get("revision")
        rows = []
        for r in sorted(revisions, key=lambda r: int(r.get("number", 0)), reverse=True):
            role = "stable" if r.get("revision") == stable else "candidate" if r.get("revision") == candidate else ""
            rows.append(
                [str(r.get("number", "?")), str(r.get("modelVersion", "?")), str(r.get("revision", ""))[:12], role,
                 str(r.get("modelUri", ""))]
            )  # fmt: skip
        lines += ["", "Revisions (kubectl mlrollout undo NAME --to-revision N):"]
        lines += table(["REV", "VERSION", "HASH", "ROLE", "URI"], rows)
    return "\n".join(lines)


def _span(entry: Obj) -> str:
    start, end = parse_time(entry.get("startedAt")), parse_time(entry.get("finishedAt"))
    return duration((end - start).total_seconds()) if start and end else "-"


def _ref(md: Obj) -> str:
    meta: Obj = md.get("metadata") or {}
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def render_status(md: Obj, steps: Sequence[Obj] | None, now: datetime) -> str:
    """The whole live view of one ModelDeployment."""
    meta: Obj = md.get("metadata") or {}
    spec: Obj = md.get("spec") or {}
    status: Obj = md.get("status") or {}
    phase = str(status.get("phase") or "Unknown")
    lines = [f"ModelDeployment {_ref(md)}   {phase}"]
    if status.get("message"):
        lines.append(f"  {status['message']}")
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        lines.append(f"  (the operator has not yet acted on generation {generation}; it last saw {observed or 'none'})")
    lines.append("")
    model: Obj = spec.get("model") or {}
    lines.append(f"Spec:       {model.get('name', '?')} {model.get('version', '?')}  ({model.get('uri', '?')})")
    if status.get("policy"):
        lines.append(f"Policy:     {status['policy']}")
    lines.append(f"Stable:     {_revision_line(status.get('stable'))}")
    if status.get("candidate"):
        lines.append(f"Candidate:  {_revision_line(status.get('candidate'))}")
    traffic: Obj = status.get("traffic") or {}
    if traffic:
        route = f"  (route table v{traffic['version']})" if traffic.get("version") else ""
        lines.append(
            f"Traffic:    stable {traffic.get('stable', 0)}%  candidate {traffic.get('candidate', 0)}%  "
            f"mirror {traffic.get('mirror', 0)}%{route}"
        )
    step_lines = render_steps(steps, status, now)
    if step_lines:
        lines += ["", *step_lines]
    elif phase == "Healthy":
        lines.append("Rollout:    none in progress")
    held: Obj = status.get("heldBack") or {}
    if held:
        lines.append(
            f"Held back:  revision {held.get('number', '?')} ({held.get('outcome', '?')}, "
            f"{ago(held.get('time'), now)}): {held.get('reason', '')}"
        )
        lines.append("            change the spec, `kubectl mlrollout retry` or `kubectl mlrollout undo`")
    for gone in status.get("scaleDowns") or []:
        lines.append(
            f"Scale-down: revision {str(gone.get('revision', '?'))[:12]} at {clock(gone.get('at'))}"
            + (f" ({gone['reason']})" if gone.get("reason") else "")
        )
    lines += ["", *render_analysis(status.get("lastAnalysis"), now)]
    history: list[Obj] = status.get("history") or []
    if history:
        lines += ["", "Recent rollouts:"]
        rows = [
            [str(h.get("number", "?")), str(h.get("modelVersion", "?")), str(h.get("outcome", "?")),
             ago(h.get("finishedAt") or h.get("startedAt"), now), str(h.get("reason", ""))]
            for h in reversed(history[-5:])
        ]  # fmt: skip
        lines += table(["REV", "VERSION", "OUTCOME", "WHEN", "REASON"], rows)
    conditions: list[Obj] = status.get("conditions") or []
    if conditions:
        lines.append("")
        lines.append(
            "Conditions: "
            + "  ".join(f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
                        for c in conditions)
        )  # fmt: skip
    last: Obj = status.get("lastCommand") or {}
    if last:
        message = f": {last['message']}" if last.get("message") else ""
        lines.append(
            f"Command:    {last.get('verb', '?')} {last.get('result', '?')} at {clock(last.get('time'))}{message}"
        )
    return "\n".join(lines) + "\n"
