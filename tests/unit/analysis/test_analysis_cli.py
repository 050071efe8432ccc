"""`mlrollout analyze` through cli_main: JSON out, exit 2 with one line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.unit.analysis.snapshots import PROMOTABLE, healthy

from mlrollout.analysis import cli_main


def test_prints_the_verdict_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps(healthy(**PROMOTABLE)))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"kind": "RolloutPolicy", "spec": {"significance": {"alpha": 0.02}}}))
    assert cli_main(["--snapshot", str(snap), "--policy", str(policy)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "promote" and out["alpha"] == 0.02
    assert out["metrics"][0].keys() >= {"name", "decision", "eValue", "pValue", "interval"}  # the status' keys


@pytest.mark.parametrize(
    ("snapshot", "policy", "message"),
    [
        ("{not json", None, "cannot read input"),
        ('{"stable": {"requests": -1}, "candidate": {}}', None, "invalid snapshot"),
        (json.dumps(healthy()), "significance: {alpha: 7}", "invalid policy"),
        (json.dumps(healthy()), "- a list", "cannot read input"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], snapshot: str, policy: str | None, message: str
) -> None:
    snap = tmp_path / "snap.json"
    snap.write_text(snapshot)
    args = ["--snapshot", str(snap)]
    if policy is not None:
        (tmp_path / "p.yaml").write_text(policy)
        args += ["--policy", str(tmp_path / "p.yaml")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_file_and_missing_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--snapshot", str(tmp_path / "nope.json")]) == 2
    assert cli_main([]) == 2
    assert "cannot read input" in capsys.readouterr().err
