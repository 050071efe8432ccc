"""Human commands as data: the annotation the plugin writes and how to read the operator's answer.

The plugin never changes a ModelDeployment's spec or status. It writes one annotation,
`mlrollout.io/command`, whose value is JSON `{"id", "verb"[, "toRevision"]}`, with a merge patch through
the API server, so RBAC on `patch modeldeployments` decides who may steer rollouts. The operator acts once
per id and answers in `status.lastCommand`; the plugin waits for its id to appear there.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Final, Literal

ANNOTATION: Final = "mlrollout.io/command"
Verb = Literal["promote", "promoteFull", "abort", "pause", "resume", "retry", "undo"]
VERBS: Final[tuple[Verb, ...]] = ("promote", "promoteFull", "abort", "pause", "resume", "retry", "undo")


@dataclass(frozen=True)
class Command:
    """One request to the operator; `id` makes it idempotent (acted on once, however often it is seen)."""

    verb: Verb
    id: str
    to_revision: int | None = None

    def __post_init__(self) -> None:
        if self.verb not in VERBS:
            raise ValueError(f"unknown verb {self.verb!r}; one of {', '.join(VERBS)}")
        if self.to_revision is not None and (self.verb != "undo" or self.to_revision < 1):
            raise ValueError("toRevision is a revision number (1 or more) and only goes with undo")

    def annotation_value(self) -> str:
        """The annotation's JSON value (compact, keys in a stable order)."""
        body: dict[str, Any] = {"id": self.id, "verb": self.verb}
        if self.to_revision is not None:
            body["toRevision"] = self.to_revision
        return json.dumps(body, separators=(",", ":"))

    def merge_patch(self) -> dict[str, Any]:
        """The JSON merge patch that sets the annotation and touches nothing else."""
        return {"metadata": {"annotations": {ANNOTATION: self.annotation_value()}}}


def new_command(verb: Verb, to_revision: int | None = None) -> Command:
    """A command with a fresh unique id."""
    return Command(verb=verb, id=str(uuid.uuid4()), to_revision=to_revision)


@dataclass(frozen=True)
class Answer:
    """The operator's answer to one command, from status.lastCommand."""

    id: str
    verb: str
    result: str
    message: str
    time: str

    @property
    def accepted(self) -> bool:
        return self.result == "accepted"


def answer_to(md: dict[str, Any], command_id: str) -> Answer | None:
    """The operator's answer to `command_id`, or None while it has not answered (yet)."""
    last = (md.get("status") or {}).get("lastCommand") or {}
    if last.get("id") != command_id:
        return None
    return Answer(
        id=str(last["id"]),
        verb=str(last.get("verb", "")),
        result=str(last.get("result", "")),
        message=str(last.get("message", "")),
        time=str(last.get("time", "")),
    )


def describe(answer: Answer, namespace: str, name: str) -> str:
    """One line for the terminal."""
    what = "accepted" if answer.accepted else "REFUSED"
    tail = f": {answer.message}" if answer.message else ""
    return f"{answer.verb} {what} by the operator for {namespace}/{name}{tail}"
