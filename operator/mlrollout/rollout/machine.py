"""The rollout state machine: `decide(status, facts, policy, now) -> Decision(status, actions)`, pure.

Status is the memory: everything the machine needs next time is in the status it returns, so the
operator can be killed between any two calls. `decide` runs transitions until none fires, which makes it
a fixed point: called again with the same facts and clock it returns the same status and no events.

Flow (docs/operator.md has the diagram and every reason):
- first revision: becomes stable directly; Pending until it answers, Degraded past the progress deadline;
- a later revision becomes the candidate: once ready it walks the policy's steps; a step passes on a
  `promote` verdict taken during the step whose evidence (the controller looks at a window that starts
  with the step) counts at least the step's minRequests candidate requests (a pause step passes on its
  clock or `resume`); after the last step (or the blue-green switch) it becomes stable and
  the old stable is removed after the scale-down delay;
- `rollback` verdict, crash loop, refused sha256, progress deadline: candidate weight and mirror go to 0
  at once, the candidate is removed after a drain delay, history records why, the spec's revision is
  held back (Degraded) until the spec changes, `retry` or `undo`;
- a step past its maxDuration: the policy's onInconclusive (rollback, or hold for a human, visibly);
- a new spec revision during a rollout supersedes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from mlrollout.api.common import Condition, parse_duration
from mlrollout.api.modeldeployment import (
    AnalysisStatus,
    CommandStatus,
    HeldBackStatus,
    HistoryEntry,
    MetricResult,
    ModelDeploymentStatus,
    RevisionStatus,
    ScaleDownStatus,
    StepStatus,
    TrafficStatus,
)
from mlrollout.api.rolloutpolicy import RolloutPolicySpec, Step
from mlrollout.rollout.actions import (
    Action,
    EnsureTrack,
    RecordEvent,
    RemoveTrack,
    RolloutFinished,
    SetRoutes,
    StepFinished,
)
from mlrollout.rollout.facts import VERBS, Command, Facts, Verdict
from mlrollout.rollout.timefmt import fmt, parse

DRAIN_SECONDS: Final = 30.0  # a rolled-back or superseded candidate is removed after in-flight requests end
PROMOTE_SCALE_DOWN_SECONDS: Final = 30.0  # old stable after a canary promotion (blue-green uses its own delay)
MAX_TRANSITIONS: Final = 16
MAX_HISTORY: Final = 50
MAX_REVISIONS: Final = 20

Outcome = Literal["promoted", "rolledBack", "superseded", "aborted"]


@dataclass
class Decision:
    """The next status and the actions that make the world match it."""

    status: ModelDeploymentStatus
    actions: list[Action] = field(default_factory=list)

    def events(self) -> list[RecordEvent]:
        """Only the events (what a human sees in `kubectl describe`)."""
        return [a for a in self.actions if isinstance(a, RecordEvent)]


def decide(status: ModelDeploymentStatus | None, facts: Facts, policy: RolloutPolicySpec, now: datetime) -> Decision:
    """The next status and actions for one ModelDeployment; pure and deterministic."""
    machine = _Machine(status, facts, policy, now)
    return machine.run()


class _Machine:
    """One call of `decide`: a working copy of status and the actions collected on the way."""

    def __init__(
        self, status: ModelDeploymentStatus | None, facts: Facts, policy: RolloutPolicySpec, now: datetime
    ) -> None:
        self.before = status or ModelDeploymentStatus()
        self.s = self.before.model_copy(deep=True)
        self.facts = facts
        self.policy = policy
        self.steps: list[Step] = policy.strategy.steps
        self.now = now
        self.actions: list[Action] = []

    # -- driver --------------------------------------------------------------------------------------

    def run(self) -> Decision:
        self._record_verdict()
        self._handle_command()
        for _ in range(MAX_TRANSITIONS):
            if not self._transition():
                break
        self._scale_downs()
        self._finish()
        return Decision(self.s, self.actions)

    def _transition(self) -> bool:
        """Fire at most one transition; True if one fired."""
        return self._follow_spec() or self._first_available() or self._progress_candidate()

    # -- helpers ---------------------------------------------------------------------------------------

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.actions.append(RecordEvent("Warning" if warning else "Normal", reason, message))

    def _elapsed(self, since: str | None) -> float:
        return (self.now - parse(since)).total_seconds() if since else 0.0

    def _paused(self) -> bool:
        return self.facts.paused or bool(self.s.paused_by_command) or self.s.hold is not None

    def _number_for(self, revision: str) -> int:
        for known in self.s.revisions or []:
            if known.revision == revision:
                return known.number
        numbers = [r.number for r in self.s.revisions or []] + [h.number for h in self.s.history or []]
        numbers += [r.number for r in (self.s.stable, self.s.candidate) if r is not None]
        return max(numbers, default=0) + 1

    def _remember(self, revision: RevisionStatus) -> None:
        """Keep the revision (with its template) for undo; the oldest unused ones are forgotten."""
        known = [r for r in self.s.revisions or [] if r.revision != revision.revision] + [revision]
        in_use = {r.revision for r in (self.s.stable, self.s.candidate) if r is not None}
        while len(known) > MAX_REVISIONS:
            drop = next((r for r in known if r.revision not in in_use), known[0])
            known.remove(drop)
        self.s.revisions = known

    def _new_revision(self, base: RevisionStatus, origin: Literal["spec", "undo"]) -> RevisionStatus:
        rev = base.model_copy(
            update={"number": self._number_for(base.revision), "started_at": fmt(self.now), "origin": origin}
        )
        self._remember(rev)
        self.s.scale_downs = [d for d in self.s.scale_downs or [] if d.revision != rev.revision] or None
        return rev

    def _schedule_removal(self, revision: str, seconds: float, reason: str) -> None:
        entries = [d for d in self.s.scale_downs or [] if d.revision != revision]
        at = fmt(self.now + timedelta(seconds=seconds))
        self.s.scale_downs = [*entries, ScaleDownStatus(revision=revision, at=at, reason=reason)]

    def _history(self, rev: RevisionStatus, outcome: Outcome, reason: str) -> None:
        entry = HistoryEntry(
            revision=rev.revision,
            number=rev.number,
            model_version=rev.model_version,
            sha256=rev.sha256,
            started_at=rev.started_at,
            finished_at=fmt(self.now),
            outcome=outcome,
            reason=reason[:1024],
        )
        self.s.history = [*(self.s.history or []), entry][-MAX_HISTORY:]
        self.actions.append(RolloutFinished(outcome, self._elapsed(rev.started_at)))

    def _set_traffic(self, candidate: int, mirror: int) -> None:
        version = self.s.traffic.version if self.s.traffic else 0
        self.s.traffic = TrafficStatus(stable=100 - candidate, candidate=candidate, mirror=mirror, version=version)

    def _relevant_verdict(self) -> Verdict | None:
        """The verdict, if it is about this candidate and was taken during the current step."""
        v, cand, step = self.facts.verdict, self.s.candidate, self.s.current_step
        if v is None or cand is None or step is None or v.candidate_revision != cand.revision:
            return None
        return v if v.time > parse(step.started_at) else None

    # -- analysis and commands -------------------------------------------------------------------------

    def _record_verdict(self) -> None:
        v = self.facts.verdict
        if v is None or self.s.candidate is None or v.candidate_revision != self.s.candidate.revision:
            return
        metrics = [MetricResult.model_validate(m) for m in v.metrics][:32] or None
        self.s.last_analysis = AnalysisStatus(
            time=fmt(v.time), verdict=v.verdict, reason=v.reason[:1024], alpha=v.alpha, metrics=metrics
        )
        step = self.s.current_step
        if v.evidence and step is not None and self._relevant_verdict() is not None:
            # per test, the latest look that measured it: a look without data (Prometheus down) keeps the last
            step.carried_out = {**(step.carried_out or {}), **v.evidence}

    def _handle_command(self) -> None:
        cmd = self.facts.command
        if cmd is None or (self.s.last_command is not None and self.s.last_command.id == cmd.id):
            return
        ok, message = self._command(cmd)
        self.s.last_command = CommandStatus(
            id=cmd.id[:128],
            verb=cmd.verb[:32],
            result="accepted" if ok else "refused",
            message=message[:1024],
            time=fmt(self.now),
        )
        self.event("CommandAccepted" if ok else "CommandRefused", f"{cmd.verb} ({cmd.id}): {message}", not ok)

    def _command(self, cmd: Command) -> tuple[bool, str]:
        if cmd.verb not in VERBS:
            return False, f"unknown verb {cmd.verb!r}; use one of {', '.join(VERBS)}"
        cand, step = self.s.candidate, self.s.current_step
        if cmd.verb == "pause":
            self.s.paused_by_command = True
            return True, "paused: steps do not advance until resume"
        if cmd.verb == "resume":
            return True, self._resume()
        if cmd.verb == "retry":
            held = self.s.held_back
            if held is None or held.revision != self.facts.spec_revision.revision or cand is not None:
                return False, "nothing to retry: the spec's revision is not held back"
            self.s.held_back = None
            self.event("Retry", f"retrying revision {held.number} ({held.revision})")
            return True, f"retrying revision {held.number}"
        if cmd.verb == "undo":
            return self._undo(cmd.to_revision)
        if cand is None:
            return False, "no rollout in progress"
        if cmd.verb == "abort":
            self._rollback("Aborted", f"aborted by command {cmd.id}", outcome="aborted")
            return True, f"rollout of revision {cand.number} aborted"
        if step is None:
            return False, f"candidate revision {cand.number} is not ready yet"
        self.s.hold = None
        if cmd.verb == "promoteFull":
            self._promote(f"promoted fully by command {cmd.id}")
            return True, f"revision {cand.number} promoted to stable"
        self._advance(f"promoted by command {cmd.id}")
        return True, f"step {step.index} ({step.kind}) passed by command"

    def _resume(self) -> str:
        was = [x for x, on in (("command pause", self.s.paused_by_command), ("hold", self.s.hold)) if on]
        self.s.paused_by_command = None
        self.s.hold = None
        step = self.s.current_step
        pause = self.steps[step.index].pause if step is not None and step.index < len(self.steps) else None
        if pause is not None and pause.duration is None:
            self._advance("resumed")
            return "indefinite pause step passed"
        if step is not None and was:
            step.started_at = fmt(self.now)  # the step's clock restarts: its maxDuration counts from now
            if step.index < len(self.steps):
                self._step_traffic(self.steps[step.index])  # undo a hold's weight 0
        self.event("Resumed", f"resumed ({', '.join(was) or 'nothing was paused'})")
        return "resumed" if was else "nothing was paused"

    def _undo(self, to_revision: int | None) -> tuple[bool, str]:
        stable = self.s.stable
        if stable is None:
            return False, "nothing to undo: no stable revision"
        target = self._undo_target(to_revision, stable)
        if target is None:
            wanted = f"revision {to_revision}" if to_revision else "a previous revision"
            return False, f"{wanted} is not known (see status.revisions)"
        if self.s.candidate is not None:
            self._rollback("Aborted", f"undo to revision {target.number}", outcome="aborted")
        spec_rev = self.facts.spec_revision.revision
        if spec_rev != target.revision:
            self.s.held_back = HeldBackStatus(
                revision=spec_rev,
                number=self._number_for(spec_rev),
                outcome="undone",
                reason=f"undo to revision {target.number}; change the spec or `retry` to roll the spec out",
                time=fmt(self.now),
            )
        if target.revision == stable.revision:
            return True, f"stable is revision {target.number}; the spec's revision is held back"
        self.s.candidate = self._new_revision(target, "undo")
        self.s.current_step = None
        self.event("UndoStarted", f"redeploying revision {target.number} ({target.model_version})")
        return True, f"redeploying revision {target.number}; it becomes stable once ready"

    def _undo_target(self, to_revision: int | None, stable: RevisionStatus) -> RevisionStatus | None:
        known = {r.number: r for r in self.s.revisions or [] if r.template}
        if to_revision is not None:
            return known.get(to_revision)
        promoted = [h for h in self.s.history or [] if h.outcome == "promoted" and h.revision != stable.revision]
        for entry in reversed(promoted):
            if entry.number in known:
                return known[entry.number]
        return None

    # -- following the spec ----------------------------------------------------------------------------

    def _follow_spec(self) -> bool:
        want = self.facts.spec_revision
        s = self.s
        if s.held_back is not None and s.held_back.revision != want.revision and s.held_back.outcome != "undone":
            self.event("SpecChanged", f"spec changed; revision {s.held_back.number} is no longer held back")
            s.held_back = None
            return True
        if s.held_back is not None and s.held_back.outcome == "undone" and s.held_back.revision != want.revision:
            s.held_back = None  # a new spec after an undo: roll it out
            return True
        if s.stable is None and s.candidate is None:
            s.stable = self._new_revision(want, "spec")
            self._set_traffic(0, 0)
            self.event("Deploying", f"first revision {s.stable.number} ({want.model_version}) deployed as stable")
            return True
        if s.stable is not None and s.stable.revision == want.revision:
            if s.candidate is not None and s.candidate.origin == "spec":
                self._supersede("the spec went back to the stable revision")
                return True
            return False
        if s.candidate is not None and s.candidate.revision == want.revision:
            return False
        if s.held_back is not None and s.held_back.revision == want.revision:
            return False
        if s.stable is not None and s.candidate is None and not s.history and not self._stable_ever_available():
            old = s.stable.revision
            s.stable = self._new_revision(want, "spec")
            self._schedule_removal(old, 0, "replaced before it ever served")
            self.event("Deploying", f"revision {s.stable.number} replaces a stable that never became available")
            return True
        if s.candidate is not None:
            self._supersede(f"superseded by revision {self._number_for(want.revision)}")
        s.candidate = self._new_revision(want, "spec")
        s.current_step = None
        self._set_traffic(0, 0)
        self.event(
            "RolloutStarted",
            f"revision {s.candidate.number} ({want.model_version}) deployed as candidate; "
            f"{len(self.steps)} steps once ready",
        )
        return True

    def _first_available(self) -> bool:
        """The first revision answering for the first time: history records it as promoted."""
        stable = self.s.stable
        if stable is None or self.s.history or not self._serving():
            return False
        self._history(stable, "promoted", "first revision available")
        return True

    def _stable_ever_available(self) -> bool:
        cond = next((c for c in self.s.conditions or [] if c.type == "Available"), None)
        return (cond is not None and cond.status == "True") or self.facts.track(self._stable_rev()).available

    def _serving(self) -> bool:
        """Clients get answers: the stable revision has a ready pod and so does the gateway in front of it."""
        return self.facts.track(self._stable_rev()).available and self.facts.gateway_serves()

    def _stable_rev(self) -> str:
        return self.s.stable.revision if self.s.stable else ""

    def _supersede(self, reason: str) -> None:
        cand = self.s.candidate
        assert cand is not None
        self._history(cand, "superseded", reason)
        self._schedule_removal(cand.revision, DRAIN_SECONDS, "superseded")
        self.s.candidate = None
        self.s.current_step = None
        self.s.hold = None
        self._set_traffic(0, 0)
        self.event("Superseded", f"rollout of revision {cand.number} stopped: {reason}", warning=True)

    # -- the candidate's progress ----------------------------------------------------------------------

    def _progress_candidate(self) -> bool:
        cand = self.s.candidate
        if cand is None:
            return False
        tf = self.facts.track(cand.revision)
        if tf.digest_mismatch:
            self._rollback("CandidateDigestMismatch", f"the model file's sha256 is not {cand.sha256}: {tf.detail}")
            return True
        if tf.crash_looping:
            self._rollback("CandidateCrashLoop", f"the candidate's pods are crash-looping: {tf.detail}")
            return True
        step = self.s.current_step
        if step is None:
            return self._await_ready(cand, tf.ready)
        verdict = self._relevant_verdict()
        if verdict is not None and verdict.verdict == "rollback":
            if self.policy.on_failure == "rollback":
                self._rollback("AnalysisFailed", verdict.reason)
                return True
            if self.s.hold is None:
                self._hold("AnalysisFailed", f"rollback verdict, policy onFailure=pause: {verdict.reason}", zero=True)
                return True
        if self._paused():
            return False
        return self._step_progress(step, verdict)

    def _await_ready(self, cand: RevisionStatus, ready: bool) -> bool:
        if not ready:
            deadline = parse_duration(self.policy.progress_deadline)
            if self._elapsed(cand.started_at) > deadline:
                self._rollback(
                    "ProgressDeadlineExceeded",
                    f"candidate not ready within progressDeadline {self.policy.progress_deadline}",
                )
                return True
            return False
        if cand.origin == "undo":
            self._promote(f"undo: revision {cand.number} is ready")
            return True
        if self._paused():
            return False
        self._start_step(0)
        return True

    def _step_progress(self, step: StepStatus, verdict: Verdict | None) -> bool:
        spec = self.steps[step.index] if step.index < len(self.steps) else None
        if spec is None:  # the policy lost steps mid-rollout: the candidate has passed all that remain
            self._promote("the policy has no further steps")
            return True
        elapsed = self._elapsed(step.started_at)
        if spec.pause is not None:
            if spec.pause.duration is not None and elapsed >= parse_duration(spec.pause.duration):
                self._advance(f"pause of {spec.pause.duration} over")
                return True
            return False
        if spec.blue_green is not None and not spec.blue_green.preview_analysis:
            self._advance("blue-green switch without preview analysis")
            return True
        min_requests, max_duration = _limits(spec)
        if verdict is not None and verdict.verdict == "promote":
            answered = verdict.candidate_requests
            if answered >= min_requests:
                self._advance(f"promote verdict with {answered} requests: {verdict.reason}")
                return True
        if elapsed > max_duration:
            last = self.s.last_analysis
            detail = f"last verdict {last.verdict}: {last.reason}" if last else "no verdict yet"
            message = f"step {step.index} ({step.kind}) ran past maxDuration without a promote verdict ({detail})"
            if self.policy.on_inconclusive.action == "rollback":
                self._rollback("Inconclusive", message)
            else:
                self._hold("Inconclusive", f"{message}; holding for a human (promote or abort)", zero=False)
            return True
        return False

    def _start_step(self, index: int, carried: dict[str, float] | None = None) -> None:
        spec = self.steps[index]
        self.s.current_step = StepStatus(index=index, kind=spec.kind, started_at=fmt(self.now), carried_in=carried)
        self._step_traffic(spec)
        self.event("StepStarted", f"step {index} ({spec.kind}) started: {_describe(spec)}")

    def _step_traffic(self, spec: Step) -> None:
        if spec.shadow is not None:
            self._set_traffic(0, spec.shadow.mirror_percent)
        elif spec.canary is not None:
            self._set_traffic(spec.canary.weight, 0)
        elif spec.blue_green is not None:
            bg = spec.blue_green
            self._set_traffic(0, bg.preview_mirror_percent if bg.preview_analysis else 0)
        # a pause holds the split it finds

    def _advance(self, reason: str) -> None:
        step = self.s.current_step
        assert step is not None
        self.actions.append(StepFinished(step.kind, self._elapsed(step.started_at)))
        self.event("StepPassed", f"step {step.index} ({step.kind}) passed: {reason}")
        spec = self.steps[step.index] if step.index < len(self.steps) else None
        if spec is None or spec.blue_green is not None or step.index + 1 >= len(self.steps):
            self._promote(reason)
            return
        # The rollout's evidence passes to the next step (through pauses unchanged). A test this step never
        # measured keeps what it carried in, which forgets this step's restart term: always valid.
        carried = {**(step.carried_in or {}), **(step.carried_out or {})}
        self._start_step(step.index + 1, carried or None)

    def _promote(self, reason: str) -> None:
        cand, old = self.s.candidate, self.s.stable
        assert cand is not None
        if old is not None and old.revision != cand.revision:
            delay = PROMOTE_SCALE_DOWN_SECONDS
            bg = next((s.blue_green for s in self.steps if s.blue_green is not None), None)
            if bg is not None:
                delay = parse_duration(bg.scale_down_delay)
            self._schedule_removal(old.revision, delay, f"replaced by revision {cand.number}")
        self._history(cand, "promoted", reason)
        self.s.stable = cand
        self.s.candidate = None
        self.s.current_step = None
        self.s.hold = None
        self._set_traffic(0, 0)
        self.event("Promoted", f"revision {cand.number} ({cand.model_version}) is stable: {reason}")

    def _rollback(self, code: str, reason: str, outcome: Outcome = "rolledBack") -> None:
        cand = self.s.candidate
        assert cand is not None
        self._set_traffic(0, 0)
        self._history(cand, outcome, f"{code}: {reason}")
        self._schedule_removal(cand.revision, DRAIN_SECONDS, f"{outcome}: {code}")
        if cand.revision == self.facts.spec_revision.revision:
            self.s.held_back = HeldBackStatus(
                revision=cand.revision,
                number=cand.number,
                outcome="aborted" if outcome == "aborted" else "rolledBack",
                reason=f"{code}: {reason}"[:1024],
                time=fmt(self.now),
            )
        self.s.candidate = None
        self.s.current_step = None
        self.s.hold = None
        verb = "aborted" if outcome == "aborted" else "rolled back"
        self.event(code, f"revision {cand.number} {verb}; candidate weight set to 0: {reason}", warning=True)

    def _hold(self, code: str, reason: str, zero: bool) -> None:
        self.s.hold = reason[:1024]
        if zero:
            self._set_traffic(0, 0)
        self.event("RolloutHeld", f"{code}: {reason}", warning=True)

    # -- housekeeping ----------------------------------------------------------------------------------

    def _scale_downs(self) -> None:
        in_use = {r.revision for r in (self.s.stable, self.s.candidate) if r is not None}
        keep: list[ScaleDownStatus] = []
        for entry in self.s.scale_downs or []:
            if entry.revision in in_use:
                continue
            if parse(entry.at) <= self.now:
                self.actions.append(RemoveTrack(entry.revision, entry.reason))
                self.event("ScaledDown", f"revision {entry.revision} removed ({entry.reason})")
            else:
                keep.append(entry)
        self.s.scale_downs = keep or None

    def _finish(self) -> None:
        s, facts = self.s, self.facts
        s.observed_generation = facts.generation
        s.policy = facts.policy[:300]
        traffic = s.traffic or TrafficStatus(stable=100, candidate=0)
        routed_candidate = s.candidate.revision if s.candidate and (traffic.candidate or traffic.mirror) else None
        key = (self._stable_rev(), routed_candidate, traffic.candidate, traffic.mirror)
        before = self.before
        old_t = before.traffic or TrafficStatus(stable=100, candidate=0)
        old_cand = before.candidate.revision if before.candidate and (old_t.candidate or old_t.mirror) else None
        old_key = (before.stable.revision if before.stable else "", old_cand, old_t.candidate, old_t.mirror)
        version = old_t.version + 1 if key != old_key or before.traffic is None else old_t.version
        s.traffic = traffic.model_copy(update={"version": version})
        s.stable_version = s.stable.model_version if s.stable else None
        s.candidate_version = s.candidate.model_version if s.candidate else None
        split = f"{s.traffic.stable}/{s.traffic.candidate}"
        s.traffic_split = f"{split} mirror {s.traffic.mirror}%" if s.traffic.mirror else split
        s.phase, s.message = self._phase()
        self._conditions()
        if s.phase != before.phase:
            self.event(f"Phase{s.phase}", s.message or "", warning=s.phase == "Degraded")
        if s.stable is not None:
            self.actions.append(EnsureTrack(s.stable, "stable"))
        if s.candidate is not None:
            self.actions.append(EnsureTrack(s.candidate, "candidate"))
        if s.stable is not None:
            mode: Literal["canary", "blueGreen"] = "blueGreen" if self.policy.strategy.is_blue_green else "canary"
            self.actions.append(
                SetRoutes(s.stable.revision, routed_candidate, traffic.candidate, traffic.mirror, mode, version)
            )

    def _phase(self) -> tuple[Literal["Pending", "Progressing", "Paused", "Healthy", "Degraded"], str]:
        s = self.s
        stable_tf = self.facts.track(self._stable_rev())
        if s.candidate is not None:
            step = s.current_step
            where = f"step {step.index + 1}/{len(self.steps)} ({step.kind})" if step else "waiting for readiness"
            what = f"revision {s.candidate.number} ({s.candidate.model_version}): {where}"
            if s.hold:
                return "Paused", f"{what}; held: {s.hold}"
            if self._paused():
                why = "spec.paused" if self.facts.paused else "paused by command"
                return "Paused", f"{what}; {why}"
            return "Progressing", what
        if s.held_back is not None and s.held_back.outcome != "undone":
            return "Degraded", f"revision {s.held_back.number} {s.held_back.outcome}: {s.held_back.reason}"
        if s.stable is None:
            return "Pending", "nothing deployed yet"
        if self._serving():
            note = f"; spec revision held back: {s.held_back.reason}" if s.held_back is not None else ""
            return "Healthy", f"revision {s.stable.number} ({s.stable.model_version}) serving{note}"
        if stable_tf.digest_mismatch or stable_tf.crash_looping:
            return "Degraded", f"stable revision {s.stable.number} cannot start: {stable_tf.detail}"
        gateway = self.facts.gateway
        if stable_tf.available and gateway is not None:  # the model answers, the address clients call does not
            detail = f" ({gateway.detail})" if gateway.detail else ""
            waiting = f"revision {s.stable.number} ({s.stable.model_version}) ready; waiting for the gateway{detail}"
            problem = f"the gateway has no ready pods{detail}"
        else:
            waiting = f"revision {s.stable.number} ({s.stable.model_version}) starting"
            problem = f"stable revision {s.stable.number} has no ready pods"
        deadline = parse_duration(self.policy.progress_deadline)
        if not s.history and self._elapsed(s.stable.started_at) <= deadline:
            return "Pending", waiting
        return "Degraded", problem

    def _conditions(self) -> None:
        s = self.s
        available = self._serving()
        if available:
            available_reason = "StableAvailable"
        elif self.facts.track(self._stable_rev()).available:
            available_reason = "GatewayUnavailable"
        else:
            available_reason = "StableUnavailable"
        progressing = s.candidate is not None and s.phase == "Progressing"
        degraded = s.phase == "Degraded"
        wanted = [
            ("Available", available, available_reason),
            ("Progressing", progressing, "RolloutInProgress" if progressing else (s.phase or "Idle")),
            ("Degraded", degraded, "RolloutFailed" if degraded else "AsExpected"),
        ]
        old = {c.type: c for c in s.conditions or []}
        out: list[Condition] = []
        for ctype, value, reason in wanted:
            status: Literal["True", "False"] = "True" if value else "False"
            prev = old.get(ctype)
            changed = prev is None or prev.status != status
            out.append(
                Condition(
                    type=ctype,
                    status=status,
                    reason=reason,
                    message=(s.message or "")[:4096],
                    last_transition_time=fmt(self.now) if changed or prev is None else prev.last_transition_time,
                    observed_generation=self.facts.generation,
                )
            )
        s.conditions = out


def _limits(step: Step) -> tuple[int, float]:
    """minRequests and maxDuration (seconds) of an analysed step."""
    for sub in (step.shadow, step.canary, step.blue_green):
        if sub is not None:
            return sub.min_requests, parse_duration(sub.max_duration)
    raise AssertionError("pause steps have no analysis limits")


def _describe(step: Step) -> str:
    if step.shadow is not None:
        return f"mirror {step.shadow.mirror_percent}% to the candidate, at least {step.shadow.min_requests} requests"
    if step.canary is not None:
        return f"{step.canary.weight}% of live traffic to the candidate, at least {step.canary.min_requests} requests"
    if step.blue_green is not None:
        bg = step.blue_green
        preview = f"preview mirrored {bg.preview_mirror_percent}%" if bg.preview_analysis else "no preview analysis"
        return f"blue-green: {preview}, then switch all traffic at once"
    duration = step.pause.duration if step.pause is not None else None
    return f"pause for {duration}" if duration else "pause until resumed"
