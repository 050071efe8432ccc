"""The command line around the commands (their vocabulary is tests/unit/api/test_commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrollout.api.modeldeployment import CommandStatus
from mlrollout.kubectl_plugin import cli


def test_answers_are_described_in_one_line() -> None:
    accepted = CommandStatus(id="i", verb="pause", result="accepted", time="t")
    assert cli.describe(accepted, "ml", "wine") == "pause accepted by the operator for ml/wine"
    refused = CommandStatus(id="i", verb="promote", result="refused", message="no rollout in progress", time="t")
    assert cli.describe(refused, "ml", "wine") == "promote REFUSED by the operator for ml/wine: no rollout in progress"


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
