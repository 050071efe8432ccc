"""Fetch a model, verify its sha256 *before* onnxruntime parses a byte of it, load and warm it up."""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlrollout_serving.server.signature import Signature, from_session

log = logging.getLogger(__name__)


class LoadError(Exception):
    """The model cannot be served; the message is the one log line an operator needs."""


class IntegrityError(LoadError):
    """The model's digest is not the expected one."""


@dataclass(frozen=True)
class LoadedModel:
    session: Any  # onnxruntime.InferenceSession
    signature: Signature
    sha256: str
    size: int


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise LoadError(f"model {path} is {size} bytes, more than the limit of {max_bytes}")
        return path.read_bytes()
    except OSError as e:
        raise LoadError(f"cannot read model {path}: {e.strerror or e}") from None


def _download(uri: str, timeout: float, max_bytes: int, attempts: int) -> bytes:
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(uri, timeout=timeout) as resp:
                declared = resp.headers.get("Content-Length")
                if declared is not None and int(declared) > max_bytes:
                    raise LoadError(f"model at {uri} is {declared} bytes, more than the limit of {max_bytes}")
                chunks: list[bytes] = []
                total = 0
                while chunk := resp.read(1 << 20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise LoadError(f"model at {uri} is larger than the limit of {max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if 400 <= e.code < 500 and e.code not in (408, 429):
                break  # retrying cannot help
        except (OSError, ValueError) as e:
            last = str(e)
        if attempt < attempts:
            delay = min(0.5 * 2 ** (attempt - 1), 5.0)
            log.warning("download of %s failed (%s); retry %d/%d in %.1fs", uri, last, attempt, attempts, delay)
            time.sleep(delay)
    raise LoadError(f"cannot download model from {uri}: {last}")


def fetch(uri: str, timeout: float, max_bytes: int, attempts: int) -> bytes:
    """The model file's bytes from ``file://``, ``http(s)://`` or a plain path."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        return _download(uri, timeout, max_bytes, attempts)
    if parsed.scheme == "file":
        return _read_file(Path(urllib.parse.unquote(parsed.path)), max_bytes)
    if parsed.scheme == "":
        return _read_file(Path(uri), max_bytes)
    raise LoadError(f"unsupported model URI scheme {parsed.scheme!r} in {uri} (use file://, http://, https://)")


def verify(data: bytes, expected: str | None, uri: str) -> str:
    """Return the sha256 of ``data``; raise IntegrityError when it is not ``expected``."""
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected:
        raise IntegrityError(
            f"model integrity check failed for {uri}: expected sha256 {expected}, actual sha256 {actual}"
        )
    return actual


def _zeros(sig: Signature, rows: int) -> dict[str, Any]:
    feed = {}
    for spec in sig.inputs:
        dims = [rows if i == 0 and d is None else (d if d is not None else 1) for i, d in enumerate(spec.shape)]
        feed[spec.name] = np.zeros(dims, dtype=spec.dtype) if spec.dtype.kind != "O" else np.full(dims, b"")
    return feed


def load(data: bytes, sha256: str, intra_op_threads: int, inter_op_threads: int, warm_rows: int) -> LoadedModel:
    """Create the onnxruntime session from verified bytes and run it once per warm-up batch size."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        sig = from_session(session)
        for rows in sorted({2, max(warm_rows, 2)} if sig.batchable else {1}):
            session.run(None, _zeros(sig, rows))
    except LoadError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types for invalid models
        raise LoadError(f"onnxruntime cannot load the model: {e}") from None
    return LoadedModel(session, sig, sha256, len(data))
