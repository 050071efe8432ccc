"""A local holdout hashed while the models load: the same answer, and the same errors, as fetching it after
them, given when asked for (never before a model's problem)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.evaluation.fetching import DIGEST_SWITCH_INTERVAL, fetch_dataset, fetch_dataset_early


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


@pytest.mark.parametrize("sha", ["good", "0" * 64])
def test_the_switch_interval_is_short_while_the_digest_runs_and_restored_after(tmp_path: Path, sha: str) -> None:
    """The digest thread gets the GIL back within DIGEST_SWITCH_INTERVAL (not Python's 5 ms) while the models
    load, and the process's interval is what it was once the digest is done, whether it matched or not."""
    path, good = _csv(tmp_path)
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.004)
        late = fetch_dataset_early(str(path), good if sha == "good" else sha, tmp_path, "csv")
        assert round(sys.getswitchinterval(), 6) in (DIGEST_SWITCH_INTERVAL, 0.004)  # 0.004 once the thread is done
        if sha == "good":
            assert late() == (path, good)
        else:
            with pytest.raises(BadInput, match="integrity"):
                late()
        assert sys.getswitchinterval() == pytest.approx(0.004)
        fetch_dataset_early("ftp://host/h.csv", None, tmp_path, "csv")  # remote: no thread, interval untouched
        assert sys.getswitchinterval() == pytest.approx(0.004)
    finally:
        sys.setswitchinterval(before)
