"""One reconciliation of one ModelDeployment: observe, decide (pure), act. No kopf in here.

Observe: the object (read fresh, so status is the latest memory), its namespace's labels, the policies,
the revision Deployments and pods, the command annotation, and, when a look is due, the analysis verdict.
Decide: `mlrollout.policy` then `mlrollout.rollout.decide`. Act: server-side apply of the children and the
routes, deletes, Events, metrics, and the new status through the status subresource with the
resourceVersion read at the start (a concurrent writer makes it fail with Conflict; the next pass redoes
it from the newer status, so no step is repeated or skipped). The spec is never written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mlrollout.analysis import AnalysisTarget
from mlrollout.api.common import Condition, parse_duration
from mlrollout.api.fallbackpolicy import FallbackPolicy, FallbackPolicySpec
from mlrollout.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from mlrollout.api.rolloutpolicy import RolloutPolicy, RolloutPolicySpec
from mlrollout.controller import children, metrics, naming
from mlrollout.controller.kube import KubeApi, api_error_message
from mlrollout.controller.observe import CommandError, facts_by_revision, gateway_facts, parse_command
from mlrollout.controller.profiles import ProfileCache
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.verdicts import VerdictSource, to_fact
from mlrollout.policy import (
    PolicyError,
    analysed_index,
    analysed_steps,
    resolve_fallback_policy,
    resolve_rollout_policy,
)
from mlrollout.revision import RevisionTemplate, revision_of
from mlrollout.rollout import (
    Command,
    EnsureTrack,
    Facts,
    RecordEvent,
    RemoveTrack,
    RolloutFinished,
    SetRoutes,
    StepFinished,
    Verdict,
    decide,
)
from mlrollout.rollout.timefmt import fmt, parse
from mlrollout.traffic.base import Backend, FallbackSetting, Manifest, RouteIntent, StickySetting
from mlrollout.traffic.registry import router_for

Log = logging.Logger | logging.LoggerAdapter[Any]
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"


@dataclass(frozen=True)
class Outcome:
    """What one pass did, for the handler's log line."""

    phase: str | None
    changed: bool
    events: tuple[str, ...]


def _parse_list(items: list[Manifest], model: type[Any], log: Log) -> list[Any]:
    out = []
    for item in items:
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            name = (item.get("metadata") or {}).get("name", "?")
            log.warning("ignoring invalid %s %s: %s", model.__name__, name, str(exc).splitlines()[0])
    return out


def _candidate_profile(status: ModelDeploymentStatus) -> str | None:
    """The candidate's referenceProfile URI, from the template stored with its revision."""
    cand = status.candidate
    if cand is None or not cand.template:
        return None
    return RevisionTemplate.from_json(cand.template).model.reference_profile


def _lenient_status(raw: Any) -> ModelDeploymentStatus:
    """The stored status if it still parses, else an empty one (the next good pass rewrites it)."""
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValidationError:
        return ModelDeploymentStatus()


def fallback_setting(
    spec: FallbackPolicySpec, namespace: str, model_names: Mapping[str, str] | None = None
) -> FallbackSetting:
    """The FallbackPolicy as the data plane needs it: backups resolved to their gateway Services.

    ``model_names`` maps a backup ModelDeployment to the model name it serves (its ``spec.model.name``),
    which the gateway puts in the path; a backup not in it is called by its ModelDeployment's name.
    """
    chain: list[Manifest] = []
    for link in spec.chain:
        if link.action == "backup" and link.backup:
            backup: Manifest = {"name": link.backup, "upstream": naming.gateway_url(namespace, link.backup)}
            if model_names and link.backup in model_names:
                backup["modelName"] = model_names[link.backup]
            chain.append({"action": "backup", "backup": backup})
        elif link.action == "default" and link.response is not None:
            chain.append({"action": "default", "defaultResponse": link.response.to_dict()})
        else:
            chain.append({"action": link.action})
    low = spec.low_confidence_action
    low_manifest: Manifest | None = None
    if low is not None:
        low_manifest = {"action": low.action}
        if low.action == "default" and low.response is not None:
            low_manifest["defaultResponse"] = low.response.to_dict()
    return FallbackSetting(
        request_timeout_seconds=parse_duration(spec.request_timeout),
        consecutive_failures=spec.circuit_breaker.consecutive_failures,
        open_seconds=parse_duration(spec.circuit_breaker.open_duration),
        confidence_threshold=spec.confidence_threshold,
        chain=tuple(chain),
        low_confidence_action=low_manifest,
    )


def _command(annotations: Mapping[str, str]) -> Command | None:
    try:
        return parse_command(annotations)
    except CommandError as exc:
        raw = annotations.get(naming.COMMAND_ANNOTATION, "")
        digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
        return Command(id=f"invalid-{digest}", verb=f"invalid: {exc}"[:32])


def analysis_due(status: ModelDeploymentStatus, policy: RolloutPolicySpec, now: datetime) -> bool:
    """A look is due one interval after the step started and one interval after the last look."""
    step, cand = status.current_step, status.candidate
    if step is None or cand is None or step.kind == "pause":
        return False
    since = parse(step.started_at)
    last = status.last_analysis
    if last is not None and parse(last.time) > since:
        since = parse(last.time)
    return (now - since).total_seconds() >= parse_duration(policy.analysis.interval)


class Reconciler:
    """Observe, decide, act for one ModelDeployment at a time; all I/O through `kube` and `verdicts`."""

    def __init__(self, kube: KubeApi, verdicts: VerdictSource, settings: OperatorSettings) -> None:
        self.kube = kube
        self.verdicts = verdicts
        self.settings = settings
        self.profiles = ProfileCache()

    def reconcile(self, namespace: str, name: str, log: Log, now: datetime) -> Outcome | None:
        started = time.monotonic()
        try:
            return self._reconcile(namespace, name, log, now)
        except Exception as exc:
            metrics.RECONCILE_ERRORS.labels(namespace, name, type(exc).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    def _reconcile(self, namespace: str, name: str, log: Log, now: datetime) -> Outcome | None:
        obj = self.kube.get_model_deployment(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None  # gone: the garbage collector removes the children
        generation = int(obj["metadata"].get("generation") or 1)
        try:
            md = ModelDeployment.model_validate(obj)
        except ValidationError as exc:  # the CRD's schema should prevent it; say so rather than crash-loop
            status = _lenient_status(obj.get("status"))
            first = str(exc).splitlines()
            message = f"spec does not validate: {'; '.join(first[:3])}"
            return self._not_governable(obj, status, generation, "InvalidSpec", message, now)
        status = md.status or ModelDeploymentStatus()
        try:
            ns_labels = self.kube.namespace_labels(namespace)
            rollout_policies = _parse_list(self.kube.list_policies("rolloutpolicies"), RolloutPolicy, log)
            fallback_policies = _parse_list(self.kube.list_policies("fallbackpolicies"), FallbackPolicy, log)
            resolved = resolve_rollout_policy(md, ns_labels, rollout_policies)
            fallback = resolve_fallback_policy(md, ns_labels, fallback_policies)
        except PolicyError as exc:
            return self._not_governable(obj, status, generation, "PolicyError", str(exc), now)
        policy = resolved.spec
        policy_label = f"{resolved.name or 'built-in default'} ({resolved.source})"

        deployments, pods = self.kube.list_children(namespace, name)
        verdict = self._look(md, status, policy, now, log)
        facts = Facts(
            spec_revision=revision_of(md.spec, self.settings.serving_image),
            generation=generation,
            tracks=facts_by_revision(deployments, pods),
            gateway=gateway_facts(deployments, pods) if self._provider(obj) == "builtin" else None,
            verdict=verdict,
            command=_command(obj["metadata"].get("annotations") or {}),
            paused=md.spec.paused,
            policy=policy_label,
        )
        decision = decide(status, facts, policy, now)
        self._act(obj, md, decision.actions, fallback.spec, log)
        changed = decision.status != status
        if changed:  # the commit point: a conflict here redoes the whole pass from the newer status
            self.kube.replace_status({**obj, "status": decision.status.to_dict()})
        self._announce(obj, decision.actions, log)  # only after the commit, so a retried pass never repeats them
        events = tuple(a.reason for a in decision.actions if isinstance(a, RecordEvent))
        return Outcome(decision.status.phase, changed, events)

    def _look(
        self, md: ModelDeployment, status: ModelDeploymentStatus, policy: RolloutPolicySpec, now: datetime,
        log: Log,
    ) -> Verdict | None:  # fmt: skip
        if not analysis_due(status, policy, now):
            return None
        assert status.candidate is not None and status.current_step is not None and status.stable is not None
        kind = status.current_step.kind
        target = AnalysisTarget(
            namespace=str(md.metadata["namespace"]),
            model_deployment=str(md.metadata["name"]),
            stable_revision=status.stable.revision,
            candidate_revision=status.candidate.revision,
            source="model" if kind in ("shadow", "blueGreen") else "gateway",
            reference=self.profiles.get(_candidate_profile(status)),
        )
        window = max((now - parse(status.current_step.started_at)).total_seconds(), 1.0)
        started = time.monotonic()
        step = status.current_step
        evidence = {  # the whole rollout is held to the policy's alpha: earlier steps' evidence counts
            "step": analysed_index(policy.strategy, step.index),
            "steps": max(analysed_steps(policy.strategy), 1),
            "carried": step.carried_in or {},
        }
        result = self.verdicts.look(target, policy, window, evidence)
        fact = to_fact(result, status.candidate.revision, now, policy.significance.alpha)
        metrics.ANALYSIS_DURATION.labels(fact.verdict).observe(time.monotonic() - started)
        log.info("analysis: %s (%s)", fact.verdict, fact.reason)
        return fact

    def _act(
        self, obj: Manifest, md: ModelDeployment, actions: list[Any], fallback: FallbackPolicySpec,
        log: Log,
    ) -> None:  # fmt: skip
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        provider = self._provider(obj)
        router = router_for(provider)
        owner = children.owner_reference(obj)
        manifests: list[Manifest] = []
        if provider == "builtin":
            with_sm = self.kube.has_crd(SERVICE_MONITOR_CRD)
            manifests += children.static_children(obj, self.settings, with_sm)
        else:
            manifests.append(children.disruption_budget(obj))
            if provider == "istio":
                manifests.append(children.mesh_entry_service(obj, md.spec.serving.port))
        for action in actions:
            if isinstance(action, EnsureTrack):
                replicas = md.spec.replicas
                manifests.append(children.track_deployment(obj, action.revision, action.track, replicas))
                manifests.append(children.track_service(obj, action.revision, action.track))
        for manifest in manifests:
            self.kube.apply(children.strip_none(manifest))
        for action in actions:
            if isinstance(action, SetRoutes):
                intent = self._intent(namespace, name, md, action, fallback, owner)
                for manifest in router.manifests(intent):
                    self.kube.apply(children.strip_none(manifest))
            elif isinstance(action, RemoveTrack):
                track = naming.track_name(name, action.revision)
                self.kube.delete("apps/v1", "Deployment", namespace, track)
                self.kube.delete("v1", "Service", namespace, track)
                log.info("removed revision %s (%s)", action.revision, action.reason)

    def _announce(self, obj: Manifest, actions: list[Any], log: Log) -> None:
        """Events and metrics: edge-triggered, so they follow the status write that made them true."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        for action in actions:
            if isinstance(action, RecordEvent):
                try:
                    self.kube.post_event(obj, action.type, action.reason, action.message)
                except Exception as exc:  # an Event is an explanation, never a reason to fail the pass
                    log.warning("could not post event %s: %s", action.reason, api_error_message(exc))
                log.info("event %s: %s", action.reason, action.message)
            elif isinstance(action, RolloutFinished | StepFinished):
                metrics.observe_action(namespace, name, action)

    def _provider(self, obj: Manifest) -> str:
        traffic = (obj.get("spec") or {}).get("traffic") or {}
        return str(traffic.get("provider") or self.settings.default_traffic_provider)

    def _intent(
        self, namespace: str, name: str, md: ModelDeployment, action: SetRoutes, fallback: FallbackPolicySpec,
        owner: Manifest,
    ) -> RouteIntent:  # fmt: skip
        port = md.spec.serving.port

        def backend(revision: str | None) -> Backend | None:
            if revision is None:
                return None
            return Backend(service=naming.track_name(name, revision), port=port, revision=revision)

        sticky = md.spec.traffic.sticky
        sticky_setting = StickySetting(sticky.header, sticky.json_field) if sticky is not None else None
        mode = action.mode if action.mode == "blueGreen" or sticky is None else "ab"
        return RouteIntent(
            namespace=namespace,
            name=name,
            stable=backend(action.stable),
            candidate=backend(action.candidate),
            candidate_weight=action.candidate_weight,
            mirror_percent=action.mirror_percent,
            mode=mode,
            sticky=sticky_setting,
            fallback=fallback_setting(fallback, namespace, self._backup_model_names(namespace, fallback)),
            version=action.version,
            owner=owner,
        )

    def _backup_model_names(self, namespace: str, fallback: FallbackPolicySpec) -> dict[str, str]:
        """The model name each backup ModelDeployment serves; a missing backup is left out (and answers
        404 until it exists, which the gateway counts as a failed fallback step)."""
        names: dict[str, str] = {}
        for link in fallback.chain:
            if link.action == "backup" and link.backup and link.backup not in names:
                backup = self.kube.get_model_deployment(namespace, link.backup)
                model = ((backup or {}).get("spec") or {}).get("model") or {}
                if isinstance(model.get("name"), str) and model["name"]:
                    names[link.backup] = model["name"]
        return names

    def _not_governable(
        self, obj: Manifest, status: ModelDeploymentStatus, generation: int, reason: str, message: str,
        now: datetime,
    ) -> Outcome:  # fmt: skip
        """A policy that cannot be resolved, or a spec that does not validate: Degraded with the reason and
        the words of the policy or validator; nothing else changes (what runs keeps running)."""
        new = status.model_copy(deep=True)
        new.observed_generation = generation
        new.message = message[:1024]
        if new.candidate is None:
            new.phase = "Degraded"
        conds = [c for c in new.conditions or [] if c.type != "Degraded"]
        old = next((c for c in new.conditions or [] if c.type == "Degraded"), None)
        since = old.last_transition_time if old is not None and old.status == "True" else fmt(now)
        conds.append(
            Condition(
                type="Degraded",
                status="True",
                reason=reason,
                message=message[:4096],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
        new.conditions = conds
        changed = new != status
        if changed:
            self.kube.replace_status({**obj, "status": new.to_dict()})
            self.kube.post_event(obj, "Warning", reason, message)
        return Outcome(new.phase, changed, (reason,) if changed else ())
