"""Commands as annotations, answers from status.lastCommand, and the command line around them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrollout.kubectl_plugin import cli, commands


def test_annotation_is_compact_json_with_id_and_verb() -> None:
    cmd = commands.Command(verb="promote", id="abc")
    assert cmd.annotation_value() == '{"id":"abc","verb":"promote"}'
    assert cmd.merge_patch() == {"metadata": {"annotations": {"mlrollout.io/command": '{"id":"abc","verb":"promote"}'}}}


def test_undo_carries_the_revision() -> None:
    cmd = commands.new_command("undo", to_revision=3)
    assert json.loads(cmd.annotation_value()) == {"id": cmd.id, "verb": "undo", "toRevision": 3}


@pytest.mark.parametrize(("verb", "to_revision"), [("promote", 2), ("undo", 0), ("deploy", None)])
def test_invalid_commands_are_refused(verb: str, to_revision: int | None) -> None:
    with pytest.raises(ValueError):
        commands.Command(verb=verb, id="x", to_revision=to_revision)  # type: ignore[arg-type]


def test_ids_are_unique() -> None:
    assert len({commands.new_command("pause").id for _ in range(50)}) == 50


def test_answer_only_for_our_id() -> None:
    md = {"status": {"lastCommand": {"id": "other", "verb": "pause", "result": "accepted", "time": "t"}}}
    assert commands.answer_to(md, "mine") is None
    assert commands.answer_to({}, "mine") is None
    assert commands.answer_to({"status": None}, "mine") is None
    md["status"]["lastCommand"]["id"] = "mine"
    answer = commands.answer_to(md, "mine")
    assert answer is not None and answer.accepted and answer.message == ""
    assert commands.describe(answer, "ml", "wine") == "pause accepted by the operator for ml/wine"


def test_refusal_is_described() -> None:
    md = {"status": {"lastCommand": {"id": "i", "verb": "promote", "result": "refused",
                                     "message": "no rollout in progress", "time": "t"}}}  # fmt: skip
    answer = commands.answer_to(md, "i")
    assert answer is not None and not answer.accepted
    assert (
        commands.describe(answer, "ml", "wine") == "promote REFUSED by the operator for ml/wine: no rollout in progress"
    )


@pytest.mark.parametrize(
    ("argv", "command", "extra"),
    [
        (["promote", "wine", "--full", "-n", "ml"], "promote", {"full": True, "namespace": "ml", "timeout": 60.0}),
        (["undo", "wine", "--to-revision", "2", "--no-wait"], "undo", {"to_revision": 2, "no_wait": True}),
        (["status", "wine", "--watch", "--timeout", "5"], "status", {"watch": True, "timeout": 5.0}),
        (["abort", "wine", "--context", "prod"], "abort", {"context": "prod"}),
    ],
)
def test_command_line(argv: list[str], command: str, extra: dict[str, object]) -> None:
    args = cli.parser().parse_args(argv)
    assert args.command == command
    assert args.name == "wine"
    for key, value in extra.items():
        assert getattr(args, key) == value


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["promote"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["deploy", "wine"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_lint_runs_the_offline_validator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    examples = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))
    assert examples
    assert cli.main(["lint", *map(str, examples)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: mlrollout.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: wine}\n"
        "spec:\n  model: {name: wine, version: v1, uri: 'ftp://x', sha256: 'abc'}\n"
    )
    assert cli.main(["lint", str(bad)]) != 0
    out = capsys.readouterr()
    assert "sha256" in out.out + out.err
