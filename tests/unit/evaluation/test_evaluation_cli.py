"""The Job's entry point in-process: whatever the evaluation raises, a report (and its termination message)
is written, its reason within the contract's 2048 characters."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest

from mlrollout_serving.contract.evaluation import REASON_MAX, EvaluationReport
from mlrollout_serving.evaluation import cli
from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.evaluation.run import capped

_FLAGS = ["--stable", "s.onnx", "--candidate", "c.onnx", "--data", "d.csv", "--label", "y"]


def _main(tmp_path: Path, *extra: str) -> tuple[int, EvaluationReport]:
    log = tmp_path / "termination-log"
    code = cli.main([*_FLAGS, "--termination-log", str(log), *extra], env={})
    return code, EvaluationReport.from_json(log.read_text())


def test_a_long_internal_error_is_cut_and_still_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception's message over 2 KB made the report itself invalid inside main(): no report, no
    termination message (the operator saw a crashed Job, not "the evaluation broke")."""

    def broken(*_: object, **__: object) -> NoReturn:
        raise RuntimeError("boom " + "x" * 5000 + "\nand a second line " + "z" * 3000)

    monkeypatch.setattr(cli, "evaluate", broken)
    code, report = _main(tmp_path)
    assert code == 3 and report.problem == "error" and report.verdict == "inconclusive"
    assert len(report.reason) == REASON_MAX
    assert report.reason.startswith("the evaluation broke: RuntimeError: boom xxx") and report.reason.endswith("...")
    code, report = _main(tmp_path, "--json")
    assert code == 3 and len(report.reason) == REASON_MAX


def test_a_long_bad_request_is_cut_and_still_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad(*_: object) -> NoReturn:
        raise ValueError("dataset.uri: " + "u" * 5000)

    monkeypatch.setattr(cli, "request_from", bad)
    code, report = _main(tmp_path)
    assert code == 2 and report.problem == "badInput"
    assert len(report.reason) == REASON_MAX and report.reason.startswith("bad input: dataset.uri: uuu")


def test_a_bad_input_keeps_its_reason_when_it_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: object, **__: object) -> NoReturn:
        raise BadInput("row 7: field larger than field limit (131072) (a quoted field left open?)")

    monkeypatch.setattr("mlrollout_serving.evaluation.run._evaluate", refused)
    code, report = _main(tmp_path)
    assert code == 2
    assert report.reason == "bad input: row 7: field larger than field limit (131072) (a quoted field left open?)"
    assert capped("x" * REASON_MAX) == "x" * REASON_MAX
    assert capped("x" * (REASON_MAX + 1)) == "x" * (REASON_MAX - 3) + "..."
