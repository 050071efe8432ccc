"""Scheduled removals: a revision's Deployment and Service go once their time has come and nothing uses it."""

from __future__ import annotations

from mlrollout.api.modeldeployment import ScaleDownStatus
from mlrollout.rollout.actions import RemoveTrack
from mlrollout.rollout.timefmt import parse
from mlrollout.rollout.work import Work


def scale_downs(w: Work) -> None:
    in_use = {r.revision for r in (w.s.stable, w.s.candidate) if r is not None}
    keep: list[ScaleDownStatus] = []
    for entry in w.s.scale_downs or []:
        if entry.revision in in_use:
            continue
        if parse(entry.at) <= w.now:
            w.actions.append(RemoveTrack(entry.revision, entry.reason))
            w.event("ScaledDown", f"revision {entry.revision} removed ({entry.reason})")
        else:
            keep.append(entry)
    w.s.scale_downs = keep or None
