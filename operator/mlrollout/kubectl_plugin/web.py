"""Pure HTML of the dashboard: typed objects in, escaped HTML out (the terminal view's helpers reused).

The list row and the detail body are rendered here both for the first page load and for every live update
(the server sends the same fragments over server-sent events), so what a page shows never depends on which
of the two drew it. Everything from the cluster is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from mlrollout.api import commands
from mlrollout.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from mlrollout.api.rolloutpolicy import Step
from mlrollout.kubectl_plugin import plots
from mlrollout.kubectl_plugin.render import ago, clock, number, signed, step_progress
from mlrollout.rollout.lookhistory import LookHistory

VERBS: tuple[tuple[commands.Verb, str], ...] = (
    ("promote", "Promote (pass this step)"),
    ("promoteFull", "Promote fully"),
    ("abort", "Abort"),
    ("pause", "Pause"),
    ("resume", "Resume"),
    ("retry", "Retry"),
    ("undo", "Undo"),
)


def ref(md: ModelDeployment) -> tuple[str, str]:
    return str(md.metadata.get("namespace", "")), str(md.metadata.get("name", ""))


def detail_href(namespace: str, name: str) -> str:
    return f"/md/{escape(namespace)}/{escape(name)}"


def page(title: str, body: str, token: str, stream: str | None) -> str:
    """The whole document; `stream` is the server-sent events URL the script follows for live updates."""
    live = f' data-stream="{escape(stream)}"' if stream else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} - mlrollout</title>"
        '<link rel="stylesheet" href="/static/dashboard.css">'
        f'<meta name="mlrollout-token" content="{escape(token)}">'
        '<script src="/static/dashboard.js" defer></script></head>'
        f'<body{live}><header><a href="/">mlrollout</a> <span id="live" class="muted">connecting...</span>'
        '<span id="command-result" role="status"></span></header>'
        f'<main id="main">{body}</main><dialog id="confirm"><form method="dialog"><p id="confirm-text"></p>'
        '<button value="cancel">Cancel</button> <button value="ok" id="confirm-ok">Confirm</button></form></dialog>'
        "</body></html>"
    )


def refusal(what: str, message: str) -> str:
    """What a user without the RBAC sees instead of the page: what was refused and the server's words."""
    return (
        f'<section class="refusal" role="alert"><h1>Not allowed: {escape(what)}</h1><p>{escape(message)}</p>'
        "<p>Your kubeconfig's user lacks the permission (RBAC). Ask for get/list/watch on "
        "modeldeployments.mlrollout.io in that namespace, or use --namespace for one you may read.</p></section>"
    )


# --- the list --------------------------------------------------------------------------------------------


def _verdict(status: ModelDeploymentStatus) -> str:
    last = status.last_analysis
    return "-" if last is None else f"{last.verdict} ({clock(last.time)})"


def _split(status: ModelDeploymentStatus) -> str:
    t = status.traffic
    if t is None:
        return "-"
    return f"{t.stable}/{t.candidate}" + (f" +{t.mirror}% mirror" if t.mirror else "")


def _step(status: ModelDeploymentStatus, steps: Sequence[Step] | None) -> str:
    step = status.current_step
    if step is None:
        return "-"
    of = f" of {len(steps)}" if steps else ""
    return f"{step.index + 1}{of} ({step.kind})"


def list_row(md: ModelDeployment, steps: Sequence[Step] | None = None) -> str:
    """One ModelDeployment in the list (a <tr> whose id is namespace/name, so an update replaces it)."""
    namespace, name = ref(md)
    status = md.status or ModelDeploymentStatus()
    phase = status.phase or "Unknown"
    cells = [
        f'<a href="{detail_href(namespace, name)}">{escape(name)}</a>',
        escape(namespace),
        f'<span class="phase {escape(phase)}">{escape(phase)}</span>',
        escape(status.stable.model_version if status.stable else "-"),
        escape(status.candidate.model_version if status.candidate else "-"),
        escape(_split(status)),
        escape(_step(status, steps)),
        escape(_verdict(status)),
    ]
    row_id = escape(f"{namespace}/{name}")
    return f'<tr id="{row_id}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def list_rows(mds: Sequence[ModelDeployment]) -> str:
    """The rows of the table, sorted by namespace and name."""
    return "".join(list_row(md) for md in sorted(mds, key=ref))


def list_body(mds: Sequence[ModelDeployment], scope: str) -> str:
    """The table of ModelDeployments."""
    rows = list_rows(mds)
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Name", "Namespace", "Phase", "Stable", "Candidate", "Split S/C", "Step", "Last verdict")
    )
    empty = "" if mds else '<p class="muted">No ModelDeployments.</p>'
    return (
        f"<h1>ModelDeployments <small class=muted>{escape(scope)}</small></h1>"
        f'<table class="mds"><thead><tr>{head}</tr></thead><tbody id="rows">{rows}</tbody></table>{empty}'
    )


# --- one ModelDeployment ------------------------------------------------------------------------------


def _steps_html(steps: Sequence[Step] | None, status: ModelDeploymentStatus, now: datetime) -> str:
    current = status.current_step
    if not steps:
        if current is None:
            return '<p class="muted">No rollout in progress.</p>'
        return (
            f"<p>Step {current.index + 1} ({escape(current.kind)}), started {escape(ago(current.started_at, now))}</p>"
        )
    rows = []
    for i, step in enumerate(steps):
        fraction: float | None
        if current is None:
            fraction, note, state = None, "", ""
        elif i < current.index:
            fraction, note, state = 1.0, "", "done"
        elif i == current.index:
            fraction, note = step_progress(step, status, now)
            state = "paused" if status.phase == "Paused" else "holding" if status.hold else "running"
        else:
            fraction, note, state = 0.0, "", ""
        bar = (
            f'<progress max="100" value="{round(100 * fraction)}"></progress> {round(100 * fraction)}%'
            if fraction is not None
            else ""
        )
        mark = ' class="current"' if current is not None and i == current.index else ""
        rows.append(
            f"<tr{mark}><td>{i + 1}</td><td>{escape(step.kind)}</td><td>{escape(step.summary())}</td>"
            f"<td>{bar}</td><td>{escape(state)}{' - ' + escape(note) if note else ''}</td></tr>"
        )
    hold = f'<p class="warn">Holding: {escape(status.hold)}</p>' if status.hold else ""
    return (
        "<table><thead><tr><th>#</th><th>Kind</th><th>What</th><th>Progress</th><th>State</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{hold}"
    )


def _x_labels(looks: LookHistory) -> tuple[str, str]:
    if not looks.looks:
        return "", ""
    return clock(looks.looks[0].time), clock(looks.looks[-1].time)


def traffic_plot(looks: LookHistory) -> str:
    """The split over the looks: stable, candidate and mirrored percent at each look."""
    pts = looks.looks
    return plots.render(
        plots.Plot(
            title="Traffic split at each look (%)",
            series=[
                plots.Series("stable", [p.stable_percent for p in pts], "stable"),
                plots.Series("candidate", [p.candidate_percent for p in pts], "candidate"),
                plots.Series("mirror", [p.mirror_percent for p in pts], "mirror"),
            ],
            x_labels=_x_labels(looks),
        )
    )


def metric_plots(looks: LookHistory) -> str:
    """Per metric: the estimate per track, the effect with its anytime-valid interval against the limit, and
    the e-value against 1/alpha (the evidence that rolls a candidate back once it crosses)."""
    names = list(dict.fromkeys(m.name for p in looks.looks for m in p.metrics))
    out = []
    for name in names:
        per = [next((m for m in p.metrics if m.name == name), None) for p in looks.looks]
        limits = [m.threshold for m in per if m is not None and m.threshold is not None]
        alphas = [p.alpha for p in looks.looks if p.alpha]
        estimates = plots.Plot(
            title=f"{name}: estimate per track",
            series=[
                plots.Series("stable", [m.stable if m else None for m in per], "stable"),
                plots.Series("candidate", [m.candidate if m else None for m in per], "candidate"),
            ],
            x_labels=_x_labels(looks),
        )
        effect = plots.Plot(
            title=f"{name}: effect (candidate vs stable) with its interval",
            series=[plots.Series("effect", [m.effect if m else None for m in per], "candidate")],
            bands=[
                plots.Band(
                    "anytime-valid interval",
                    [m.interval[0] if m and m.interval else None for m in per],
                    [m.interval[1] if m and m.interval else None for m in per],
                    "candidate",
                )
            ],
            lines=[("limit", limits[-1])] if limits else [],
            x_labels=_x_labels(looks),
        )
        evidence = plots.Plot(
            title=f"{name}: e-value (log scale)",
            series=[plots.Series("e-value", [m.e_value if m else None for m in per], "evidence")],
            lines=[("1/alpha", 1 / alphas[-1])] if alphas else [],
            log_y=True,
            x_labels=_x_labels(looks),
        )
        last = next((m for m in reversed(per) if m is not None), None)
        decision = f' <span class="decision {escape(last.decision)}">{escape(last.decision)}</span>' if last else ""
        out.append(
            f'<section class="metric"><h3>{escape(name)}{decision}</h3><div class="plots">'
            f"{plots.render(estimates)}{plots.render(effect)}{plots.render(evidence)}</div></section>"
        )
    return "".join(out) or '<p class="muted">No metrics measured yet.</p>'


def _analysis_html(status: ModelDeploymentStatus, now: datetime) -> str:
    last = status.last_analysis
    if last is None:
        return '<p class="muted">No look yet.</p>'
    alpha = f" (alpha {number(last.alpha)})" if last.alpha is not None else ""
    rows = []
    for m in last.metrics or []:
        est = m.estimate
        interval = f"[{signed(m.interval[0])}, {signed(m.interval[1])}]" if m.interval else "-"
        cells = [m.name, m.decision, number(est.stable if est else None), number(est.candidate if est else None),
                 signed(m.effect), interval, number(m.threshold), number(m.e_value), m.reason or ""]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Metric", "Decision", "Stable", "Candidate", "Effect", "Interval", "Limit", "E-value", "Why")
    )
    return (
        f'<p><span class="decision {escape(last.verdict)}">{escape(last.verdict)}</span>{escape(alpha)} at '
        f"{escape(clock(last.time))} ({escape(ago(last.time, now))}): {escape(last.reason)}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _history_html(status: ModelDeploymentStatus, now: datetime) -> str:
    rows = [
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in (
            str(h.number), h.model_version, h.outcome, ago(h.finished_at or h.started_at, now), h.sha256, h.reason
        )) + "</tr>"
        for h in reversed(status.history or [])
    ]  # fmt: skip
    if not rows:
        return '<p class="muted">No rollouts yet.</p>'
    head = "".join(f"<th>{h}</th>" for h in ("Rev", "Version", "Outcome", "When", "SHA-256", "Reason"))
    return f'<table class="history"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _buttons(namespace: str, name: str) -> str:
    buttons = "".join(
        f'<button type="button" class="command" data-verb="{verb}">{escape(label)}</button> ' for verb, label in VERBS
    )
    return (
        f'<div class="commands" data-namespace="{escape(namespace)}" data-name="{escape(name)}">{buttons}'
        '<label>to revision <input id="to-revision" type="number" min="1" size="4" placeholder="prev"></label>'
        "</div>"
    )


def detail_body(
    md: ModelDeployment,
    steps: Sequence[Step] | None,
    looks: LookHistory | None,
    looks_error: str | None,
    now: datetime,
) -> str:
    """Everything about one ModelDeployment: state, steps, plots over the looks, verdict, history, commands."""
    namespace, name = ref(md)
    status = md.status or ModelDeploymentStatus()
    phase = status.phase or "Unknown"
    t = status.traffic
    facts = [
        ("Phase", f'<span class="phase {escape(phase)}">{escape(phase)}</span>'
                  + (f" - {escape(status.message)}" if status.message else "")),
        ("Spec", escape(f"{md.spec.model.name} {md.spec.model.version} ({md.spec.model.uri})")),
        ("Stable", escape(f"{status.stable.model_version} (revision {status.stable.number}, sha256 "
                          f"{status.stable.sha256})") if status.stable else "-"),
        ("Candidate", escape(f"{status.candidate.model_version} (revision {status.candidate.number}, sha256 "
                             f"{status.candidate.sha256})") if status.candidate else "-"),
        ("Traffic", escape(f"stable {t.stable}%, candidate {t.candidate}%, mirror {t.mirror}%") if t else "-"),
        ("Policy", escape(status.policy or "-")),
    ]  # fmt: skip
    if status.held_back:
        held = status.held_back
        facts.append(("Held back", escape(f"revision {held.number} ({held.outcome}): {held.reason}")))
    if status.last_command:
        c = status.last_command
        facts.append(("Last command", escape(f"{c.verb} {c.result} at {clock(c.time)}: {c.message}")))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    if looks_error:
        evidence = f'<p class="warn">Look history unavailable: {escape(looks_error)}</p>'
    elif looks is None or not looks.looks:
        evidence = '<p class="muted">No looks recorded for the current rollout yet.</p>'
    else:
        evidence = (
            f'<p class="muted">{len(looks.looks)} looks of candidate {escape(looks.candidate[:12])}</p>'
            f"{traffic_plot(looks)}{metric_plots(looks)}"
        )
    return (
        f'<h1>{escape(namespace)}/{escape(name)}</h1><dl class="facts">{dl}</dl>'
        f"<h2>Commands</h2>{_buttons(namespace, name)}"
        f"<h2>Steps</h2>{_steps_html(steps, status, now)}"
        f"<h2>Last verdict</h2>{_analysis_html(status, now)}"
        f"<h2>Evidence over the looks</h2>{evidence}"
        f"<h2>History</h2>{_history_html(status, now)}"
    )
