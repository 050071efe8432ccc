"""The command vocabulary shared by the plugin and the state machine: annotation in, answer out."""

from __future__ import annotations

import json

import pytest

from mlrollout.api import commands
from mlrollout.api.commands import ANNOTATION, Command, CommandError
from mlrollout.api.modeldeployment import CommandStatus, ModelDeploymentStatus


def test_annotation_is_compact_json_with_id_and_verb() -> None:
    cmd = Command(id="abc", verb="promote")
    assert cmd.annotation_value() == '{"id":"abc","verb":"promote"}'
    assert cmd.merge_patch() == {"metadata": {"annotations": {ANNOTATION: '{"id":"abc","verb":"promote"}'}}}


def test_undo_carries_the_revision_and_reads_back() -> None:
    cmd = Command.new("undo", to_revision=3)
    assert json.loads(cmd.annotation_value()) == {"id": cmd.id, "verb": "undo", "toRevision": 3}
    assert commands.parse(cmd.annotation_value()) == cmd
    assert commands.from_annotations({ANNOTATION: cmd.annotation_value()}) == cmd


@pytest.mark.parametrize(("verb", "to_revision"), [("promote", 2), ("undo", 0), ("deploy", None)])
def test_commands_the_operator_would_refuse_are_not_written(verb: str, to_revision: int | None) -> None:
    with pytest.raises(CommandError):
        Command.new(verb, to_revision)  # type: ignore[arg-type]


def test_ids_are_unique() -> None:
    assert len({Command.new("pause").id for _ in range(50)}) == 50


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("promote", "not JSON"),
        (json.dumps({"verb": "promote"}), "must be"),
        (json.dumps({"id": "x", "verb": "undo", "toRevision": 0}), "toRevision"),
        (json.dumps({"id": "x", "verb": "undo", "toRevision": True}), "toRevision"),
    ],
)
def test_unreadable_annotations_become_commands_to_refuse_once(raw: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        commands.parse(raw)
    cmd = commands.from_annotations({ANNOTATION: raw})
    assert cmd is not None and cmd.verb == "invalid" and cmd.error is not None and message in cmd.error
    assert cmd == commands.from_annotations({ANNOTATION: raw})  # the same id: refused once, not at every pass


def test_no_annotation_no_command() -> None:
    assert commands.from_annotations(None) is None
    assert commands.from_annotations({"other": "x"}) is None


def test_the_answer_is_only_for_our_id() -> None:
    status = ModelDeploymentStatus(
        last_command=CommandStatus(id="other", verb="pause", result="accepted", time="2026-12-04T00:00:00Z")
    )
    assert commands.answer_to(status, "mine") is None
    assert commands.answer_to(None, "mine") is None
    assert commands.answer_to(ModelDeploymentStatus(), "mine") is None
    assert commands.answer_to(status, "other") == status.last_command
