"""Reference profiles: what the training data (and the model's predictions on it) looked like.

The format is documented in docs/metrics.md ("Reference profile"). Bins are defined by interior edges:
``k-1`` increasing edges make ``k`` bins and ``x`` falls in bin ``searchsorted(edges, x, side="right")``.
The model server bins live inputs on these edges; the analysis compares live bin counts with the
training proportions.

``cli_main`` implements ``mlrollout profile --output FILE [--model M.onnx] TRAINING.csv|.npy``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FORMAT_VERSION = 1
DEFAULT_BINS = 10
FloatArray = npt.NDArray[np.float64]


class ProfileError(ValueError):
    """A profile document or training file that cannot be used."""


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    edges: tuple[float, ...]
    proportions: tuple[float, ...]


@dataclass(frozen=True)
class PredictionProfile:
    kind: Literal["classification", "regression"]
    proportions: tuple[float, ...]
    classes: tuple[str, ...] = ()
    edges: tuple[float, ...] = ()


@dataclass(frozen=True)
class Profile:
    features: tuple[FeatureProfile, ...]
    predictions: PredictionProfile | None = None
    version: int = FORMAT_VERSION


# --- binning (pure) ------------------------------------------------------------------------------------


def bin_index(edges: Sequence[float], values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Bin of each value: ``searchsorted(edges, x, side="right")``, 0..len(edges)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), "right")


def quantile_edges(values: npt.ArrayLike, bins: int = DEFAULT_BINS) -> tuple[float, ...]:
    """Interior edges at the quantiles ``1/bins .. (bins-1)/bins``, duplicates and the minimum removed.

    Removing an edge equal to the minimum keeps the first bin from being empty for discrete features.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or bins < 2:
        return ()
    qs = np.unique(np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    return tuple(float(q) for q in qs if q > v.min())


def proportions(edges: Sequence[float], values: npt.ArrayLike) -> tuple[float, ...]:
    """Share of ``values`` in each of the ``len(edges)+1`` bins."""
    v = np.asarray(values, dtype=np.float64)
    counts = np.bincount(bin_index(edges, v), minlength=len(edges) + 1).astype(np.float64)
    total = counts.sum()
    return tuple(float(c) for c in (counts / total if total else counts))


def build(
    features: npt.ArrayLike,
    names: Sequence[str] | None = None,
    predictions: PredictionProfile | None = None,
    bins: int = DEFAULT_BINS,
) -> Profile:
    """Profile of a 2-D training matrix (rows x features)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ProfileError(f"training data must be a non-empty 2-D table, got shape {list(x.shape)}")
    names = list(names) if names is not None else [f"f{i}" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise ProfileError(f"{len(names)} feature names for {x.shape[1]} columns")
    feats = []
    for i, name in enumerate(names):
        edges = quantile_edges(x[:, i], bins)
        feats.append(FeatureProfile(name, edges, proportions(edges, x[:, i])))
    return Profile(tuple(feats), predictions)


def classification_predictions(labels: Sequence[str]) -> PredictionProfile:
    """Prediction profile of predicted class labels (as strings)."""
    classes = sorted(set(labels), key=_class_sort_key)
    counts = [sum(1 for v in labels if v == c) for c in classes]
    total = sum(counts) or 1
    return PredictionProfile("classification", tuple(c / total for c in counts), classes=tuple(classes))


def regression_predictions(values: npt.ArrayLike, bins: int = DEFAULT_BINS) -> PredictionProfile:
    edges = quantile_edges(values, bins)
    return PredictionProfile("regression", proportions(edges, values), edges=edges)


def _class_sort_key(c: str) -> tuple[int, float, str]:
    try:
        return (0, float(c), c)
    except ValueError:
        return (1, 0.0, c)


# --- JSON ----------------------------------------------------------------------------------------------


def to_dict(profile: Profile) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": profile.version,
        "features": [
            {"name": f.name, "edges": list(f.edges), "proportions": list(f.proportions)} for f in profile.features
        ],
    }
    p = profile.predictions
    if p is not None:
        if p.kind == "classification":
            doc["predictions"] = {"kind": p.kind, "classes": list(p.classes), "proportions": list(p.proportions)}
        else:
            doc["predictions"] = {"kind": p.kind, "edges": list(p.edges), "proportions": list(p.proportions)}
    return doc


def _floats(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise ProfileError(f"{what} must be a list of finite numbers")
    return tuple(float(v) for v in value)


def _check_bins(edges: tuple[float, ...], props: tuple[float, ...], what: str) -> None:
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ProfileError(f"{what}: edges must be strictly increasing")
    if len(props) != len(edges) + 1:
        raise ProfileError(f"{what}: {len(edges)} edges need {len(edges) + 1} proportions, got {len(props)}")
    _check_proportions(props, what)


def _check_proportions(props: tuple[float, ...], what: str) -> None:
    if any(p < 0 for p in props) or not math.isclose(sum(props), 1.0, abs_tol=1e-6):
        raise ProfileError(f"{what}: proportions must be >= 0 and sum to 1")


def from_dict(doc: Any) -> Profile:
    """Validate and read a profile document."""
    if not isinstance(doc, dict):
        raise ProfileError("a profile must be a JSON object")
    if doc.get("version") != FORMAT_VERSION:
        raise ProfileError(f"unsupported profile version {doc.get('version')!r} (expected {FORMAT_VERSION})")
    raw_features = doc.get("features")
    if not isinstance(raw_features, list):
        raise ProfileError("'features' must be a list")
    feats = []
    for i, f in enumerate(raw_features):
        if not isinstance(f, dict):
            raise ProfileError(f"features[{i}] must be an object")
        name = f.get("name", f"f{i}")
        if not isinstance(name, str):
            raise ProfileError(f"features[{i}].name must be a string")
        edges = _floats(f.get("edges"), f"feature {name!r} edges")
        props = _floats(f.get("proportions"), f"feature {name!r} proportions")
        _check_bins(edges, props, f"feature {name!r}")
        feats.append(FeatureProfile(name, edges, props))
    return Profile(tuple(feats), _predictions_from_dict(doc.get("predictions")))


def _predictions_from_dict(p: Any) -> PredictionProfile | None:
    if p is None:
        return None
    if not isinstance(p, dict):
        raise ProfileError("'predictions' must be an object")
    props = _floats(p.get("proportions"), "predictions proportions")
    if p.get("kind") == "classification":
        classes = p.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ProfileError("predictions.classes must be a list of strings")
        if len(classes) != len(props):
            raise ProfileError("predictions: one proportion per class is needed")
        _check_proportions(props, "predictions")
        return PredictionProfile("classification", props, classes=tuple(classes))
    if p.get("kind") == "regression":
        edges = _floats(p.get("edges"), "predictions edges")
        _check_bins(edges, props, "predictions")
        return PredictionProfile("regression", props, edges=edges)
    raise ProfileError("predictions.kind must be 'classification' or 'regression'")


def dumps(profile: Profile) -> str:
    return json.dumps(to_dict(profile), indent=2) + "\n"


def loads(text: str | bytes) -> Profile:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ProfileError(f"profile is not valid JSON: {e}") from None
    return from_dict(doc)


def read(location: str, timeout: float = 30.0, max_bytes: int = 64 << 20) -> Profile:
    """Read a profile from a path, ``file://`` or ``http(s)://`` URI."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme in ("http", "https"):
        with urllib.request.urlopen(location, timeout=timeout) as resp:
            data: bytes = resp.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ProfileError(f"profile at {location} is larger than {max_bytes} bytes")
        return loads(data)
    path = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else location
    return loads(Path(path).read_bytes())


def write(profile: Profile, path: Path) -> None:
    path.write_text(dumps(profile))


# --- training data and the command ---------------------------------------------------------------------


def load_training_data(path: Path) -> tuple[FloatArray, list[str] | None]:
    """Rows x features from ``.npy`` or CSV (a header row is used for feature names when present)."""
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
        if x.ndim == 1:
            x = x[:, None]
        return np.asarray(x, dtype=np.float64), None
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        raise ProfileError(f"{path} has no rows")
    names: list[str] | None = None
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        names, rows = [c.strip() for c in rows[0]], rows[1:]
    try:
        return np.array([[float(v) for v in r] for r in rows], dtype=np.float64), names
    except ValueError as e:
        raise ProfileError(f"{path}: non-numeric value ({e})") from None


def predictions_for(model_path: Path, x: FloatArray, bins: int = DEFAULT_BINS) -> PredictionProfile:
    """Run the model on the training rows and profile its predictions."""
    import onnxruntime as ort

    from mlrollout_serving.server.signature import from_session, output_roles

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    sig = from_session(session)
    inp = sig.inputs[0]
    outputs = session.run(None, {inp.name: x.astype(inp.dtype)})
    roles = output_roles(sig)
    by_role = {roles[o.name]: arr for o, arr in zip(sig.outputs, outputs, strict=True)}
    if "label" in by_role:
        labels = [str(v) for v in np.asarray(by_role["label"]).ravel()]
        prof = classification_predictions(labels)
        probs = by_role.get("probabilities")
        if probs is not None and set(prof.classes) <= {str(i) for i in range(probs.shape[1])}:
            classes = [str(i) for i in range(probs.shape[1])]  # include classes never predicted
            total = len(labels)
            props = tuple(labels.count(c) / total for c in classes)
            prof = PredictionProfile("classification", props, classes=tuple(classes))
        return prof
    if "value" in by_role:
        return regression_predictions(np.asarray(by_role["value"]).ravel(), bins)
    raise ProfileError(f"{model_path}: cannot tell class labels or regression values among its outputs")


def cli_main(argv: list[str]) -> int:
    """``mlrollout profile --output FILE [--model M.onnx] [--bins N] TRAINING.csv|.npy``."""
    parser = argparse.ArgumentParser(
        prog="mlrollout profile", description="Build a reference profile from training data."
    )
    parser.add_argument("training", type=Path, help="training features: .csv (optional header) or .npy")
    parser.add_argument("--output", "-o", type=Path, required=True, help="where to write the JSON profile")
    parser.add_argument("--model", type=Path, help="ONNX model; adds the profile of its predictions")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="bins per feature (quantiles)")
    args = parser.parse_args(argv)
    try:
        x, names = load_training_data(args.training)
        preds = predictions_for(args.model, x, args.bins) if args.model else None
        profile = build(x, names, preds, args.bins)
        write(profile, args.output)
    except (OSError, ProfileError) as e:
        print(f"mlrollout profile: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {len(profile.features)} features, {x.shape[0]} rows", file=sys.stderr)
    return 0
