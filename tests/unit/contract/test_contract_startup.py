"""The start-up progress lines: what the model server writes is what the operator parses, and nothing else
parses as progress."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.contract import startup
from mlrollout_serving.contract.startup import Stage, Startup, last_startup, parse

MIB = 1 << 20
SHA = "ab" * 32


def logged(message: str) -> str:
    """``message`` as the data plane's logging writes it (LOG_FORMAT, a real record)."""
    record = logging.LogRecord("mlrollout_serving.server.download", logging.INFO, __file__, 1, message, None, None)
    return logging.Formatter(startup.LOG_FORMAT).format(record)


def test_a_download_line_with_its_size_and_rate_parses() -> None:
    line = logged(startup.downloading("s3://models/wine.onnx", 412 * MIB, 900 * MIB, rate=8.1 * MIB))
    assert line.endswith("downloading s3://models/wine.onnx: 412.0 MiB of 900.0 MiB (45%), 8.1 MiB/s")
    found = parse(line)
    assert found == Startup(Stage.DOWNLOADING, "s3://models/wine.onnx", 412.0, 900.0, 45)
    assert found.summary() == "downloading the model: 412.0 of 900.0 MiB (45%)"


def test_the_readiness_reason_parses_too_and_an_unknown_size_has_no_percent() -> None:
    assert startup.downloading("s3://b/k", 12 * MIB, 40 * MIB) == "downloading s3://b/k: 12.0 MiB of 40.0 MiB (30%)"
    found = parse(startup.downloading("http://h/m.onnx", 3 * MIB, None))
    assert found == Startup(Stage.DOWNLOADING, "http://h/m.onnx", 3.0)
    assert found.summary() == "downloading the model: 3.0 MiB"


@pytest.mark.parametrize(
    ("message", "stage", "summary"),
    [
        (startup.retrying("s3://b/k", 2.0, "store down:\n  HTTP 503"), Stage.RETRYING,
         "retrying the model's download after: store down: HTTP 503"),
        (startup.downloaded("s3://b/k", 900 * MIB, 12.3), Stage.DOWNLOADED,
         "downloaded the model (900.0 MiB), loading it"),
        (startup.loading("s3://b/k", SHA), Stage.LOADING, "loading the model"),
    ],
)  # fmt: skip
def test_every_stage_round_trips(message: str, stage: Stage, summary: str) -> None:
    found = parse(logged(message))
    assert found is not None and found.stage is stage and found.uri == "s3://b/k"
    assert found.summary() == summary


def test_a_uri_with_colons_and_spaces_is_kept_whole() -> None:
    uri = "s3://b/runs/2026-12-05 03:00:00: final/model.onnx"
    found = parse(logged(startup.downloading(uri, MIB, 2 * MIB)))
    assert found is not None and found.uri == uri and found.percent == 50


@pytest.mark.parametrize(
    "line",
    [
        "",
        "2026-12-05 03:01:02,003 INFO mlrollout_serving.server: listening on 0.0.0.0:8080; loading s3://b/k",
        "2026-12-05 03:01:02,003 INFO mlrollout_serving.server: ready: model wine version 1 sha256 ab",
        "downloading s3://b/k",  # the reason before the first byte: no numbers yet
        "ding s3://b/k: 1.0 MiB of 2.0 MiB (50%)",  # the first line of a tail cut by limitBytes
        "downloading s3://b/k: many MiB",
        "loading s3://b/k (sha256 not-a-digest)",
    ],
)
def test_other_lines_are_not_progress(line: str) -> None:
    assert parse(line) is None


def test_the_last_progress_line_of_a_tail_wins() -> None:
    tail = [
        logged(startup.downloading("s3://b/k", MIB, 4 * MIB)),
        logged(startup.retrying("s3://b/k", 1.0, "connection reset")),
        logged(startup.downloading("s3://b/k", 3 * MIB, 4 * MIB)),
        logged("some other line"),
    ]
    found = last_startup(tail)
    assert found is not None and found.percent == 75
    assert last_startup(["nothing", "here"]) is None


@given(done=st.integers(0, 1 << 40), extra=st.integers(0, 1 << 40), rate=st.floats(0, 1e12))
def test_any_download_line_parses_back_to_its_numbers(done: int, extra: int, rate: float) -> None:
    total = done + extra or 1
    found = parse(logged(startup.downloading("gs://b/o", min(done, total), total, rate=rate)))
    assert found is not None and found.total_mib == float(f"{total / MIB:.1f}")
    assert found.percent == 100 * min(done, total) // total
