"""The reference profile: what the training data (and the model's predictions on it) looked like.

The format is documented in docs/metrics.md ("Reference profile"). Bins are defined by interior edges:
``k-1`` increasing edges make ``k`` bins and ``x`` falls in bin ``searchsorted(edges, x, side="right")``.
The model server bins live inputs on these edges; the analysis compares live bin counts with the training
proportions. Building a profile from training data is the data plane's job (``mlrollout_serving.profile``).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "FORMAT_VERSION",
    "FeatureProfile",
    "PredictionProfile",
    "Profile",
    "ProfileError",
    "dumps",
    "from_dict",
    "loads",
    "to_dict",
]

FORMAT_VERSION = 1


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
