"""Get a model file onto local disk, once for every source: streamed, bounded, retried, hashed, reported.

- **Streamed to disk**: chunks go from the source to a temporary file in ``--download-dir`` and into
  sha256 as they arrive, so a model never needs its size in memory before onnxruntime loads it (and never
  twice). A ``file://`` model is hashed where it lies, not copied.
- **Bounded**: the model's limit (``--download-max-bytes``), checked against the declared size before the
  first byte and against the bytes written; the pod's limit, the free space of the download directory
  (an emptyDir with a sizeLimit), checked the same way, and a full disk is a clear error, not a traceback.
- **Retried**: a transient failure (store down, timeout, 5xx, a reset mid-body) is retried with
  exponential back-off up to ``--download-retries`` attempts; a final one (missing object, denied,
  refused credentials) is not. Each attempt has ``--download-timeout`` per connection and per read.
- **Reported**: a progress line in the log at most every ``PROGRESS_SECONDS`` and the same words through
  ``on_progress``, which the server shows as the reason of its 503 on ``/v2/health/ready``. The lines are
  a wire format (``contract.startup``): the operator reads them back from the pod's log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, NamedTuple

from mlrollout_serving.contract import startup
from mlrollout_serving.server.sources import Opened, Source, SourceError, source_for

log = logging.getLogger(__name__)

CHUNK: Final = 1 << 20
PROGRESS_SECONDS: Final = 5.0
MAX_BACKOFF: Final = 10.0


class DownloadError(Exception):
    """The model file cannot be had; the message is the one line for the log and the pod's status."""


class Fetched(NamedTuple):
    """A model file on local disk and its sha256; ``temporary`` files are the caller's to remove."""

    path: Path
    sha256: str
    size: int
    temporary: bool

    def discard(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def backoff(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: 0.5, 1, 2, 4, ... at most MAX_BACKOFF."""
    return float(min(0.5 * 2 ** (attempt - 1), MAX_BACKOFF))


def fetch(
    uri: str,
    *,
    timeout: float,
    max_bytes: int,
    attempts: int,
    directory: Path | None,
    on_progress: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
    authorization: str | None = None,
) -> Fetched:
    """The model at ``uri`` on local disk with its digest, or DownloadError with the reason.
    ``authorization``: the header an http(s) source sends (a registry's credentials; the caller decides
    that ``uri`` is on that registry). ``directory`` None: the caller reads local files only (a local one is
    never copied), and a remote ``uri`` is refused."""
    try:
        source = source_for(uri, authorization)
    except SourceError as e:
        raise DownloadError(str(e)) from None
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            return _attempt(source, timeout, max_bytes, directory, on_progress)
        except SourceError as e:
            last = str(e)
            if not e.transient:
                raise DownloadError(last if uri in last else f"cannot download model from {uri}: {last}") from None
        if attempt < attempts:
            delay = backoff(attempt)
            text = startup.retrying(uri, delay, last)
            log.warning("%s (retry %d/%d)", text, attempt, attempts - 1)
            on_progress(text)
            sleep(delay)
    raise DownloadError(f"cannot download model from {uri} after {attempts} attempts: {last}")


def _attempt(
    source: Source, timeout: float, max_bytes: int, directory: Path | None, on_progress: Callable[[str], None]
) -> Fetched:
    opened = source.open(timeout)
    try:
        _check_size(source.uri, opened.size, max_bytes, None if source.local else directory)
        if source.local is not None:
            digest, size = _copy(source.uri, opened, None, max_bytes, on_progress)
            return Fetched(source.local, digest, size, temporary=False)
        if directory is None:
            raise SourceError(f"no download directory for {source.uri}", transient=False)
        import tempfile  # only a download needs it: the evaluation Job reading local files does not import it

        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="model-", suffix=".part", dir=directory)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest, size = _copy(source.uri, opened, out, max_bytes, on_progress)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Fetched(path, digest, size, temporary=True)
    finally:
        opened.stream.close()


def _check_size(uri: str, declared: int | None, max_bytes: int, directory: Path | None) -> None:
    if declared is None:
        return
    if declared > max_bytes:
        raise SourceError(
            f"model at {uri} is {declared} bytes, more than the limit of {max_bytes} (--download-max-bytes)",
            transient=False,
        )
    if directory is not None:
        free = _free_bytes(directory)
        if free is not None and declared > free:
            raise SourceError(
                f"model at {uri} is {declared} bytes, more than the {free} bytes free in {directory} "
                "(the pod's download volume)",
                transient=False,
            )


def _free_bytes(directory: Path) -> int | None:
    import shutil  # with tempfile: only a download needs it

    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _copy(
    uri: str, opened: Opened, out: object | None, max_bytes: int, on_progress: Callable[[str], None]
) -> tuple[str, int]:
    """Read the stream to its end into sha256 (and ``out``); the size limit holds whatever was declared."""
    digest = hashlib.sha256()
    total = 0
    started = last_report = time.monotonic()
    write = getattr(out, "write", None)
    while chunk := opened.stream.read(CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise SourceError(
                f"model at {uri} is larger than the limit of {max_bytes} bytes (--download-max-bytes)",
                transient=False,
            )
        digest.update(chunk)
        if write is not None:
            try:
                write(chunk)
            except OSError as e:
                raise SourceError(
                    f"cannot write model {uri} to disk after {total - len(chunk)} bytes: {e.strerror or e} "
                    "(the pod's download volume is too small?)",
                    transient=False,
                ) from None
        now = time.monotonic()
        if now - last_report >= PROGRESS_SECONDS:
            last_report = now
            log.info("%s", startup.downloading(uri, total, opened.size, rate=total / max(now - started, 1e-9)))
            on_progress(startup.downloading(uri, total, opened.size))
    if opened.size is not None and total != opened.size:
        raise SourceError(f"model at {uri}: got {total} of {opened.size} bytes (connection cut)", transient=True)
    elapsed = time.monotonic() - started
    if write is not None:
        log.info("%s", startup.downloaded(uri, total, elapsed))
    return digest.hexdigest(), total
