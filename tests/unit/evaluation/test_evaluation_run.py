"""The whole evaluation in-process on real ONNX models: the report does not depend on the chunk size, and a
bad row far into the holdout is a bad input that names it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from tests.support import holdouts, models

from mlrollout_serving.contract.evaluation import CHECK_NAME_MAX, EvaluateExit, EvaluationReport, EvaluationRequest
from mlrollout_serving.evaluation import dataset
from mlrollout_serving.evaluation.run import _Columns, evaluate, slice_check_name


def _request(data: Path, metric: str, slices: tuple[str, ...] = ()) -> EvaluationRequest:
    stable, candidate = models.wine(), models.wine_worse()
    return EvaluationRequest.from_wire({
        "stable": {"uri": str(stable.path)},
        "candidate": {"uri": str(candidate.path)},
        "dataset": {"uri": str(data), "label": "label"},
        "metric": metric, "slices": slices, "resamples": 300,
    })  # fmt: skip


def _report(request: EvaluationRequest, tmp_path: Path, chunk_rows: int) -> EvaluationReport:
    return evaluate(request, tmp_path, chunk_rows=chunk_rows, clock=lambda: 0.0)


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 noisy wine rows with a segment column, and a few blank lines."""
    model = models.wine()
    rng = np.random.default_rng(8)
    pick = rng.integers(0, len(model.holdout), 1500)
    x = model.holdout[pick] + rng.normal(0, 0.05, (1500, model.n_features)) * model.holdout.std(axis=0)
    segment = [f"s{v}, a" for v in rng.integers(0, 3, 1500)]
    path = holdouts.write_csv(tmp_path_factory.mktemp("run") / "wine.csv", x, np.asarray(model.holdout_targets)[pick],
                              extra={"segment": segment})  # fmt: skip
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:300], "\n", *lines[300:900], "  \n", *lines[900:]]))
    return path


@pytest.mark.parametrize("metric", ["accuracy", "balancedAccuracy", "logLoss"])
def test_the_report_does_not_depend_on_the_chunk_size(wine_csv: Path, tmp_path: Path, metric: str) -> None:
    request = _request(wine_csv, metric, slices=("segment",))
    whole = _report(request, tmp_path, 100_000)
    assert whole.problem is None and whole.rows == 1500 and len(whole.checks) == 5
    for chunk_rows in (1, 97, 1000):
        assert _report(request, tmp_path, chunk_rows) == whole


def test_a_bad_row_in_a_later_chunk_is_bad_input_naming_it(wine_csv: Path, tmp_path: Path) -> None:
    lines = wine_csv.read_text().splitlines(keepends=True)
    fields = lines[1200].split(",")
    fields[4] = "n/a"
    bad = tmp_path / "bad.csv"
    bad.write_text("".join([*lines[:1200], ",".join(fields), *lines[1201:]]))
    report = _report(_request(bad, "accuracy", slices=("segment",)), tmp_path, 97)
    # line 1200 is data row 1198: the header and two blank lines before it are no rows
    assert report.problem == "badInput" and report.exit_code == EvaluateExit.BAD_INPUT
    assert report.reason == "bad input: row 1198, column 'f4': 'n/a' is not a number"


def test_a_models_problem_is_reported_before_the_holdouts_digest(wine_csv: Path, tmp_path: Path) -> None:
    """The holdout is hashed while the models load, yet its wrong digest is reported only when the models
    are fine, as when it was hashed after them."""
    request = _request(wine_csv, "accuracy", slices=("segment",))
    wire = request.to_wire()
    wire["dataset"]["sha256"] = "0" * 64
    wrong_data = EvaluationRequest.from_wire(wire)
    assert _report(wrong_data, tmp_path, 97).reason.startswith("bad input: dataset integrity check failed")
    wire["stable"]["sha256"] = "f" * 64
    both = _report(EvaluationRequest.from_wire(wire), tmp_path, 97)
    assert both.reason.startswith("bad input: stable model: model integrity check failed"), both.reason


def test_a_holdout_the_models_do_not_fit_is_closed(wine_csv: Path, tmp_path: Path) -> None:
    """The models are checked against the header before any row is read; the file is closed all the same
    (pytest turns an unclosed file's ResourceWarning into an error)."""
    report = _report(_request(wine_csv, "accuracy"), tmp_path, 97)  # "segment" is no slice: a 14th feature
    assert report.exit_code == EvaluateExit.BAD_INPUT
    assert (
        report.reason == "bad input: stable model's input 'input' takes 13 features, the dataset has 14 feature columns"
    )


@pytest.fixture(scope="module")
def wine_numbers_csv(wine_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wine holdout without its segment column and its line of spaces: numbers only, read whole."""
    lines = wine_csv.read_text().splitlines(keepends=True)
    numbers = [",".join(line.split(",")[:14]) + "\n" if line.strip() else line for line in lines]  # 13 + label
    path = tmp_path_factory.mktemp("run") / "wine-numbers.csv"
    path.write_text("".join(line for line in numbers if line.strip() or line == "\n"))
    return path


@pytest.mark.parametrize("metric", ["accuracy", "balancedAccuracy", "logLoss"])
def test_a_holdout_read_whole_reports_what_the_stream_reports(
    wine_numbers_csv: Path, tmp_path: Path, metric: str
) -> None:
    request = _request(wine_numbers_csv, metric)
    whole = evaluate(request, tmp_path, clock=lambda: 0.0)
    assert whole.problem is None and whole.rows == 1500
    for chunk_rows in (97, 8192):
        assert evaluate(request, tmp_path, chunk_rows=chunk_rows, clock=lambda: 0.0, whole_file_max_bytes=0) == whole


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        (4, "n/a", "row 1199, column 'f4': 'n/a' is not a number"),
        (4, "inf", "row 1199, column 'f4': inf is not a finite number"),
        (13, "nan", "label column 'label' is empty or NaN on 1 row(s) of rows 1..1500 (first: row 1199)"),
        (13, "", "label column 'label' is empty or NaN on 1 row(s) of rows 1..1500 (first: row 1199)"),
        (13, "cat", "row 1199, label 'label': 'cat' is not a number (the models predict integer classes)"),
        (13, None, "row 1199 has 13 fields, the header has 14"),
        (14, "9", "row 1199 has 15 fields, the header has 14"),
    ],
)
def test_a_bad_row_is_named_alike_whole_or_streamed(
    wine_numbers_csv: Path, tmp_path: Path, field: int, value: str | None, words: str
) -> None:
    """Line 1200 is data row 1199 (a blank line before it is no row), read whole or streamed; a wrong digest
    is reported instead of the row: the holdout is verified before a row is read."""
    lines = wine_numbers_csv.read_text().splitlines(keepends=True)
    fields = lines[1200].rstrip("\n").split(",")
    fields[field : field + 1] = [] if value is None else [value]  # None: no label; 14: a field more
    bad = tmp_path / "bad.csv"
    bad.write_text("".join([*lines[:1200], ",".join(fields) + "\n", *lines[1201:]]))
    request = _request(bad, "accuracy")
    for limit in (dataset.WHOLE_FILE_MAX_BYTES, 0):
        report = evaluate(request, tmp_path, clock=lambda: 0.0, whole_file_max_bytes=limit)
        assert report.exit_code == EvaluateExit.BAD_INPUT and report.reason.startswith(f"bad input: {words}"), limit
    wire = request.to_wire()
    wire["dataset"]["sha256"] = "0" * 64
    wrong = evaluate(EvaluationRequest.from_wire(wire), tmp_path, clock=lambda: 0.0)
    assert wrong.reason.startswith("bad input: dataset integrity check failed"), wrong.reason


@pytest.mark.parametrize("slices", [(), ("segment",)])
@pytest.mark.parametrize("row", [1, 750, 1500, 0], ids=["first", "middle", "last line", "1-row file"])
def test_a_row_longer_than_the_header_is_bad_input_whole_or_streamed(
    wine_numbers_csv: Path, wine_csv: Path, tmp_path: Path, row: int, slices: tuple[str, ...]
) -> None:
    """A field more on data row ``row`` (0: the only row of a file) is refused, the same words read whole
    or streamed in any chunks; with the slice column too (text, always streamed)."""
    lines = (wine_csv if slices else wine_numbers_csv).read_text().splitlines(keepends=True)
    data = [i for i, line in enumerate(lines) if i and line.strip()]
    if not row:
        lines = lines[: data[0] + 1]
    at = data[max(row, 1) - 1]
    lines[at] = lines[at].rstrip("\r\n") + ",0.5\n"
    bad = tmp_path / "long.csv"
    bad.write_text("".join(lines))
    fields = 16 if slices else 15
    request = _request(bad, "accuracy", slices)
    for limit, chunk_rows in ((dataset.WHOLE_FILE_MAX_BYTES, 8192), (0, 8192), (0, 1), (0, 97)):
        report = evaluate(request, tmp_path, chunk_rows=chunk_rows, clock=lambda: 0.0, whole_file_max_bytes=limit)
        assert report.exit_code == EvaluateExit.BAD_INPUT, (limit, chunk_rows)
        assert report.reason == f"bad input: row {max(row, 1)} has {fields} fields, the header has {fields - 1}"


def test_slice_check_names_keep_within_the_contracts_length() -> None:
    """A name that fits is ``column=value``; a longer one keeps the value's first characters, then ``…`` and a
    digest of the whole value: 300 characters, whatever the column's name (at most 256)."""
    assert slice_check_name("segment", "north") == "segment=north"
    assert slice_check_name("s", "v" * 298) == "s=" + "v" * 298
    first, second = slice_check_name("s", "v" * 299), slice_check_name("s", "v" * 299 + "w")
    assert first != second and len(first) == len(second) == CHECK_NAME_MAX
    assert first.startswith("s=" + "v" * 100) and re.fullmatch(r"s=v+… #[0-9a-f]{12}", first)
    column = "c" * 256
    assert len(slice_check_name(column, "v" * 1000)) == CHECK_NAME_MAX
    assert slice_check_name(column, "v" * 1000).startswith(column + "=v")


def test_long_slice_values_are_compared_under_names_that_fit(wine_csv: Path, tmp_path: Path) -> None:
    """Slice values of 400 and more characters (quoted, one over two lines), alike in their first 400: the
    report is valid (a name over 300 characters was an EvaluationFormatError, exit 3), each value its own
    check, named by its first characters and a digest, in any chunk size."""
    long = "v" * 400
    values = {"s0, a": long + "0", "s1, a": long + "\n1", "s2, a": "short"}
    text = wine_csv.read_text()
    for old, new in values.items():
        text = text.replace(old, new)
    data = tmp_path / "long.csv"
    data.write_text(text)
    request = _request(data, "accuracy", slices=("segment",))
    whole = _report(request, tmp_path, 100_000)
    assert whole.problem is None and whole.rows == 1500
    names = [check.name for check in whole.checks if check.kind == "slice"]
    assert sorted(names) == sorted(slice_check_name("segment", value) for value in values.values())
    assert len(set(names)) == 3 and "segment=short" in names
    assert all(len(name) <= CHECK_NAME_MAX for name in names)
    assert EvaluationReport.from_json(whole.to_json()) == whole
    assert len(whole.to_message()) <= 4096
    for chunk_rows in (1, 97):
        assert _report(request, tmp_path, chunk_rows) == whole


def test_slices_are_listed_in_the_order_their_values_appear_whatever_the_chunks() -> None:
    """np.unique sorts a chunk's values: they were listed sorted within the first chunk, by appearance across
    chunks, so the report's order of slice checks changed with the chunk size."""
    texts = ["north", "east", "north", "south", "east"]
    for sizes in ([5], [1] * 5, [2, 3]):
        columns = _Columns(("region",))
        start = 0
        for size in sizes:
            columns.add((np.zeros(size),), {"region": np.asarray(texts[start : start + size])})
            start += size
        index = columns.slice_index()
        assert [name for name, _ in index] == ["region=north", "region=east", "region=south"], sizes
        assert [rows.tolist() for _, rows in index] == [[0, 2], [1, 4], [3]], sizes
