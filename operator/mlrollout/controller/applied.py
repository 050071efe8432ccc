"""Which child applies a pass may leave out: the operator's memory of what it last applied (issue 19, scale).

Every pass used to send a server-side apply of every child, a no-op when nothing changed: most of an idle
operator's requests. A child is now applied only when its rendered intent differs from the one last applied
*by this process* (a digest of the manifest, kept per ModelDeployment in memory), when the child was seen
changed or gone, or when the entry is older than the resync interval. Memory, not an annotation: a restart
forgets it, so the first pass after one applies everything again and converges as before.

Drift by someone else is repaired within a bound: a Deployment (listed by every pass) at the next pass when
it is gone or its `metadata.generation` differs from the one our apply returned (a spec edit, an HPA's
scale), and a Service when it is gone (a pass lists them too: a Service gone is an outage); every other
child (a Service edited in place, ConfigMaps, identity, budgets, policies) when its entry expires, at
most `resync` seconds after our last apply of it. A delete by this operator forgets the ModelDeployment's
whole memory, so whatever the next pass wants is applied again. A failed apply forgets its child (the server
may have taken it and lost only the answer), so the previous intent is not skipped when it is wanted again.

`must_apply` is the decision (pure); `AppliedMemo` only holds the entries (no I/O).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Final

from mlrollout.traffic.base import Manifest

Key = tuple[str, str, str, str]
"""apiVersion, kind, namespace, name."""


class Unobserved:
    """The pass did not read this kind of child: only the digest and the age of the entry decide."""


UNOBSERVED: Final = Unobserved()


@dataclass(frozen=True)
class Applied:
    """One apply this process made: what it sent, when (monotonic seconds), the generation it got back."""

    digest: str
    at: float
    generation: int | None


def digest(manifest: Manifest) -> str:
    """The rendered intent, independent of key order."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def key(manifest: Manifest) -> Key:
    meta = manifest["metadata"]
    return (manifest["apiVersion"], manifest["kind"], meta.get("namespace") or "", meta["name"])


def generation(obj: Manifest | None) -> int | None:
    raw = ((obj or {}).get("metadata") or {}).get("generation")
    return int(raw) if isinstance(raw, int) else None


def must_apply(
    previous: Applied | None, wanted: str, now: float, resync: float, observed: Manifest | Unobserved | None
) -> bool:
    """Apply unless this exact intent was applied less than `resync` seconds ago and, where the pass read
    the child (`observed`: the object, or None when it is missing), it is still there at the generation
    our apply left it at."""
    if previous is None or previous.digest != wanted or now - previous.at >= resync:
        return True
    if isinstance(observed, Unobserved):
        return False
    return observed is None or generation(observed) != previous.generation


def cleaned_recently(cleaned_at: float | None, now: float, resync: float) -> bool:
    """A label-selected cleanup (the NetworkPolicies' deletecollection) sent less than `resync` seconds ago
    by this process, with nothing applied since, need not be sent again."""
    return cleaned_at is not None and now - cleaned_at < resync


@dataclass
class _Entry:
    uid: str
    applied: dict[Key, Applied] = field(default_factory=dict)
    cleaned: dict[str, float] = field(default_factory=dict)


class AppliedMemo:
    """Per ModelDeployment (namespace, name; a new uid starts afresh): the applies and cleanups made."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}

    def _entry(self, namespace: str, name: str, uid: str) -> _Entry:
        entry = self._entries.get((namespace, name))
        if entry is None or entry.uid != uid:
            entry = self._entries[(namespace, name)] = _Entry(uid)
        return entry

    def _found(self, namespace: str, name: str, uid: str) -> _Entry | None:
        entry = self._entries.get((namespace, name))
        return entry if entry is not None and entry.uid == uid else None

    def applied(self, namespace: str, name: str, uid: str, child: Key) -> Applied | None:
        entry = self._found(namespace, name, uid)
        return entry.applied.get(child) if entry is not None else None

    def record(self, namespace: str, name: str, uid: str, child: Key, done: Applied) -> None:
        self._entry(namespace, name, uid).applied[child] = done

    def unknown(self, namespace: str, name: str, uid: str, child: Key) -> None:
        """An apply of ``child`` failed: the server may have taken it all the same (a lost answer), so what
        it holds is not known and the next apply of it is sent whatever it is."""
        entry = self._found(namespace, name, uid)
        if entry is not None:
            entry.applied.pop(child, None)

    def cleaned_at(self, namespace: str, name: str, uid: str, what: str) -> float | None:
        entry = self._found(namespace, name, uid)
        return entry.cleaned.get(what) if entry is not None else None

    def record_cleaned(self, namespace: str, name: str, uid: str, what: str, at: float | None) -> None:
        cleaned = self._entry(namespace, name, uid).cleaned
        if at is None:
            cleaned.pop(what, None)
        else:
            cleaned[what] = at

    def forget(self, namespace: str, name: str) -> None:
        """After a delete of ours, or when the ModelDeployment is gone."""
        self._entries.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._entries)
