"""Facts from Kubernetes objects: pure functions of the dicts the API returned (no I/O here).

Readiness comes from a revision's Deployment status; crash loops and a refused sha256 from its pods'
container statuses. The model server exits with `ExitCode.INTEGRITY` when the file's sha256 is not the
expected one and writes why, one line, to its termination message (the tail of its log if it could not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from mlrollout.controller import naming
from mlrollout.rollout.facts import TrackFacts
from mlrollout_serving.contract.process import ExitCode
from mlrollout_serving.contract.startup import LOG_PREFIX

CRASH_LOOP_RESTARTS: Final = 3
CONFIG_ERRORS: Final = frozenset({"CreateContainerConfigError", "InvalidImageName"})
"""Waiting reasons that no amount of waiting fixes (a missing Secret, an unusable image name)."""
MESSAGE_CHARS: Final = 300


def one_line(message: str, limit: int = MESSAGE_CHARS) -> str:
    """A termination message for people: its last line, without a log prefix, cut at a word."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = LOG_PREFIX.sub("", lines[-1]) if lines else ""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return f"{cut}…"


def _container_states(pod: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    status = pod.get("status") or {}
    yield from status.get("initContainerStatuses") or []
    yield from status.get("containerStatuses") or []


def _terminated(cs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out = []
    for key in ("state", "lastState"):
        term = (cs.get(key) or {}).get("terminated")
        if term:
            out.append(term)
    return out


def track_facts(deployment: Mapping[str, Any] | None, pods: Iterable[Mapping[str, Any]]) -> TrackFacts:
    """What one revision's Deployment and pods say."""
    if deployment is None:
        return TrackFacts()
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    desired = int(spec.get("replicas", 1))
    ready_replicas = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    current_gen = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    ready = current_gen and ready_replicas >= desired and updated >= desired
    crash, digest, config, details = False, False, False, []
    for pod in pods:
        for cs in _container_states(pod):
            name = cs.get("name", "?")
            waiting = (cs.get("state") or {}).get("waiting") or {}
            restarts = int(cs.get("restartCount") or 0)
            why = ""  # the last exit's own words (the server writes its reason to the termination log)
            for term in _terminated(cs):
                message = str(term.get("message") or "")
                why = why or one_line(message)
                if term.get("exitCode") == ExitCode.INTEGRITY or ("sha256" in message and "integrity" in message):
                    digest = True
                    details.append(f"{name}: exit {term.get('exitCode')}: {one_line(message)}")
            if waiting.get("reason") in CONFIG_ERRORS:
                config = True  # e.g. the credentials Secret does not exist: the container is never started
                details.append(f"{name}: {waiting['reason']}: {one_line(str(waiting.get('message') or ''))}")
            if waiting.get("reason") == "CrashLoopBackOff" or restarts >= CRASH_LOOP_RESTARTS:
                crash = True
                details.append(f"{name}: {waiting.get('reason') or 'restarting'}, {restarts} restarts"
                               + (f": {why}" if why and not digest else ""))  # fmt: skip
    return TrackFacts(
        exists=True,
        ready=ready,
        available=ready_replicas >= 1,
        replicas=desired,
        ready_replicas=ready_replicas,
        crash_looping=crash,
        digest_mismatch=digest,
        config_error=config,
        detail="; ".join(dict.fromkeys(details))[:500],
    )


def facts_by_revision(
    deployments: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> dict[str, TrackFacts]:
    """TrackFacts for every revision that has a Deployment, keyed by revision hash."""
    by_rev: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        rev = ((pod.get("metadata") or {}).get("labels") or {}).get(naming.REVISION)
        if rev:
            by_rev.setdefault(rev, []).append(pod)
    out: dict[str, TrackFacts] = {}
    for dep in deployments:
        labels = (dep.get("metadata") or {}).get("labels") or {}
        rev = labels.get(naming.REVISION)
        if rev and labels.get(naming.COMPONENT) == naming.SERVER_COMPONENT:
            out[rev] = track_facts(dep, by_rev.get(rev, []))
    return out


def gateway_facts(deployments: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> TrackFacts:
    """The built-in gateway's Deployment and pods (MISSING, i.e. not available, until it exists)."""

    def is_gateway(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return labels.get(naming.COMPONENT) == naming.GATEWAY_COMPONENT

    deployment = next((d for d in deployments if is_gateway(d)), None)
    return track_facts(deployment, [p for p in pods if is_gateway(p)])


def _starting(pod: Mapping[str, Any]) -> bool:
    """The pod's model server runs but is not ready yet: its log says how far it is."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or not (pod.get("spec") or {}).get("nodeName"):
        return False
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == naming.SERVER_CONTAINER:
            return not cs.get("ready") and bool((cs.get("state") or {}).get("running"))
    return False


def starting_pods(
    tracks: Mapping[str, TrackFacts], pods: Iterable[Mapping[str, Any]], revisions: Iterable[str | None]
) -> dict[str, str]:
    """For each of ``revisions`` (the stable and candidate ones) whose track is not ready, one of its pods
    that is starting (the oldest: the furthest along), by revision. At most one log read per revision and
    pass: one pod's progress stands for its siblings, which fetch the same file."""
    wanted = {r for r in revisions if r and tracks.get(r, TrackFacts()).exists and not tracks[r].ready}
    found: dict[str, tuple[str, str]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        rev = (meta.get("labels") or {}).get(naming.REVISION)
        if rev not in wanted or not _starting(pod):
            continue
        key = (str(meta.get("creationTimestamp") or ""), str(meta.get("name")))
        if rev not in found or key < found[rev]:
            found[rev] = key
    return {rev: name for rev, (_, name) in found.items()}
