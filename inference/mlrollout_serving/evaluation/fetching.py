"""The two models and the holdout, through the model server's own download and sha256 check.

Every URI scheme the model server reads works here too, because this calls its download loop
(:mod:`mlrollout_serving.server.download`: streamed to disk, bounded, retried, hashed) and its loader
(:mod:`mlrollout_serving.server.loading`) instead of a copy of them: a new source added there reaches the
evaluation without a change here. A model is verified before onnxruntime parses a byte of it, as in the
server. The holdout is verified before it is scored (a local one is hashed while the models load:
:func:`fetch_dataset_early`); a local file (``file://``, a path, or a claim mounted
from ``pvc://``) is hashed and read where it lies; a remote one is streamed to the work directory, so a
holdout larger than memory never has to fit in it (docs/evaluation.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.server import download, loading
from mlrollout_serving.server.cpus import usable_cpus
from mlrollout_serving.server.sources import SourceError, source_for

DOWNLOAD_TIMEOUT: Final = 60.0
DOWNLOAD_ATTEMPTS: Final = 3
MODEL_MAX_BYTES: Final = 2 << 30  # the model server's default limit
DATASET_MAX_BYTES: Final = 64 << 30


def load_model(
    role: str, uri: str, sha256: str | None, work_dir: Path | None, authorization: str | None = None
) -> loading.LoadedModel:
    """Fetch, verify and load one model; BadInput says which model and why not. ``authorization``: the
    header its download sends (a registry's credentials, for a file on that tracking server). ``work_dir``
    None: only local files (:func:`all_local`)."""
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
    uri: str, sha256: str | None, work_dir: Path | None, suffix: str, authorization: str | None = None
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
    if not fetched.temporary or work_dir is None:  # a temporary file came from a download into work_dir
        return fetched.path, fetched.sha256
    path = work_dir / f"holdout.{suffix}"
    try:
        fetched.path.replace(path)
    except OSError as e:
        fetched.discard()
        raise BadInput(f"cannot store the dataset in {work_dir}: {e.strerror or e}") from None
    return path, fetched.sha256


def all_local(uris: list[tuple[str, str | None]]) -> bool:
    """Whether every ``(uri, authorization)`` names a local file, which is read where it lies: then no work
    directory is needed (nor ``tempfile``, a few ms of the Job's start-up)."""
    try:
        return all(source_for(uri, authorization).local is not None for uri, authorization in uris)
    except SourceError:
        return False  # the fetch names the problem


def fetch_dataset_early(
    uri: str, sha256: str | None, work_dir: Path | None, suffix: str, authorization: str | None = None
) -> Callable[[], tuple[Path, str]]:
    """:func:`fetch_dataset` as a call to make later; a local holdout's hashing starts now, in a thread.

    Hashing a local file is a pass over it that nothing else needs; started before the models load (their
    reading, onnxruntime's import, the sessions' set-up) it costs the evaluation nothing up to that
    long. The call returns or raises what :func:`fetch_dataset` would, so the holdout is still verified
    before it is scored and a model's problem is still reported before the holdout's. A remote holdout is
    downloaded by the call, as before (a download in flight would outlive a model's error in ``work_dir``).
    If a model fails, the thread (reading, never writing) is left to end with the file; nobody waits for it.
    """
    try:
        local = source_for(uri, authorization).local is not None
    except SourceError:
        local = False  # fetch_dataset names the problem when called
    if not local:
        return lambda: fetch_dataset(uri, sha256, work_dir, suffix, authorization)
    outcome: list[tuple[Path, str] | BadInput] = []

    def digest() -> None:
        try:
            outcome.append(fetch_dataset(uri, sha256, work_dir, suffix, authorization))
        except BadInput as e:
            outcome.append(e)

    thread = threading.Thread(target=digest, name="holdout-digest", daemon=True)
    thread.start()

    def result() -> tuple[Path, str]:
        thread.join()
        if not outcome:  # the thread died of something other than bad input: say so here, as a bug
            raise RuntimeError(f"hashing the dataset {uri} failed (see the log)")
        done = outcome[0]
        if isinstance(done, BadInput):
            raise done
        return done

    return result
