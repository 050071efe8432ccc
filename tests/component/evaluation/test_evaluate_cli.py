"""`mlrollout evaluate` as a data scientist runs it: real scikit-learn ONNX models, real holdouts, the table,
the JSON report and the exit codes (0 pass, 1 fail, 2 bad input); and `mlrollout-evaluate` as the Job runs it."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, mean_absolute_error
from tests.support import holdouts, models
from tests.support.gcs import run_gcs
from tests.support.httpd import QuietHandler, serving
from tests.support.models import BuiltModel
from tests.support.procs import free_port
from tests.support.s3 import run_s3

from mlrollout_serving.contract.evaluation import (
    MESSAGE_LIMIT,
    EvaluateEnv,
    EvaluationReport,
    EvaluationRequest,
    parse_report,
)

pytestmark = pytest.mark.component
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def linear() -> BuiltModel:
    return models.synthetic_linear()


@pytest.fixture(scope="module")
def twin() -> BuiltModel:
    return models.synthetic_linear_twin()


@pytest.fixture(scope="module")
def forest() -> BuiltModel:
    return models.synthetic_forest()


@pytest.fixture(scope="module")
def shuffled() -> BuiltModel:
    return models.synthetic_shuffled()


@pytest.fixture(scope="module")
def holdout(tmp_path_factory: pytest.TempPathFactory, linear: BuiltModel) -> Path:
    return holdouts.holdout_csv(tmp_path_factory.mktemp("holdout") / "synthetic.csv", linear)


def evaluate(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlrollout"), "evaluate", *map(str, args)], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def report_of(proc: subprocess.CompletedProcess[str]) -> EvaluationReport:
    return parse_report(proc.stdout)


def predictions(model: BuiltModel, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {model.input_name: x}), strict=True))


def test_a_better_candidate_passes_and_is_called_better(holdout: Path, linear: BuiltModel, forest: BuiltModel) -> None:
    proc = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", holdout, "--label", "label")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("accuracy of candidate and stable on 2000 holdout rows")
    assert lines[1].split()[:3] == ["check", "rows", "reference"]
    assert lines[2].startswith("vs stable") and lines[2].endswith("pass")
    assert lines[3].startswith("vs baseline majority") and lines[3].endswith("pass")
    assert "test: exact McNemar (discordant pairs), Bonett-Price interval" in lines
    assert lines[-1].startswith("verdict: PASS: better: accuracy")


def test_the_report_holds_scikit_learns_numbers(holdout: Path, linear: BuiltModel, forest: BuiltModel) -> None:
    proc = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", holdout, "--label", "label",
                    "--json")  # fmt: skip
    report = report_of(proc)
    truth = linear.holdout_targets
    stable_acc = accuracy_score(truth, predictions(linear, linear.holdout)["label"])
    candidate_acc = accuracy_score(truth, predictions(forest, linear.holdout)["label"])
    majority = max(np.mean(truth), 1 - np.mean(truth))
    vs_stable, vs_baseline = report.checks
    assert (report.verdict, report.rows, report.metric) == ("pass", 2000, "accuracy")
    assert vs_stable.reference == pytest.approx(stable_acc, abs=1e-6)
    assert vs_stable.candidate == pytest.approx(candidate_acc, abs=1e-6)
    assert vs_stable.effect == pytest.approx(candidate_acc - stable_acc, abs=1e-6)
    assert vs_stable.interval is not None and vs_stable.effect is not None
    assert 0 < vs_stable.interval[0] < vs_stable.effect < vs_stable.interval[1]
    assert vs_stable.p_value is not None and vs_stable.p_value < 1e-10
    assert vs_baseline.kind == "baseline" and vs_baseline.reference == pytest.approx(majority, abs=1e-6)
    assert report.dataset_sha256 == holdouts.sha256(holdout)
    assert (report.stable_sha256, report.candidate_sha256) == (linear.sha256, forest.sha256)


def test_an_equivalent_candidate_passes_within_the_margin(holdout: Path, linear: BuiltModel, twin: BuiltModel) -> None:
    proc = evaluate("--stable", linear.path, "--candidate", twin.path, "--data", holdout, "--label", "label",
                    "--margin", "0.01")  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert "verdict: PASS: no worse than the margin: accuracy" in proc.stdout


def test_a_worse_candidate_fails(holdout: Path, linear: BuiltModel, forest: BuiltModel) -> None:
    proc = evaluate("--stable", forest.path, "--candidate", linear.path, "--data", holdout, "--label", "label")
    assert proc.returncode == 1, proc.stdout
    assert "verdict: FAIL: worse beyond the margin" in proc.stdout


def test_a_candidate_that_loses_to_the_majority_class_fails(holdout: Path, shuffled: BuiltModel) -> None:
    """Compared with itself it is no worse than stable; it still fails: always answering the majority class
    would be right more often."""
    proc = evaluate("--stable", shuffled.path, "--candidate", shuffled.path, "--data", holdout, "--label", "label",
                    "--json")  # fmt: skip
    assert proc.returncode == 1
    report = report_of(proc)
    vs_stable, vs_baseline = report.checks
    assert (vs_stable.decision, vs_baseline.decision, report.verdict) == ("pass", "fail", "fail")
    assert report.reason.startswith("does not beat the majority baseline: accuracy 0.63")
    assert "always class 0" in report.reason
    table = evaluate("--stable", shuffled.path, "--candidate", shuffled.path, "--data", holdout, "--label", "label")
    assert (
        "vs baseline majority" in table.stdout and "verdict: FAIL: does not beat the majority baseline" in table.stdout
    )
    assert evaluate("--stable", shuffled.path, "--candidate", shuffled.path, "--data", holdout, "--label", "label",
                    "--baseline", "none").returncode == 0  # fmt: skip


def test_better_on_average_but_worse_on_one_segment_fails_by_its_slice(
    tmp_path: Path, linear: BuiltModel, forest: BuiltModel
) -> None:
    x, truth = linear.holdout, linear.holdout_targets
    forest_right = predictions(forest, x)["label"] == truth
    linear_right = predictions(linear, x)["label"] == truth
    # the segment where the forest goes wrong (and the linear model mostly does not), plus some ordinary rows
    segment = np.where((~forest_right & linear_right) | (np.arange(len(x)) % 20 == 0), "night", "day")
    data = holdouts.holdout_csv(tmp_path / "segments.csv", linear, extra={"shift": list(segment)})
    proc = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", data, "--label", "label",
                    "--slice", "shift", "--json")  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    report = report_of(proc)
    by_name = {c.name: c for c in report.checks}
    assert by_name["stable"].decision == "pass" and (by_name["stable"].effect or 0) > 0.05  # better on average
    night = by_name["shift=night"]
    assert night.kind == "slice" and night.decision == "fail" and night.alpha == pytest.approx(0.025)  # Bonferroni
    assert report.verdict == "fail" and "on shift=night" in report.reason


def test_regression_and_probability_metrics(tmp_path: Path, linear: BuiltModel, forest: BuiltModel) -> None:
    diabetes = models.diabetes()
    data = holdouts.holdout_csv(tmp_path / "diabetes.csv", diabetes)
    mae = report_of(evaluate("--stable", diabetes.path, "--candidate", diabetes.path, "--data", data, "--label",
                             "label", "--metric", "mae", "--json"))  # fmt: skip
    predicted = predictions(diabetes, diabetes.holdout)["variable"].reshape(-1)
    assert mae.verdict == "pass" and mae.checks[0].reference == pytest.approx(
        mean_absolute_error(diabetes.holdout_targets, predicted), rel=1e-5
    )
    assert mae.checks[1].name == "mean" and mae.checks[1].decision == "pass"  # beats always-the-mean
    holdout = holdouts.holdout_csv(tmp_path / "synthetic.csv", linear)
    loss = report_of(evaluate("--stable", linear.path, "--candidate", forest.path, "--data", holdout, "--label",
                              "label", "--metric", "logLoss", "--json"))  # fmt: skip
    probs = predictions(forest, linear.holdout)["probabilities"]
    assert loss.checks[0].candidate == pytest.approx(log_loss(linear.holdout_targets, probs), rel=1e-4)
    assert loss.verdict == "pass" and (loss.checks[0].effect or 0) < 0  # lower is better
    balanced = report_of(evaluate("--stable", linear.path, "--candidate", forest.path, "--data", holdout, "--label",
                                  "label", "--metric", "balancedAccuracy", "--json"))  # fmt: skip
    labels = predictions(forest, linear.holdout)["label"]
    assert balanced.checks[0].candidate == pytest.approx(balanced_accuracy_score(linear.holdout_targets, labels))
    assert balanced.checks[1].reference == 0.5 and balanced.verdict == "pass"
    auc = report_of(evaluate("--stable", linear.path, "--candidate", forest.path, "--data", holdout, "--label",
                             "label", "--metric", "rocAuc", "--json"))  # fmt: skip
    assert auc.verdict == "pass" and "DeLong" in (auc.checks[0].test or "")


def test_npz_and_http_holdouts_and_their_digests(tmp_path: Path, linear: BuiltModel, forest: BuiltModel) -> None:
    npz = holdouts.holdout_npz(tmp_path / "synthetic.npz", linear)
    proc = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", npz, "--label", "label")
    assert proc.returncode == 0, proc.stdout
    csv_file = holdouts.holdout_csv(tmp_path / "synthetic.csv", linear)
    digest = holdouts.sha256(csv_file)
    with serving(functools.partial(QuietHandler, directory=str(tmp_path))) as base:
        common = ("--stable", linear.path, "--candidate", forest.path, "--label", "label")
        ok = evaluate(*common, "--data", f"{base}/synthetic.csv", "--data-sha256", digest, "--json")
        assert ok.returncode == 0 and report_of(ok).dataset_sha256 == digest
        wrong = evaluate(*common, "--data", f"{base}/synthetic.csv", "--data-sha256", "0" * 64)
        assert wrong.returncode == 2
        assert (
            f"verdict: INCONCLUSIVE: bad input: dataset integrity check failed for {base}/synthetic.csv" in wrong.stdout
        )
        missing = evaluate(*common, "--data", f"{base}/nothing.csv")
        assert missing.returncode == 2 and "dataset unreachable" in missing.stdout and "404" in missing.stdout
    closed = evaluate(*common, "--data", f"http://127.0.0.1:{free_port()}/holdout.csv")
    assert closed.returncode == 2 and "dataset unreachable" in closed.stdout


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_models_and_holdout_from_object_stores_through_the_servers_download(
    scheme: str, tmp_path: Path, linear: BuiltModel, forest: BuiltModel
) -> None:
    """Every source the model server reads works here: both models and the holdout from a real S3 API (moto)
    and a real Cloud Storage JSON API (gcp-storage-emulator; issue #16: a gs:// holdout was refused), verified;
    downloaded models are removed once loaded, the holdout is kept in the work directory."""
    csv_file = holdouts.holdout_csv(tmp_path / "synthetic.csv", linear)
    work = tmp_path / "work"
    with run_s3() if scheme == "s3" else run_gcs() as store:
        stable, candidate = store.put("models", "v1.onnx", linear.path), store.put("models", "v2.onnx", forest.path)
        data = store.put("holdouts", "synthetic.csv", csv_file)
        assert data == f"{scheme}://holdouts/synthetic.csv"
        common = ("--stable", stable, "--stable-sha256", linear.sha256, "--candidate", candidate,
                  "--candidate-sha256", forest.sha256, "--label", "label", "--work-dir", work)  # fmt: skip
        ok = evaluate(*common, "--data", data, "--data-sha256", holdouts.sha256(csv_file), "--json", env=store.env())
        assert ok.returncode == 0, ok.stdout + ok.stderr
        report = report_of(ok)
        assert (report.stable_sha256, report.candidate_sha256) == (linear.sha256, forest.sha256)
        assert report.dataset_sha256 == holdouts.sha256(csv_file)
        assert sorted(p.name for p in work.iterdir()) == ["holdout.csv"]
        wrong = evaluate(*common, "--data", data, "--data-sha256", "0" * 64, env=store.env())
        assert wrong.returncode == 2 and "dataset integrity check failed" in wrong.stdout, wrong.stdout
        missing = evaluate(*common, "--data", f"{scheme}://holdouts/nothing.csv", env=store.env())
        assert missing.returncode == 2 and "dataset unreachable" in missing.stdout, missing.stdout
        assert "nothing.csv" in missing.stdout


H = ",".join(f"f{i}" for i in range(10))  # the synthetic models take 10 features
X = ",".join(["0.5"] * 10)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the dataset is empty (no header row)"),
        (f"{H},label\n", "the dataset has a header but no rows"),
        (f"{H},quality\n{X},0\n", "label column 'label' is not in the dataset (columns: f0, f1, f2, f3"),
        (f"{H},label\n{X},0\n{X},nan\n{X},\n",
         "label column 'label' is empty or NaN on 2 row(s) of rows 1..3 (first: row 2)"),
        (f"{H},label\n{X},0\n{X[:-3]}x,1\n", "row 2, column 'f9': 'x' is not a number"),
        (f"{H},label\n{X},0\n{X}\n", "row 2 has 10 fields, the header has 11"),
        (f"{H},label\n{X},0\n{X},1,7\n{X},1\n", "row 2 has 12 fields, the header has 11"),
        (f"{H},label\r\n{X},0,\r\n", "row 1 has 12 fields, the header has 11"),  # a trailing delimiter
        (f"label,{H}\n0,{X}\n1,{X}\n\n1,{X},\"7, 8\"\n", "row 3 has 12 fields, the header has 11"),
        (f"{H},label\n{X},0\n{X},one\n",
         "row 2, label 'label': 'one' is not a number (the models predict integer classes)"),
        (f"{H},label\n{X},0\n{X},0.5\n", "row 2, label 'label': '0.5' is not an integer class"),
        ("f0,f1,label\n1,2,0\n", "stable model's input 'input' takes 10 features, the dataset has 2 feature columns"),
        (f"{H},label\n{X[:-3]}inf,0\n", "row 1, column 'f9': inf is not a finite number"),
        # quoting (RFC 4180): a quote opens a field only at its start; a quoted field may hold newlines
        (f"{H},label\n{X[:-3]}4\"5,0\n", "row 1, column 'f9': '4\"5' is not a number"),
        (f"{H},label\n{X},0\n{X},\"1\n", "row 2: a quoted field is not closed by the end of the file"),
        (f"{H},label\n{X},0\n{X},\"1\n\n{X},0\n\"\n", "row 2, label 'label': '1\\n\\n0.5,0.5,"),
        (f"{H},label\n{X},0\n{X},\"" + "x\n" * 70_000 + "\"\n",
         "row 2: field larger than field limit (131072) (a quoted field left open?)"),
        (f"\"{H},label\n{X},0\n", "the header: a quoted field is not closed by the end of the file"),
        # a long value is quoted in part, a long message cut: the report's reason holds 2048 characters
        (f"{H},label\n{X[:-3]}{'x' * 5000},0\n",
         f"row 1, column 'f9': '{'x' * 100}'... (5,000 characters) is not a number"),
        (f"{H},label\n{X},{'y' * 3000}\n", f"row 1, label 'label': '{'y' * 100}'... (3,000 characters) is not a "),
        (",".join("c" * 300 + str(i) for i in range(10)) + ",quality\n0,1,2,3,4,5,6,7,8,9,0\n",
         f"label column 'label' is not in the dataset (columns: {'c' * 300}0, "),
    ],
)  # fmt: skip
def test_bad_holdouts_exit_2_naming_the_problem(
    tmp_path: Path, linear: BuiltModel, forest: BuiltModel, content: str, expected: str
) -> None:
    data = tmp_path / "bad.csv"
    data.write_text(content)
    proc = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", data, "--label", "label")
    assert proc.returncode == 2, proc.stdout
    assert expected in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f'{H},label,region\n{X},0,north\n{X},1,"{"x" * 140_000}"\n',
         "row 2: field larger than field limit (131072) (a quoted field left open?)"),
        (f'{H},label,region\n{X},0,north\n{X},1,{"x" * 140_000}\n{X},0,"south"\n',
         "row 2: field larger than field limit (131072) (a quoted field left open?)"),
        (f'{H},label,region\n{X},0,north\n{X},1,"{"x" * 140_000}',
         "row 2: a quoted field is not closed by the end of the file"),
    ],
)  # fmt: skip
def test_a_slice_value_past_the_csv_field_limit_exits_2_naming_its_row(
    tmp_path: Path, linear: BuiltModel, forest: BuiltModel, content: str, expected: str
) -> None:
    """A slice column is read as text (by the csv module when the chunk holds a quote): a value past its field
    limit was the csv module's own error, "the evaluation broke" (exit 3); the Job's compact report says so."""
    data = tmp_path / "bad.csv"
    data.write_text(content)
    log = tmp_path / "termination-log"
    proc = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", data, "--label", "label",
                    "--slice", "region", "--termination-log", log)  # fmt: skip
    assert proc.returncode == 2, proc.stdout
    assert expected in proc.stdout, proc.stdout
    report = EvaluationReport.from_json(log.read_text())
    assert report.problem == "badInput" and report.reason == f"bad input: {expected}"


def test_slice_values_longer_than_a_check_name_are_compared_under_cut_names(
    tmp_path: Path, linear: BuiltModel, forest: BuiltModel
) -> None:
    """Two slice values of 500 characters alike but for the last (one over two lines): a check name over 300
    characters made the report invalid, "the evaluation broke" (exit 3). Now each value is compared under
    its first characters and a digest; the termination message is written and valid."""
    long = "r" * 500
    region = [long + ("\na" if i % 2 else "b") for i in range(len(linear.holdout))]
    data = holdouts.holdout_csv(tmp_path / "long.csv", linear, extra={"region": region})
    log = tmp_path / "termination-log"
    proc = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", data, "--label", "label",
                    "--slice", "region", "--json", "--termination-log", log)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stdout
    report = EvaluationReport.from_json(proc.stdout)
    names = [check.name for check in report.checks if check.kind == "slice"]
    assert len(names) == 2 and len(set(names)) == 2, names
    for name in names:
        assert len(name) == 300 and re.fullmatch(r"region=r+… #[0-9a-f]{12}", name), name
    assert EvaluationReport.from_json(log.read_text()).verdict == report.verdict


def test_quoted_fields_across_lines_a_bom_and_crlf_give_the_plain_files_report(
    tmp_path: Path, linear: BuiltModel, forest: BuiltModel
) -> None:
    """RFC 4180 as a spreadsheet writes it: a byte-order mark, CRLF line ends, every label quoted, a slice
    value holding a newline: the report is the plain file's, the slice named by its value."""
    x, truth = linear.holdout, linear.holdout_targets
    region = ["north\neast" if i % 3 else "south" for i in range(len(x))]
    header = ",".join(f"f{i}" for i in range(x.shape[1])) + ",label,region\r\n"
    rows = [",".join(repr(float(v)) for v in row) + f',"{y}","{r.replace(chr(10), chr(13) + chr(10))}"\r\n'
            for row, y, r in zip(x, truth, region, strict=True)]  # fmt: skip
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(b"\xef\xbb\xbf" + (header + "".join(rows)).encode())
    plain = holdouts.holdout_csv(
        tmp_path / "plain.csv", linear, extra={"region": [r.replace("\n", " ") for r in region]}
    )
    reports = []
    for data in (quoted, plain):
        proc = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", data, "--label", "label",
                        "--slice", "region", "--json")  # fmt: skip
        assert proc.returncode in (0, 1), proc.stdout
        report = json.loads(proc.stdout.replace("north\\r\\neast", "north east"))
        report.pop("datasetSha256"), report.pop("seconds", None)
        reports.append(report)
    assert reports[0] == reports[1] and reports[0]["rows"] == len(x)
    assert {c["name"] for c in reports[0]["checks"]} >= {"region=north east", "region=south"}


def test_bad_models_and_flags_exit_2(holdout: Path, linear: BuiltModel, forest: BuiltModel, tmp_path: Path) -> None:
    wrong = evaluate("--stable", linear.path, "--stable-sha256", "f" * 64, "--candidate", forest.path,
                     "--data", holdout, "--label", "label")  # fmt: skip
    assert wrong.returncode == 2 and "bad input: stable model: model integrity check failed" in wrong.stdout
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    broken = evaluate("--stable", linear.path, "--candidate", garbage, "--data", holdout, "--label", "label")
    assert broken.returncode == 2 and "candidate model: onnxruntime cannot load the model" in broken.stdout
    regression = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", holdout, "--label", "label",
                          "--metric", "mae")  # fmt: skip
    assert regression.returncode == 2 and "no regression output" in regression.stdout
    mixed = evaluate("--stable", linear.path, "--candidate", forest.path, "--data", holdout, "--label", "label",
                     "--baseline", "mean")  # fmt: skip
    assert mixed.returncode == 2 and "baseline mean is for regression metrics" in mixed.stdout
    assert evaluate("--stable", linear.path).returncode == 2  # missing flags
    assert evaluate("--metric", "f1").returncode == 2  # argparse's own refusal


def test_the_job_entry_point_reads_its_request_and_writes_a_compact_report(
    tmp_path: Path, linear: BuiltModel, forest: BuiltModel
) -> None:
    """What the operator's Job runs: the request in the environment, the report in the termination log,
    within the kubelet's 4096 bytes even with 40 slices."""
    segment = [f"s{i % 40:02d}" for i in range(2000)]
    data = holdouts.holdout_csv(tmp_path / "sliced.csv", linear, extra={"segment": segment})
    request = EvaluationRequest.from_wire({
        "stable": {"uri": linear.path.as_uri(), "sha256": linear.sha256},
        "candidate": {"uri": forest.path.as_uri(), "sha256": forest.sha256},
        "dataset": {"uri": data.as_uri(), "sha256": holdouts.sha256(data), "label": "label"},
        "slices": ["segment"],
    })  # fmt: skip
    log = tmp_path / "termination-log"
    proc = subprocess.run(
        [str(BIN / "mlrollout-evaluate")], capture_output=True, text=True, timeout=300,
        env={**os.environ, EvaluateEnv.REQUEST: json.dumps(request.to_wire()), EvaluateEnv.TERMINATION_LOG: str(log)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    message = log.read_text()
    assert len(message.encode()) <= MESSAGE_LIMIT
    report = parse_report(message)
    assert report.verdict == "pass" and report.rows == 2000
    shown = [c for c in report.checks if c.kind == "slice"]
    assert len(shown) + report.omitted == 40 and report.omitted > 0
    assert "segment=s00" in proc.stdout  # the log keeps every slice
    bad = subprocess.run(
        [str(BIN / "mlrollout-evaluate")], capture_output=True, text=True, timeout=60,
        env={**os.environ, EvaluateEnv.REQUEST: '{"stable": {}}', EvaluateEnv.TERMINATION_LOG: str(log)},
    )  # fmt: skip
    assert bad.returncode == 2
    refused = parse_report(log.read_text())
    assert refused.problem == "badInput" and refused.verdict == "inconclusive" and "candidate" in refused.reason


def test_the_job_never_imports_pydantic(tmp_path: Path, linear: BuiltModel, forest: BuiltModel) -> None:
    """The Job's whole run, as the operator starts it, imports no pydantic (docs/evaluation.md, "Throughput":
    its import and model building were half a plain onnxruntime loop's time on 100k rows). Python's own
    import log (PYTHONPROFILEIMPORTTIME) lists every module the process imported, lazily or not."""
    data = holdouts.holdout_csv(tmp_path / "holdout.csv", linear)
    request = EvaluationRequest.from_wire({
        "stable": {"uri": linear.path.as_uri()}, "candidate": {"uri": forest.path.as_uri()},
        "dataset": {"uri": data.as_uri(), "label": "label"},
    })  # fmt: skip
    proc = subprocess.run(
        [str(BIN / "mlrollout-evaluate")], capture_output=True, text=True, timeout=300,
        env={**os.environ, EvaluateEnv.REQUEST: json.dumps(request.to_wire()), "PYTHONPROFILEIMPORTTIME": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", proc.stderr, flags=re.MULTILINE)
    assert "mlrollout_serving.evaluation.run" in imported and "onnxruntime" in imported  # the log is read
    assert [m for m in imported if m.split(".")[0] in ("pydantic", "pydantic_core")] == []
