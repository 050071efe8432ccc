"""A local holdout hashed while the models load: the same answer, and the same errors, as fetching it after
them, given when asked for (never before a model's problem)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.evaluation.fetching import all_local, fetch_dataset, fetch_dataset_early, load_model


def _csv(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "h.csv"
    path.write_bytes(b"a,y\n" + b"1.5,0\n" * 300_000)  # a few MiB: several reads of the download loop
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_local_holdout_is_the_same_early_as_late(tmp_path: Path) -> None:
    path, sha = _csv(tmp_path)
    for uri in (str(path), path.as_uri()):
        assert fetch_dataset_early(uri, sha, tmp_path, "csv")() == fetch_dataset(uri, sha, tmp_path, "csv")
        assert fetch_dataset_early(uri, None, tmp_path, "csv")() == (path, sha)


@pytest.mark.parametrize(
    ("uri", "sha", "words"),
    [
        ("{path}", "0" * 64, "dataset integrity check failed for .*h.csv: expected sha256 0{64}, actual"),
        ("{missing}", None, "dataset unreachable: cannot read dataset .*absent.csv: No such file"),
        ("ftp://host/h.csv", None, "dataset unreachable: unsupported dataset URI scheme 'ftp'"),
        ("http://127.0.0.1:9/h.csv", None, "dataset unreachable"),
    ],
)
def test_the_errors_are_fetch_datasets_raised_when_asked(tmp_path: Path, uri: str, sha: str | None, words: str) -> None:
    path, _ = _csv(tmp_path)
    uri = uri.format(path=path, missing=tmp_path / "absent.csv")
    late = fetch_dataset_early(uri, sha, tmp_path, "csv")  # no error yet: a model's would come first
    with pytest.raises(BadInput, match=words) as early:
        late()
    with pytest.raises(BadInput) as direct:
        fetch_dataset(uri, sha, tmp_path, "csv")
    assert str(early.value) == str(direct.value)


def test_local_files_need_no_work_directory(tmp_path: Path) -> None:
    """Paths and file:// URIs are read where they lie: with all three local, the evaluation makes no work
    directory (and imports no ``tempfile``); anything else, or a URI no source reads, asks for one."""
    path, sha = _csv(tmp_path)
    assert all_local([(str(path), None), (path.as_uri(), None)])
    assert not all_local([(str(path), None), ("http://127.0.0.1:9/h.csv", None)])
    assert not all_local([("s3://bucket/h.csv", None)]) and not all_local([("nope://x", None)])
    assert fetch_dataset(str(path), sha, None, "csv") == (path, sha)


def test_a_download_without_a_work_directory_is_refused_by_name(tmp_path: Path) -> None:
    """Never reached from the evaluation (a remote URI gets a directory), but a bug would say what it is."""
    import http.server
    import threading

    (tmp_path / "m.onnx").write_bytes(b"not a model")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with pytest.raises(BadInput, match="no download directory for http://"):
            load_model("stable", f"http://127.0.0.1:{server.server_port}/m.onnx", None, None)
        server.shutdown()
