"""Human commands: the one vocabulary of the plugin, the dashboard and the state machine.

A command never changes a ModelDeployment's spec or status. Whoever steers writes one annotation,
``mlrollout.io/command``, whose value is JSON ``{"id", "verb"[, "toRevision"]}``, with a merge patch through
the API server, so RBAC on ``patch modeldeployments`` decides who may. The operator acts once per id and
answers in ``status.lastCommand`` (a ``CommandStatus``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from mlrollout.api.modeldeployment import CommandStatus, ModelDeploymentStatus

ANNOTATION: Final = "mlrollout.io/command"
Verb = Literal["promote", "promoteFull", "abort", "pause", "resume", "retry", "undo"]
VERBS: Final[tuple[Verb, ...]] = get_args(Verb)


class CommandError(ValueError):
    """A command that cannot be written, or an annotation that does not read as one."""


@dataclass(frozen=True)
class Command:
    """One request to the operator; ``id`` makes it idempotent (acted on once, however often it is seen).

    ``verb`` is kept as written so that the machine can refuse an unknown one visibly; ``error`` is set
    for an annotation that is not a command at all (the machine refuses it with that reason).
    """

    id: str
    verb: str
    to_revision: int | None = None
    error: str | None = None

    @classmethod
    def new(cls, verb: Verb, to_revision: int | None = None) -> Command:
        """A command with a fresh unique id; refuses what the operator would refuse for its shape."""
        if verb not in VERBS:
            raise CommandError(f"unknown verb {verb!r}; one of {', '.join(VERBS)}")
        if to_revision is not None and (verb != "undo" or to_revision < 1):
            raise CommandError("toRevision is a revision number (1 or more) and only goes with undo")
        return cls(id=str(uuid.uuid4()), verb=verb, to_revision=to_revision)

    def annotation_value(self) -> str:
        """The annotation's JSON value (compact, keys in a stable order)."""
        body: dict[str, Any] = {"id": self.id, "verb": self.verb}
        if self.to_revision is not None:
            body["toRevision"] = self.to_revision
        return json.dumps(body, separators=(",", ":"))

    def merge_patch(self) -> dict[str, Any]:
        """The JSON merge patch that sets the annotation and touches nothing else."""
        return {"metadata": {"annotations": {ANNOTATION: self.annotation_value()}}}


def parse(raw: str) -> Command:
    """The command in an annotation value; raises :class:`CommandError` when it is not one."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{ANNOTATION} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("verb"), str):
        raise CommandError(f'{ANNOTATION} must be {{"id": "...", "verb": "..."}}, got {raw[:200]!r}')
    to_revision = data.get("toRevision")
    if to_revision is not None and (
        isinstance(to_revision, bool) or not isinstance(to_revision, int) or to_revision < 1
    ):
        raise CommandError(f"{ANNOTATION}: toRevision must be a positive integer")
    return Command(id=data["id"], verb=data["verb"], to_revision=to_revision)


def from_annotations(annotations: Mapping[str, str] | None) -> Command | None:
    """The command on an object, None without one; an unreadable one is a command to refuse, keyed by its
    text's digest so it is refused once."""
    raw = (annotations or {}).get(ANNOTATION)
    if raw is None:
        return None
    try:
        return parse(raw)
    except CommandError as exc:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
        return Command(id=f"invalid-{digest}", verb="invalid", error=str(exc))


def answer_to(status: ModelDeploymentStatus | None, command_id: str) -> CommandStatus | None:
    """The operator's answer to ``command_id``, or None while it has not answered (yet)."""
    last = status.last_command if status is not None else None
    return last if last is not None and last.id == command_id else None
