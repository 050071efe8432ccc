"""Building reference profiles from training data, and reading them from where the model server finds them.

The format itself (docs/metrics.md, "Reference profile") is the contract's
(:mod:`mlrollout_serving.contract.profile`). Bins are defined by interior edges: ``k-1`` increasing edges
make ``k`` bins and ``x`` falls in bin ``searchsorted(edges, x, side="right")``.

``cli_main`` implements ``mlrollout profile --output FILE [--model M.onnx] TRAINING.csv|.npy``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mlrollout_serving.contract.profile import FeatureProfile, PredictionProfile, Profile, ProfileError, dumps, loads

DEFAULT_BINS = 10
FloatArray = npt.NDArray[np.float64]


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
