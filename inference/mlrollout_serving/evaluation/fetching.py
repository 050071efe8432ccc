"""The two models and the holdout, through the model server's own download and sha256 check.

Every URI scheme the model server reads works here too, because this calls its download loop
(:mod:`mlrollout_serving.server.download`: streamed to disk, bounded, retried, hashed) and its loader
(:mod:`mlrollout_serving.server.loading`) instead of a copy of them: a new source added there reaches the
evaluation without a change here. A model is verified before onnxruntime parses a byte of it, as in the
server. The holdout is verified before it is scored; a local file (``file://``, a path, or a claim mounted
from ``pvc://``) is hashed and read where it lies; a remote one is streamed to the work directory, so a
holdout larger than memory never has to fit in it (docs/evaluation.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.server import download, loading
from mlrollout_serving.server.cpus import usable_cpus

DOWNLOAD_TIMEOUT: Final = 60.0
DOWNLOAD_ATTEMPTS: Final = 3
MODEL_MAX_BYTES: Final = 2 << 30  # the model server's default limit
DATASET_MAX_BYTES: Final = 64 << 30


def load_model(
    role: str, uri: str, sha256: str | None, work_dir: Path, authorization: str | None = None
) -> loading.LoadedModel:
    """Fetch, verify and load one model; BadInput says which model and why not. ``authorization``: the
    header its download sends (a registry's credentials, for a file on that tracking server)."""
    try:
        fetched = download.fetch(
            uri, timeout=DOWNLOAD_TIMEOUT, max_bytes=MODEL_MAX_BYTES, attempts=DOWNLOAD_ATTEMPTS, directory=work_dir,
            authorization=authorization,
        )  # fmt: skip
    except download.DownloadError as e:
        raise BadInput(f"{role} model: {e}") from None
    try:
        digest = loading.verify(fetched.sha256, sha256, uri)
        return loading.load(fetched.path, digest, intra_op_threads=usable_cpus(), inter_op_threads=1, warm_rows=2)
    except loading.LoadError as e:
        raise BadInput(f"{role} model: {e}") from None
    finally:
        fetched.discard()  # onnxruntime holds the model now


def fetch_dataset(
    uri: str, sha256: str | None, work_dir: Path, suffix: str, authorization: str | None = None
) -> tuple[Path, str]:
    """The holdout as a local file and its sha256, verified against ``sha256`` when given."""
    try:
        fetched = download.fetch(
            uri, timeout=DOWNLOAD_TIMEOUT, max_bytes=DATASET_MAX_BYTES, attempts=DOWNLOAD_ATTEMPTS, directory=work_dir,
            authorization=authorization,
        )  # fmt: skip
    except download.DownloadError as e:
        # the download loop speaks of models; this file is the holdout
        raise BadInput(f"dataset unreachable: {str(e).replace('model', 'dataset')}") from None
    if sha256 is not None and fetched.sha256 != sha256:
        fetched.discard()
        raise BadInput(
            f"dataset integrity check failed for {uri}: expected sha256 {sha256}, actual sha256 {fetched.sha256}"
        )
    if not fetched.temporary:
        return fetched.path, fetched.sha256
    path = work_dir / f"holdout.{suffix}"
    try:
        fetched.path.replace(path)
    except OSError as e:
        fetched.discard()
        raise BadInput(f"cannot store the dataset in {work_dir}: {e.strerror or e}") from None
    return path, fetched.sha256
