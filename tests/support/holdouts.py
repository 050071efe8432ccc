"""Labelled holdouts on disk for the offline evaluation: a model's held-out rows as CSV (or .npz)."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tests.support.models import BuiltModel

LABEL = "label"


def write_csv(
    path: Path,
    x: npt.NDArray[Any],
    y: Sequence[Any] | npt.NDArray[Any],
    label: str = LABEL,
    extra: dict[str, Sequence[str]] | None = None,
) -> Path:
    """Features ``f0..fN``, then the label column, then any ``extra`` columns (e.g. a slice)."""
    extra = extra or {}
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*(f"f{i}" for i in range(x.shape[1])), label, *extra])
        for i, row in enumerate(x):
            out.writerow([*(repr(float(v)) for v in row), y[i], *(column[i] for column in extra.values())])
    return path


def holdout_csv(path: Path, model: BuiltModel, extra: dict[str, Sequence[str]] | None = None) -> Path:
    """The model's held-out rows and their true targets."""
    return write_csv(path, model.holdout, list(model.holdout_targets), extra=extra)


def holdout_npz(path: Path, model: BuiltModel) -> Path:
    arrays: dict[str, Any] = {"X": model.holdout, LABEL: np.asarray(model.holdout_targets)}
    np.savez(path, **arrays)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
