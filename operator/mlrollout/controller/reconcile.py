"""One reconciliation of one ModelDeployment: observe, decide (pure), act. No kopf in here.

Observe: the object (read fresh, so status is the latest memory), its namespace's labels, the policies,
the revision Deployments and pods, the command annotation, and, when a look is due, the analysis verdict.
Decide: `mlrollout.policy` then `mlrollout.rollout.decide`. Act: server-side apply of the children and the
routes, deletes, Events, metrics, and the new status through the status subresource with the
resourceVersion read at the start (a concurrent writer makes it fail with Conflict; the next pass redoes
it from the newer status, so no step is repeated or skipped). The spec is never written.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from mlrollout.analysis import AnalysisTarget
from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.collect import BackendCounter
from mlrollout.analysis.snapshot import Split
from mlrollout.api import commands
from mlrollout.api.common import Condition
from mlrollout.api.fallbackpolicy import FallbackPolicy, FallbackPolicySpec
from mlrollout.api.modeldeployment import (
    AutoscalingStatus,
    GatewayAutoscaling,
    ModelDeployment,
    ModelDeploymentStatus,
    RevisionStatus,
    TrafficStatus,
)
from mlrollout.api.rolloutpolicy import Notifications, RolloutPolicy, RolloutPolicySpec
from mlrollout.controller import applied, children, evaluation, metrics, naming, pacing, scaling
from mlrollout.controller.hooks import HookCaller
from mlrollout.controller.kube import KubeApi, api_error_message
from mlrollout.controller.notifications import Notifier
from mlrollout.controller.observe import facts_by_revision, gateway_facts, starting_pods
from mlrollout.controller.profiles import ProfileCache
from mlrollout.controller.registry import (
    CachingResolver,
    ModelResolver,
    RegistryAuth,
    ResolutionError,
    auth_from_secret,
)
from mlrollout.controller.routing import ParentRef, gateway_api_routing, not_applied
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.verdicts import VerdictSource
from mlrollout.notify.messages import deliveries
from mlrollout.policy import (
    PolicyError,
    analysed_index,
    analysed_steps,
    fallback_settings,
    resolve_fallback_policy,
    resolve_rollout_policy,
)
from mlrollout.revision import Resolved, RevisionTemplate, needs_resolution, revision_of, spec_hash
from mlrollout.rollout import (
    Action,
    EnsureTrack,
    EvaluationFact,
    Facts,
    Look,
    RecordEvent,
    RemoveRoutes,
    RemoveTrack,
    RolloutFinished,
    Routing,
    RunEvaluation,
    SetRoutes,
    StepFinished,
    StopEvaluation,
    TrackFacts,
    Unresolved,
    analysis_due,
    decide,
    lookhistory,
    not_governable,
)
from mlrollout.rollout.looks import evidence_source, quality_design
from mlrollout.rollout.timefmt import fmt, parse
from mlrollout.traffic.base import Backend, Manifest, RouteIntent, TrafficRouter
from mlrollout.traffic.registry import router_for
from mlrollout_serving.contract.process import feedback_secret_name
from mlrollout_serving.contract.routes import BackupModel, Sticky
from mlrollout_serving.contract.startup import last_startup

Log = logging.Logger | logging.LoggerAdapter[Any]
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"
HPA = ("autoscaling/v2", "HorizontalPodAutoscaler")
SCALING_ACTIVE = "ScalingActive"
GATEWAY_SCALING_ACTIVE = "GatewayScalingActive"
NETWORK_POLICY = ("networking.k8s.io/v1", "NetworkPolicy")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Reconciled:
    """What one pass did, for the handler's log line."""

    phase: str | None
    changed: bool
    events: tuple[str, ...]
    idle: bool = False  # nothing waits for the clock: the timer may pass less often (controller/pacing.py)


def _parse_list(items: list[Manifest], model: type[M], log: Log) -> list[M]:
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


def _backend(name: str, md: ModelDeployment, revision: str) -> Backend:
    """A revision's Service, as the routes name it."""
    return Backend(service=naming.track_name(name, revision), port=md.spec.serving.port, revision=revision)


def _split(traffic: TrafficStatus | None, sticky: bool) -> Split | None:
    """The split the route table asks for: live requests by weight (assigned by key when a sticky key is set
    and the candidate has live traffic) and the mirror share."""
    if traffic is None:
        return None
    return Split.from_percent(traffic.stable, traffic.candidate, traffic.mirror, sticky and traffic.candidate > 0)


def _lenient_status(raw: Any) -> ModelDeploymentStatus:
    """The stored status if it still parses, else an empty one (the next good pass rewrites it)."""
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValidationError:
        return ModelDeploymentStatus()


class Reconciler:
    """Observe, decide, act for one ModelDeployment at a time; all I/O through `kube` and `verdicts`."""

    def __init__(
        self, kube: KubeApi, verdicts: VerdictSource, settings: OperatorSettings, resolver: ModelResolver | None = None,
        notifier: Notifier | None = None, hooks: HookCaller | None = None,
    ) -> None:  # fmt: skip
        self.kube = kube
        self.notifier = notifier
        self.hooks = hooks
        self.resolver: ModelResolver = resolver or CachingResolver()
        self.verdicts = verdicts
        self.settings = settings
        self.profiles = ProfileCache()
        self._np_forbidden: set[tuple[str, str]] = set()  # only so that the warning is logged once
        self._feedback_keys: set[str] = set()  # uids whose feedback Secret exists (one POST per process)
        self._feedback_forbidden: set[str] = set()
        self._routing_forbidden: set[str] = set()  # kinds the RBAC does not let us read
        # (namespace, name) -> (uid, generation) at which this process last deleted the gateway's HPA
        self._gateway_hpa_cleaned: dict[tuple[str, str], tuple[str, int]] = {}
        self._logs_forbidden: set[str] = set()  # namespaces where the RBAC lacks get pods/log (said once)
        self.applied = applied.AppliedMemo()  # what this process applied: unchanged children are skipped
        self.clock = time.monotonic

    def reconcile(self, namespace: str, name: str, log: Log, now: datetime) -> Reconciled | None:
        started = time.monotonic()
        try:
            return self._reconcile(namespace, name, log, now)
        except Exception as exc:
            metrics.RECONCILE_ERRORS.labels(namespace, name, type(exc).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    def _reconcile(self, namespace: str, name: str, log: Log, now: datetime) -> Reconciled | None:
        obj = self.kube.get_model_deployment(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            metrics.forget(namespace, name)  # its series end with it (the delete handler may not run)
            self.applied.forget(namespace, name)
            self._gateway_hpa_cleaned.pop((namespace, name), None)
            return None  # gone: the garbage collector removes the children
        generation = int(obj["metadata"].get("generation") or 1)
        try:
            md = ModelDeployment.model_validate(obj)
        except ValidationError as exc:  # the CRD's schema should prevent it; say so rather than crash-loop
            status = _lenient_status(obj.get("status"))
            first = str(exc).splitlines()
            message = f"spec does not validate: {'; '.join(first[:3])}"
            return self._commit(obj, status, *not_governable(status, generation, "InvalidSpec", message, now), log)
        status = md.status or ModelDeploymentStatus()
        try:
            ns_labels = self.kube.namespace_labels(namespace)
            rollout_policies = _parse_list(self.kube.list_policies("rolloutpolicies"), RolloutPolicy, log)
            fallback_policies = _parse_list(self.kube.list_policies("fallbackpolicies"), FallbackPolicy, log)
            resolved = resolve_rollout_policy(md, ns_labels, rollout_policies)
            fallback = resolve_fallback_policy(md, ns_labels, fallback_policies)
        except PolicyError as exc:
            return self._commit(obj, status, *not_governable(status, generation, "PolicyError", str(exc), now), log)
        policy = resolved.spec

        deployments, pods = self.kube.list_children(namespace, name)
        provider = self._provider(md)
        chosen_fallback = f"{fallback.name} ({fallback.source})" if fallback.name else None
        routing = self._routing(
            namespace, name, provider, chosen_fallback, policy.analysis.metrics.quality.enabled,
            policy.analysis.metrics.split.enabled and not self._split_counter(provider), log,
        )  # fmt: skip
        spec_revision, unresolved = self._spec_revision(md, status)
        facts = Facts(
            spec_revision=spec_revision,
            unresolved=unresolved,
            generation=generation,
            tracks=self._with_startup(namespace, facts_by_revision(deployments, pods), pods, status, log),
            gateway=gateway_facts(deployments, pods) if provider == "builtin" else None,
            routing=routing,
            look=self._look(md, status, policy, now, log),
            command=commands.from_annotations(obj["metadata"].get("annotations")),
            paused=md.spec.paused,
            sticky=md.spec.traffic.sticky is not None,
            autoscaled=md.spec.autoscaling is not None,
            policy=f"{resolved.name or 'built-in default'} ({resolved.source})",
            name=name,
            evaluation=self._evaluation(namespace, status, pods),
            hooks=self.hooks.answers(namespace, name, status) if self.hooks is not None else {},
        )
        decision = decide(status, facts, policy, now)
        after = decision.status
        step = after.current_step
        sizing = scaling.Sizing(
            spec_replicas=md.spec.replicas,
            autoscaling=md.spec.autoscaling,
            current=scaling.current_replicas(deployments),
            stable_before=status.stable.revision if status.stable else None,
            stable_after=after.stable.revision if after.stable else None,
            share=scaling.share_percent(step.kind if step else None, after.traffic, after.promoting is not None),
        )
        by_name = {d["metadata"]["name"]: d for d in deployments}
        # never a mirror the implementation cannot apply: the machine holds such a step instead
        router = router_for(provider, mirror=routing.mirror)
        self._act(obj, md, decision.actions, fallback.spec, router, sizing, by_name, log)
        actions = [
            *decision.actions,
            *self._autoscale(obj, md, status, after, now),
            *self._gateway_autoscale_status(obj, provider, status, after, now),
        ]
        if policy.analysis.metrics.quality.enabled and provider == "builtin":
            self._ensure_feedback_keys(obj, log)
        done = self._commit(obj, status, after, actions, log, policy.notifications, now)
        if facts.look is not None:
            self._record_look(obj, facts.look, after, log)
        if self.hooks is not None and after.approvals:  # asked after the status write, never waited for
            self.hooks.ask(obj, after, policy)
        return done

    def _with_startup(
        self, namespace: str, tracks: dict[str, TrackFacts], pods: list[Manifest], status: ModelDeploymentStatus,
        log: Log,
    ) -> dict[str, TrackFacts]:  # fmt: skip
        """The stable and candidate tracks that are not ready, with how far one starting pod of each is (the
        tail of its log: contract.startup). At most two pods' logs per pass, none once every track is ready.
        Best effort: a log that cannot be read (no such pod any more, no kubelet, RBAC) leaves it empty."""
        revisions = (status.stable.revision if status.stable else None,
                     status.candidate.revision if status.candidate else None)  # fmt: skip
        if namespace in self._logs_forbidden:
            return tracks
        out = dict(tracks)
        for rev, pod in starting_pods(tracks, pods, revisions).items():
            try:
                tail = self.kube.pod_log_tail(namespace, pod, naming.SERVER_CONTAINER)
            except ApiException as exc:
                if exc.status == 403:
                    self._logs_forbidden.add(namespace)
                    log.warning("start-up progress not shown, the RBAC lacks get pods/log (docs/operator.md, RBAC; "
                                "not asked again until the operator restarts): %s", api_error_message(exc))  # fmt: skip
                    return out
                log.debug("log of pod %s not read: %s", pod, api_error_message(exc))
                continue
            except Exception as exc:  # timeouts, a reset: the progress is an explanation, never worth a failure
                log.debug("log of pod %s not read: %s: %s", pod, type(exc).__name__, exc)
                continue
            found = last_startup(tail.splitlines())
            if found is not None:
                out[rev] = dataclasses.replace(out[rev], startup=found.summary())
        return out

    def _autoscale(
        self, obj: Manifest, md: ModelDeployment, before: ModelDeploymentStatus, after: ModelDeploymentStatus,
        now: datetime,
    ) -> list[Action]:  # fmt: skip
        """The stable track's HPA: applied (retargeted after a promotion), its status copied into ours with a
        ScalingActive condition, an Event when it stops or starts scaling; deleted when autoscaling is
        switched off. An HPA that cannot scale holds the replicas where they are: the rollout goes on."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        spec = md.spec.autoscaling
        if spec is None or after.stable is None:
            # also after a spec change: an HPA applied in a pass whose status write was lost is not in status
            if before.autoscaling is not None or before.observed_generation != after.observed_generation:
                self._delete(name, *HPA, namespace, name)  # absent: a no-op
            after.autoscaling = None
            after.conditions = [c for c in after.conditions or [] if c.type != SCALING_ACTIVE] or None
            return []
        self._apply(obj, children.strip_none(children.autoscaler(obj, after.stable.revision, spec)))
        found = self.kube.get(*HPA, namespace, name)
        after.autoscaling = scaling.hpa_status(found, naming.track_name(name, after.stable.revision))
        return self._scaling_condition(before, after, after.autoscaling, SCALING_ACTIVE, now)

    def _gateway_autoscale_status(
        self, obj: Manifest, provider: str, before: ModelDeploymentStatus, after: ModelDeploymentStatus,
        now: datetime,
    ) -> list[Action]:  # fmt: skip
        """The gateway's HPA (applied by `_act`) copied into status with its own condition, GatewayScalingActive,
        as the stable's: an HPA that cannot read its metric holds the gateway's replicas, said, never fatal."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        wanted = children.gateway_autoscaling(obj, self.settings) if provider == "builtin" else None
        if wanted is None:
            after.gateway_autoscaling = None
            after.conditions = [c for c in after.conditions or [] if c.type != GATEWAY_SCALING_ACTIVE] or None
            return []
        found = self.kube.get(*HPA, namespace, naming.gateway_autoscaler_name(name))
        after.gateway_autoscaling = scaling.hpa_status(found, naming.gateway_name(name))
        return self._scaling_condition(before, after, after.gateway_autoscaling, GATEWAY_SCALING_ACTIVE, now)

    def _scaling_condition(
        self, before: ModelDeploymentStatus, after: ModelDeploymentStatus, hpa: AutoscalingStatus, kind: str,
        now: datetime,
    ) -> list[Action]:  # fmt: skip
        """The condition `kind` (ScalingActive: the stable's HPA, GatewayScalingActive: the gateway's) from what
        the HPA says, and an Event when it stops (Warning) or starts scaling."""
        gateway = kind == GATEWAY_SCALING_ACTIVE
        who = "the gateway's HPA" if gateway else "the HPA"
        old = next((c for c in before.conditions or [] if c.type == kind), None)
        reason = {"True": "HPAScaling", "False": "MetricUnavailable", "Unknown": "HPAPending"}[hpa.scaling_active]
        message = {
            "True": f"{who} scales {hpa.target}",
            "False": f"{who} cannot scale {hpa.target}, its replicas stay where they are: {hpa.message}",
            "Unknown": f"{who} has not reported on {hpa.target} yet",
        }[hpa.scaling_active]
        changed = old is None or old.status != hpa.scaling_active
        condition = Condition(
            type=kind,
            status=hpa.scaling_active,
            reason=reason,
            message=message,
            last_transition_time=old.last_transition_time if old is not None and not changed else fmt(now),
            observed_generation=after.observed_generation,
        )
        after.conditions = [*(c for c in after.conditions or [] if c.type != kind), condition]
        if not changed or (old is None and hpa.scaling_active != "False"):
            return []
        prefix = "Gateway" if gateway else ""
        if hpa.scaling_active == "False":
            return [RecordEvent("Warning", f"{prefix}AutoscalingInactive", message)]
        return [RecordEvent("Normal", f"{prefix}AutoscalingActive", message)] if hpa.scaling_active == "True" else []

    def _record_look(self, obj: Manifest, look: Look, status: ModelDeploymentStatus, log: Log) -> None:
        """Append the look just written to status to the `<md>-looks` ConfigMap (after the status write, so a
        retried pass records nothing twice). Best effort: without it only the dashboard's plots are shorter."""
        point = lookhistory.point_of(status)
        if point is None or point.time != fmt(look.time):  # a look about another candidate is not recorded
            return
        meta = obj["metadata"]
        try:
            stored = self.kube.get("v1", "ConfigMap", meta["namespace"], lookhistory.configmap_name(meta["name"]))
            before = lookhistory.decode(((stored or {}).get("data") or {}).get(lookhistory.DATA_KEY))
            after = lookhistory.append(before, look.candidate_revision, point)
            self.kube.apply(children.looks_configmap(obj, lookhistory.encode(after)))
        except Exception as exc:
            log.warning("look history not written: %s: %s", type(exc).__name__, api_error_message(exc))

    def _evaluation(self, namespace: str, status: ModelDeploymentStatus, pods: list[Manifest]) -> EvaluationFact | None:
        """The running evaluation's Job and its pod (read only while status waits for its answer)."""
        ev = status.last_evaluation
        if ev is None or ev.phase != "Running":
            return None
        return evaluation.evaluation_fact(ev.job, self.kube.get("batch/v1", "Job", namespace, ev.job), pods)

    def _spec_revision(
        self, md: ModelDeployment, status: ModelDeploymentStatus
    ) -> tuple[RevisionStatus, Unresolved | None]:
        """The spec's revision; for a models:/ URI with the registry's answer, asked only for a revision
        status does not know yet (a known one keeps what was pinned when its rollout started)."""
        image = self.settings.serving_image
        if not needs_resolution(md.spec):
            return revision_of(md.spec, image), None
        wanted = spec_hash(md.spec, image)
        known = (r for r in (status.stable, status.candidate, *(status.revisions or [])) if r is not None)
        pinned = next((r for r in known if r.revision == wanted and r.sha256 and r.resolved_uri), None)
        if pinned is not None:
            assert pinned.resolved_uri is not None
            answer = Resolved(pinned.resolved_uri, pinned.sha256, pinned.model_version, pinned.run_id)
            return revision_of(md.spec, image, answer), None
        if status.held_back is not None and status.held_back.revision == wanted:
            # held back (refused or rolled back): not rolled out, so not asked, until `retry` or a new spec
            return revision_of(md.spec, image), Unresolved("held back: not asked again until retry", final=False)
        try:
            auth = self._registry_auth(md)
        except ResolutionError as e:
            return revision_of(md.spec, image), Unresolved(str(e), final=e.final)
        answer_or_error = self.resolver.resolve(md.spec.model, auth)
        if isinstance(answer_or_error, Unresolved):
            return revision_of(md.spec, image), answer_or_error
        return revision_of(md.spec, image, answer_or_error), None

    def _registry_auth(self, md: ModelDeployment) -> RegistryAuth | None:
        """The registry credentials the spec names, from their Secret (read when a revision is resolved, never
        kept): ResolutionError when the Secret is missing or holds no usable set (final: fix it, then
        `retry`), or cannot be read now (not final: asked again next pass)."""
        registry = md.spec.model.registry
        if registry is None or registry.credentials is None:
            return None
        name, namespace = registry.credentials.secret_ref.name, str(md.metadata["namespace"])
        try:
            secret = self.kube.get("v1", "Secret", namespace, name)
        except ApiException as exc:
            why = "the RBAC lacks get secrets" if exc.status == 403 else api_error_message(exc)
            message = f'registry credentials: Secret "{name}" cannot be read: {why}'
            raise ResolutionError(message, final=False) from None
        if secret is None:
            message = f'registry credentials: Secret "{name}" not found in namespace {namespace}'
            raise ResolutionError(message, final=True)
        return auth_from_secret(name, secret.get("data"))

    def _commit(
        self, obj: Manifest, before: ModelDeploymentStatus, after: ModelDeploymentStatus, actions: Sequence[Action],
        log: Log, notifications: Notifications | None = None, now: datetime | None = None,
    ) -> Reconciled:  # fmt: skip
        """Write the new status when it changed (the commit point: a conflict here redoes the whole pass
        from the newer status), then announce, so a retried pass never repeats an Event or a notification.
        A pass whose policy cannot be resolved has no notifications (its Event says why)."""
        changed = after != before
        if changed:
            self.kube.replace_status({**obj, "status": after.to_dict()})
        self._announce(obj, after, actions, log)
        if notifications is not None and now is not None:
            self._notify(obj, after, actions, notifications, now, log)
        events = tuple(a.reason for a in actions if isinstance(a, RecordEvent))
        generation = int(obj["metadata"].get("generation") or 1)
        return Reconciled(after.phase, changed, events, pacing.idle(after, generation))

    def _look(
        self, md: ModelDeployment, status: ModelDeploymentStatus, policy: RolloutPolicySpec, now: datetime,
        log: Log,
    ) -> Look | None:  # fmt: skip
        if not analysis_due(status, policy, now):
            return None
        step, cand, stable = status.current_step, status.candidate, status.stable
        assert cand is not None and step is not None and stable is not None
        # without the built-in gateway in the path (Gateway API, Istio) its series do not exist: the model
        # servers' own series, labelled with track and revision by the servers, are the evidence
        gateway_in_path = router_for(self._provider(md)).capabilities.gateway_series
        traffic = status.traffic
        target = AnalysisTarget(
            namespace=str(md.metadata["namespace"]),
            model_deployment=str(md.metadata["name"]),
            stable_revision=stable.revision,
            candidate_revision=cand.revision,
            source=evidence_source(step.kind, gateway_in_path),
            reference=self.profiles.get(_candidate_profile(status)),
            # the split the route table asks for, held against what the gateway routed (sample-ratio mismatch)
            split=_split(traffic, sticky=md.spec.traffic.sticky is not None),
            gateway_in_path=gateway_in_path,
            backend_counter=self._backend_counter(md, stable.revision, cand.revision),
            error_bound=policy.analysis.metrics.quality.clip_bound,
            design=quality_design(step.kind),  # from the step's configuration, never from its counts
        )
        window = max((now - parse(step.started_at)).total_seconds(), 1.0)
        # the whole rollout is held to the policy's alpha: earlier steps' evidence counts
        evidence = StepEvidence(
            step=analysed_index(policy.strategy, step.index),
            steps=max(analysed_steps(policy.strategy), 1),
            carried=step.carried_in or {},
        )
        started = time.monotonic()
        judgement = self.verdicts.look(target, policy, window, evidence)
        metrics.observe_look(target.namespace, target.model_deployment, judgement.verdict, time.monotonic() - started)
        log.info("analysis from %s series: %s (%s)", target.source, judgement.verdict, judgement.reason)
        return Look(judgement, now, cand.revision, target.source)

    def _routing(
        self, namespace: str, name: str, provider: str, fallback: str | None, quality: bool, split: bool, log: Log
    ) -> Routing:
        """What the provider's implementation says about our route (Gateway API), and what it cannot do.
        RBAC without `get` on Gateway API objects (a hand-made Role from an older chart) leaves acceptance
        unchecked, said once: the rollout goes on as before."""
        router = router_for(provider)
        notes = not_applied(router.capabilities, provider, fallback, quality, split)
        from mlrollout.traffic.gatewayapi import API_VERSION as GATEWAY_API  # lazy, as in the registry
        from mlrollout.traffic.gatewayapi import GatewayApiRouter

        if not isinstance(router, GatewayApiRouter):
            return Routing(provider, not_applied=notes)
        parent = ParentRef(router.gateway_name, router.gateway_namespace or namespace, router.section_name)
        route, forbidden = self._get_allowed(GATEWAY_API, "HTTPRoute", namespace, name, log)
        if forbidden:
            return Routing(provider, None, "acceptance not checked: the RBAC lacks get httproutes", None, notes)
        # a Gateway in a namespace the operator does not watch may be out of its reach: then only the route's
        # status speaks (it is what the implementation wrote for that Gateway anyway)
        gateway, forbidden = self._get_allowed(GATEWAY_API, "Gateway", parent.namespace, parent.name, log)
        if forbidden:
            gateway = {}
        class_name = ((gateway or {}).get("spec") or {}).get("gatewayClassName")
        gateway_class = None
        if class_name:
            gateway_class, _ = self._get_allowed(GATEWAY_API, "GatewayClass", None, class_name, log)
        return gateway_api_routing(route, gateway, gateway_class, parent, notes)

    def _get_allowed(
        self, api_version: str, kind: str, namespace: str | None, name: str, log: Log
    ) -> tuple[Manifest | None, bool]:
        """The object (None if missing) and whether the RBAC forbade reading it (said once per kind)."""
        try:
            return self.kube.get(api_version, kind, namespace, name), False
        except ApiException as exc:
            if exc.status != 403:
                raise
            if kind not in self._routing_forbidden:
                self._routing_forbidden.add(kind)
                log.warning("cannot read %s objects, the RBAC lacks get (docs/operator.md, RBAC); the route's "
                            "acceptance is checked without them: %s", kind, api_error_message(exc))  # fmt: skip
            return None, True

    def _act(
        self, obj: Manifest, md: ModelDeployment, actions: Sequence[Action], fallback: FallbackPolicySpec,
        router: TrafficRouter, sizing: scaling.Sizing, existing: dict[str, Manifest], log: Log,
    ) -> None:  # fmt: skip
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        provider = router.name
        owner = children.owner_reference(obj)
        manifests: list[Manifest] = []
        gateway_scaling = children.gateway_autoscaling(obj, self.settings) if provider == "builtin" else None
        self._gateway_autoscaler(obj, gateway_scaling, log)
        if provider == "builtin":
            with_sm = self.kube.has_crd(SERVICE_MONITOR_CRD)
            hpa_owned = self._hand_over(obj, existing.get(naming.gateway_name(name)), gateway_scaling)
            manifests += children.static_children(obj, self.settings, with_sm, gateway_hpa_owned=hpa_owned)
        else:
            manifests.append(children.disruption_budget(obj))
            if provider == "istio":
                manifests.append(children.mesh_entry_service(obj, md.spec.serving.port))
        for action in actions:
            if isinstance(action, EnsureTrack):
                rev, role = action.revision, action.role
                replicas: int | None = sizing.replicas(rev.revision, role)
                found = existing.get(naming.track_name(name, rev.revision))
                if role == "stable" and sizing.autoscaling is not None and found is not None:
                    assert replicas is not None
                    handover = scaling.replicas_handover(found, replicas)
                    if handover is not None:  # before the apply below leaves the field out
                        replicas_only = children.replicas_only(obj, naming.track_name(name, rev.revision), handover)
                        self.kube.apply(replicas_only, naming.REPLICAS_FIELD_MANAGER)
                    replicas = None  # the HPA's from now on
                wide = sizing.may_scale_out()
                zones = self.settings.zone_spread
                manifests.append(children.track_deployment(obj, rev, role, replicas, spread_out=wide, zones=zones))
                manifests.append(children.track_service(obj, rev, role))
                if found is not None and wide:  # owned by the Deployment: from the pass after it exists
                    uid = found["metadata"]["uid"]
                    manifests.append(children.track_budget(obj, rev.revision, role, uid))
        isolation = md.spec.network_policy
        uid = obj["metadata"].get("uid") or ""
        if self.settings.network_policies if isolation.enabled is None else isolation.enabled:
            manifests += children.network_policies(obj, isolation, provider, self.settings)
            self.applied.record_cleaned(namespace, name, uid, NETWORK_POLICY[1], None)  # switched off: clean
        else:  # switched off (or never on): nothing of ours may keep isolating the pods
            self._remove_network_policies(namespace, name, uid, log)
        services = {s["metadata"]["name"]: s for s in self.kube.list_services(namespace, name)}
        for manifest in manifests:
            # Deployments and Services are listed by every pass: one deleted by someone else (or a Deployment
            # edited) is applied again now, not at the memo's resync: a Service gone is an outage
            self._apply(obj, children.strip_none(manifest), _observed(manifest, existing, services))
        for action in actions:
            if isinstance(action, SetRoutes):
                intent = self._intent(namespace, name, md, action, fallback, owner)
                for manifest in router.manifests(intent):
                    self._apply(obj, children.strip_none(manifest), _observed(manifest, existing, services))
            elif isinstance(action, RemoveRoutes):
                self._remove_routes(namespace, name, action.provider, log)
            elif isinstance(action, RunEvaluation):
                self.kube.apply(children.strip_none(evaluation.service_account(obj)))
                created = self.kube.create(children.strip_none(evaluation.evaluation_job(obj, action)))
                log.info("evaluation Job %s %s", action.job, "created" if created else "exists already")
            elif isinstance(action, StopEvaluation):
                self._delete(name, "batch/v1", "Job", namespace, action.job)
                log.info("evaluation Job %s deleted: its rollout left the step", action.job)
            elif isinstance(action, RemoveTrack):
                track = naming.track_name(name, action.revision)
                self._delete(name, "apps/v1", "Deployment", namespace, track)
                self._delete(name, "v1", "Service", namespace, track)
                log.info("removed revision %s (%s)", action.revision, action.reason)

    def _gateway_autoscaler(self, obj: Manifest, scaling: GatewayAutoscaling | None, log: Log) -> None:
        """The gateway's HPA: applied while wanted; otherwise deleted (absent: a no-op) once per generation
        of the ModelDeployment and per process, not every pass: only a spec edit or an operator restart with
        another default can make one that exists unwanted. Before the gateway's apply, so an HPA switched off
        cannot scale the gateway once more after the operator set its fixed replicas back."""
        meta = obj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid") or ""
        hpa = children.gateway_autoscaler(obj, scaling) if scaling is not None else None
        if hpa is not None:
            self._gateway_hpa_cleaned.pop((namespace, name), None)
            self._apply(obj, children.strip_none(hpa))
            return
        cleaned = (uid, int(meta.get("generation") or 1))
        if self._gateway_hpa_cleaned.get((namespace, name)) == cleaned:
            return
        hpa_name = naming.gateway_autoscaler_name(name)
        try:
            self.kube.delete(*HPA, namespace, hpa_name)
        except ApiException as exc:
            # a hand-made Role from before the gateway's HPA (no `delete horizontalpodautoscalers`): said
            # once per generation, never a failed pass for a ModelDeployment whose gateway does not autoscale
            if exc.status != 403:
                raise
            log.warning("the gateway's HPA %s not cleaned up, the RBAC lacks delete (docs/operator.md, RBAC): %s",
                        hpa_name, api_error_message(exc))  # fmt: skip
        self.applied.unknown(namespace, name, uid, (*HPA, namespace, hpa_name))  # wanted again: applied again
        self._gateway_hpa_cleaned[(namespace, name)] = cleaned

    def _hand_over(self, obj: Manifest, gateway: Manifest | None, wanted: GatewayAutoscaling | None) -> bool:
        """Whether the gateway's HPA holds its Deployment's replicas (then the operator's apply leaves them
        out). A Deployment that does not exist yet is created at minReplicas by the operator; from the next
        pass the field is handed over as for the stable track (`scaling.replicas_handover`)."""
        if wanted is None or gateway is None:
            return False
        own = (gateway.get("spec") or {}).get("replicas")
        handover = scaling.replicas_handover(gateway, scaling.held_replicas(own, wanted))
        if handover is not None:
            name = naming.gateway_name(obj["metadata"]["name"])
            self.kube.apply(children.replicas_only(obj, name, handover), naming.REPLICAS_FIELD_MANAGER)
        return True

    def _apply(
        self, obj: Manifest, manifest: Manifest, observed: Manifest | applied.Unobserved | None = applied.UNOBSERVED
    ) -> None:
        """Server-side apply of a child unless this process applied the same intent recently and the child is
        as it left it (`applied.must_apply`): an idle pass sends no apply at all."""
        meta = obj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid") or ""
        child, wanted, now = applied.key(manifest), applied.digest(manifest), self.clock()
        previous = self.applied.applied(namespace, name, uid, child)
        if not applied.must_apply(previous, wanted, now, self.settings.resync_interval, observed):
            return
        try:
            stored = self.kube.apply(manifest)
        except BaseException:
            self.applied.unknown(namespace, name, uid, child)  # taken or not: the next apply is sent
            raise
        self.applied.record(namespace, name, uid, child, applied.Applied(wanted, now, applied.generation(stored)))

    def _delete(self, md: str, api_version: str, kind: str, namespace: str, name: str) -> None:
        """A delete of ours; the ModelDeployment's memory of applies goes with it (a name deleted now may be
        wanted again, and owned children may go with it), so the next pass applies everything again."""
        self.kube.delete(api_version, kind, namespace, name)
        self.applied.forget(namespace, md)

    def _remove_routes(self, namespace: str, name: str, provider: str, log: Log) -> None:
        """The route object of a provider no longer in use (HTTPRoute, VirtualService). The built-in gateway
        is left running: clients may still call it while they move (docs/traffic.md, switching providers)."""
        kinds = {"gatewayAPI": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
                 "istio": ("networking.istio.io/v1", "VirtualService")}  # fmt: skip
        if provider not in kinds:
            return
        try:
            self._delete(name, *kinds[provider], namespace, name)
        except ApiException as exc:
            if exc.status != 403:
                raise
            log.warning("the %s route of the previous provider is left behind, the RBAC lacks delete: %s",
                        provider, api_error_message(exc))  # fmt: skip
            return
        log.info("removed the %s route (traffic provider changed)", provider)

    def _ensure_feedback_keys(self, obj: Manifest, log: Log) -> None:
        """Create the ModelDeployment's feedback Secret once (a random key; never logged, never rewritten).
        RBAC without `create secrets` leaves feedback off: said once, the rollout goes on without labels."""
        meta = obj["metadata"]
        if meta["uid"] in self._feedback_keys:
            return
        try:
            created = self.kube.create(children.feedback_secret(obj, secrets.token_bytes(32)))
        except ApiException as exc:
            if exc.status != 403:
                raise
            if meta["uid"] not in self._feedback_forbidden:
                self._feedback_forbidden.add(meta["uid"])
                log.warning("feedback keys not created, the RBAC lacks `create secrets` (docs/operator.md, RBAC): "
                            "%s", api_error_message(exc))  # fmt: skip
            return
        self._feedback_keys.add(meta["uid"])
        if created:
            log.info("feedback keys created (Secret %s)", feedback_secret_name(meta["name"]))

    def _remove_network_policies(self, namespace: str, name: str, uid: str, log: Log) -> None:
        """Delete the ModelDeployment's NetworkPolicies: once per process (and again every resync interval),
        not every pass, since nothing of ours creates one while they are off. RBAC without `deletecollection
        networkpolicies` (a hand-made Role from before they existed) cannot have created any: say so once,
        never fail the pass."""
        now = self.clock()
        if applied.cleaned_recently(self.applied.cleaned_at(namespace, name, uid, NETWORK_POLICY[1]), now,
                                    self.settings.resync_interval):  # fmt: skip
            return
        try:
            self.kube.delete_labelled(*NETWORK_POLICY, namespace, naming.child_selector(name))
            self.applied.forget(namespace, name)  # what was deleted may be wanted again: apply it then
            self.applied.record_cleaned(namespace, name, uid, NETWORK_POLICY[1], now)
        except ApiException as exc:
            if exc.status != 403:
                raise
            if (namespace, name) not in self._np_forbidden:
                self._np_forbidden.add((namespace, name))
                log.warning("NetworkPolicies not cleaned up, the RBAC lacks them (docs/operator.md, RBAC): %s",
                            api_error_message(exc))  # fmt: skip

    def _notify(
        self, obj: Manifest, status: ModelDeploymentStatus, actions: Sequence[Action], notifications: Notifications,
        now: datetime, log: Log,
    ) -> None:  # fmt: skip
        """Queue the pass's notifications: queued, never sent here, so no sink can slow or fail the pass."""
        if self.notifier is None:
            return
        try:
            for delivery in deliveries(notifications, actions, obj, status, now):
                self.notifier.submit(delivery)
        except Exception as exc:  # notifications are best effort: the status is already written
            log.warning("notifications not queued: %s: %s", type(exc).__name__, exc)

    def _announce(self, obj: Manifest, status: ModelDeploymentStatus, actions: Sequence[Action], log: Log) -> None:
        """Events and metrics: they follow the status write that made them true (Events and counters are
        edge-triggered; the phase gauge is set every pass, so a restarted operator shows it at once)."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        metrics.set_phase(namespace, name, status.phase)
        for action in actions:
            if isinstance(action, RecordEvent):
                try:
                    self.kube.post_event(obj, action.type, action.reason, action.message)
                except Exception as exc:  # an Event is an explanation, never a reason to fail the pass
                    log.warning("could not post event %s: %s", action.reason, api_error_message(exc))
                log.info("event %s: %s", action.reason, action.message)
            elif isinstance(action, RolloutFinished | StepFinished):
                metrics.observe_action(namespace, name, action)

    def _provider(self, md: ModelDeployment) -> str:
        return md.spec.traffic.provider or self.settings.default_traffic_provider

    def _split_counter(self, provider: str) -> str:
        """The template of the per-backend counter that counts this provider's split ("" when none does):
        the Gateway API implementation's, when the operator is given it."""
        return self.settings.gatewayapi_split_query if provider == "gatewayAPI" else ""

    def _backend_counter(self, md: ModelDeployment, stable: str, candidate: str) -> BackendCounter | None:
        """Where the implementation counts each revision's requests: the backendRefs of our HTTPRoute
        (`_intent`'s Services)."""
        template = self._split_counter(self._provider(md))
        if not template:
            return None
        name = str(md.metadata["name"])
        s, c = _backend(name, md, stable), _backend(name, md, candidate)
        return BackendCounter(template, (s.service, s.port), (c.service, c.port))

    def _intent(
        self, namespace: str, name: str, md: ModelDeployment, action: SetRoutes, fallback: FallbackPolicySpec,
        owner: Manifest,
    ) -> RouteIntent:  # fmt: skip
        def backend(revision: str | None) -> Backend | None:
            return None if revision is None else _backend(name, md, revision)

        sticky = md.spec.traffic.sticky
        return RouteIntent(
            namespace=namespace,
            name=name,
            stable=backend(action.stable),
            candidate=backend(action.candidate),
            candidate_weight=action.candidate_weight,
            mirror_percent=action.mirror_percent,
            mode=action.mode,
            sticky=Sticky(header=sticky.header, json_field=sticky.json_field) if sticky is not None else None,
            fallback=fallback_settings(fallback, self._backups(namespace, fallback)),
            version=action.version,
            step_started_at=action.step_started_at,
            owner=owner,
            labels=naming.routing_labels(name),
        )

    def _backups(self, namespace: str, fallback: FallbackPolicySpec) -> dict[str, BackupModel]:
        """How the gateway calls each backup the chain names: its gateway's address, and the model name it
        serves when its ModelDeployment exists (a missing backup answers 404 until it exists, which the
        gateway counts as a failed fallback step)."""
        backups: dict[str, BackupModel] = {}
        for link in (*fallback.chain, *([fallback.low_confidence_action] if fallback.low_confidence_action else [])):
            if link.action != "backup" or not link.backup or link.backup in backups:
                continue
            found = self.kube.get_model_deployment(namespace, link.backup)
            model = ((found or {}).get("spec") or {}).get("model") or {}
            served = model.get("name") if isinstance(model.get("name"), str) and model["name"] else None
            backups[link.backup] = BackupModel(
                name=link.backup, upstream=naming.gateway_url(namespace, link.backup), model_name=served
            )
        return backups


def _observed(
    manifest: Manifest, deployments: dict[str, Manifest], services: dict[str, Manifest]
) -> Manifest | applied.Unobserved | None:
    """What the pass read of this child: the object, None when it is gone, or unobserved (other kinds)."""
    listed = {"Deployment": deployments, "Service": services}.get(manifest["kind"])
    return applied.UNOBSERVED if listed is None else listed.get(manifest["metadata"]["name"])
