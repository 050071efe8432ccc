"""The download loop's decisions with in-memory sources: retries, final errors, limits, hashing, progress;
and how boto3's errors read (real botocore exception objects, no store)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore import exceptions as bex

from mlrollout_serving.server import download
from mlrollout_serving.server.sources import Opened, SourceError, source_for
from mlrollout_serving.server.sources.s3 import explain, parse

DATA = b"model bytes " * 1000


@dataclass
class FakeSource:
    """Fails with ``errors`` in turn, then serves ``data`` (declaring ``declared`` bytes)."""

    data: bytes = DATA
    errors: list[SourceError] = field(default_factory=list)
    declared: int | None = len(DATA)
    uri: str = "mem://model"
    local: Path | None = None
    opened: int = 0

    def open(self, timeout: float) -> Opened:
        self.opened += 1
        if self.errors:
            raise self.errors.pop(0)
        return Opened(io.BytesIO(self.data), self.declared)


def fetch(source: FakeSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> download.Fetched:
    monkeypatch.setattr(download, "source_for", lambda uri, authorization=None: source)
    sleeps: list[float] = []
    args: dict[str, object] = {"timeout": 1.0, "max_bytes": 1 << 20, "attempts": 3, "directory": tmp_path}
    args.update(kw)
    fetched = download.fetch(source.uri, sleep=sleeps.append, **args)  # type: ignore[arg-type]
    assert sleeps == [download.backoff(i) for i in range(1, source.opened)]
    return fetched


def test_streamed_to_a_temporary_file_with_its_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = fetch(FakeSource(), tmp_path, monkeypatch)
    assert fetched.temporary and fetched.path.parent == tmp_path
    assert fetched.path.read_bytes() == DATA and fetched.sha256 == hashlib.sha256(DATA).hexdigest()
    fetched.discard()
    assert not fetched.path.exists()


def test_transient_errors_are_retried_with_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FakeSource(errors=[SourceError("503", transient=True), SourceError("timeout", transient=True)])
    assert fetch(source, tmp_path, monkeypatch).size == len(DATA)
    assert source.opened == 3


def test_final_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FakeSource(errors=[SourceError("the object does not exist", transient=False)])
    with pytest.raises(download.DownloadError, match="mem://model: the object does not exist"):
        fetch(source, tmp_path, monkeypatch)
    assert source.opened == 1


def test_attempts_run_out_with_the_last_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FakeSource(errors=[SourceError(f"reset {i}", transient=True) for i in range(3)])
    with pytest.raises(download.DownloadError, match="after 3 attempts: reset 2"):
        fetch(source, tmp_path, monkeypatch)


def test_declared_size_over_the_limit_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(download.DownloadError, match=f"is {len(DATA)} bytes, more than the limit of 100"):
        fetch(FakeSource(), tmp_path, monkeypatch, max_bytes=100)
    assert list(tmp_path.iterdir()) == []


def test_undeclared_size_is_cut_at_the_limit_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(download.DownloadError, match="larger than the limit of 100 bytes"):
        fetch(FakeSource(declared=None), tmp_path, monkeypatch, max_bytes=100)
    assert list(tmp_path.iterdir()) == []


def test_a_body_shorter_than_declared_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FakeSource(declared=len(DATA) + 10)
    with pytest.raises(download.DownloadError, match="connection cut"):
        fetch(source, tmp_path, monkeypatch)
    assert source.opened == 3


def test_more_than_the_disk_holds_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "_free_bytes", lambda directory: 1000)
    with pytest.raises(download.DownloadError, match="more than the 1000 bytes free"):
        fetch(FakeSource(), tmp_path, monkeypatch)


def test_local_files_are_hashed_in_place(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(DATA)
    fetched = download.fetch(path.as_uri(), timeout=1, max_bytes=1 << 20, attempts=1, directory=tmp_path / "d")
    assert fetched.path == path and not fetched.temporary and fetched.sha256 == hashlib.sha256(DATA).hexdigest()
    fetched.discard()
    assert path.exists()


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(SourceError, match=r"unsupported model URI scheme 'ftp'.*s3://") as info:
        source_for("ftp://host/m.onnx")
    assert not info.value.transient


def test_s3_uri_parsing() -> None:
    assert parse("s3://models/wine/v1/model.onnx") == ("models", "wine/v1/model.onnx")
    for bad in ("s3://models", "s3:///key", "s3://models/"):
        with pytest.raises(SourceError):
            parse(bad)


def _client_error(code: str, status: int) -> bex.ClientError:
    return bex.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    ("exc", "transient", "words"),
    [
        (_client_error("NoSuchKey", 404), False, "the object does not exist"),
        (_client_error("AccessDenied", 403), False, "access denied"),
        (_client_error("InvalidAccessKeyId", 403), False, "does not know the access key id"),
        (_client_error("", 404), False, "the object does not exist (HTTP 404"),
        (_client_error("SlowDown", 503), True, "SlowDown"),
        (_client_error("InternalError", 500), True, "InternalError"),
        (bex.NoCredentialsError(), False, "no usable AWS credentials"),
        (bex.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True, "Could not connect"),
        (bex.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True, "Read timeout"),
    ],
)
def test_boto_errors_read_clearly(exc: Exception, transient: bool, words: str) -> None:
    error = explain(exc, "s3://b/k")
    assert error.transient is transient
    assert words in str(error) and str(error).startswith("cannot read s3://b/k")
