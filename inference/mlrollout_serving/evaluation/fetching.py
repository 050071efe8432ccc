"""The two models and the holdout, through the model server's own fetch and sha256 check.

Every URI scheme the model server reads works here too, because this calls its loader
(:mod:`mlrollout_serving.server.loading`) instead of a copy of it: a new scheme added there reaches the
evaluation without a change here. A model is verified before onnxruntime parses a byte of it, as in the
server. The holdout is verified before it is scored; a local file (``file://``, a path, or a claim mounted
from ``pvc://``) is hashed and read where it lies, streamed; a remote one is fetched by the server's
loader, written to the work directory and then streamed from there (the loader holds a download in memory
while it arrives: docs/analysis.md, "Offline evaluation", says what that means for huge holdouts).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path
from typing import Final

from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.server import loading
from mlrollout_serving.server.cpus import usable_cpus

DOWNLOAD_TIMEOUT: Final = 60.0
DOWNLOAD_ATTEMPTS: Final = 3
MODEL_MAX_BYTES: Final = 2 << 30  # the model server's default limit
DATASET_MAX_BYTES: Final = 64 << 30
_CHUNK: Final = 1 << 20


def load_model(role: str, uri: str, sha256: str | None) -> loading.LoadedModel:
    """Fetch, verify and load one model; BadInput says which model and why not."""
    try:
        data = loading.fetch(uri, DOWNLOAD_TIMEOUT, MODEL_MAX_BYTES, DOWNLOAD_ATTEMPTS)
        digest = loading.verify(data, sha256, uri)
        return loading.load(data, digest, intra_op_threads=usable_cpus(), inter_op_threads=1, warm_rows=2)
    except loading.LoadError as e:
        raise BadInput(f"{role} model: {e}") from None


def local_path(uri: str) -> Path | None:
    """The file a ``file://`` URI or a plain path names; None for a remote URI."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_dataset(uri: str, sha256: str | None, work_dir: Path, suffix: str) -> tuple[Path, str]:
    """The holdout as a local file and its sha256, verified against ``sha256`` when given."""
    path = local_path(uri)
    if path is None:
        try:
            data = loading.fetch(uri, DOWNLOAD_TIMEOUT, DATASET_MAX_BYTES, DOWNLOAD_ATTEMPTS)
        except loading.LoadError as e:
            raise BadInput(f"dataset unreachable: {str(e).replace('model', 'dataset')}") from None
        digest = hashlib.sha256(data).hexdigest()
        _check(uri, sha256, digest)
        work_dir.mkdir(parents=True, exist_ok=True)
        path = work_dir / f"holdout.{suffix}"
        try:
            path.write_bytes(data)
        except OSError as e:
            raise BadInput(f"cannot store the dataset in {work_dir}: {e.strerror or e}") from None
        return path, digest
    try:
        digest = sha256_of(path)
    except OSError as e:
        raise BadInput(f"dataset unreachable: cannot read {path}: {e.strerror or e}") from None
    _check(uri, sha256, digest)
    return path, digest


def _check(uri: str, expected: str | None, actual: str) -> None:
    if expected is not None and actual != expected:
        raise BadInput(f"dataset integrity check failed for {uri}: expected sha256 {expected}, actual sha256 {actual}")
