"""Verify a fetched model's sha256 *before* onnxruntime parses a byte of it, load it and warm it up.

Fetching is `download` (every source, streamed to disk); this module gets the file and its digest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mlrollout_serving.server.signature import Signature, from_session

log = logging.getLogger(__name__)


class LoadError(Exception):
    """The model cannot be served; the message is the one log line an operator needs."""


class IntegrityError(LoadError):
    """The model's digest is not the expected one."""


class LoadedModel(NamedTuple):
    """An onnxruntime session with the model's signature and file. A named tuple, not a dataclass: the
    evaluation Job imports it, and a dataclass's generated methods cost a short process's start-up about
    0.5 ms a class (docs/evaluation.md)."""

    session: Any  # onnxruntime.InferenceSession
    signature: Signature
    sha256: str
    size: int


def verify(actual: str, expected: str | None, uri: str) -> str:
    """Return ``actual`` (the file's sha256); raise IntegrityError when it is not ``expected``."""
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


def load(data: bytes | Path, sha256: str, intra_op_threads: int, inter_op_threads: int, warm_rows: int) -> LoadedModel:
    """Create the onnxruntime session from verified bytes or a verified file (read once, by onnxruntime
    itself: the model is in memory once) and run it once per warm-up batch size."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        model = str(data) if isinstance(data, Path) else data
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        sig = from_session(session)
        for rows in sorted({2, max(warm_rows, 2)} if sig.batchable else {1}):
            session.run(None, _zeros(sig, rows))
    except LoadError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types for invalid models
        raise LoadError(f"onnxruntime cannot load the model: {e}") from None
    size = data.stat().st_size if isinstance(data, Path) else len(data)
    return LoadedModel(session, sig, sha256, size)
