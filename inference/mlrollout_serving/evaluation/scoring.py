"""Run one model on holdout chunks and hand over what a metric needs: class labels, probabilities or values.

The model must take the holdout's features as its one input (rows x features, any numeric dtype); which
outputs mean what is the model server's rule (:func:`mlrollout_serving.server.signature.output_roles`):
integer or string column outputs are class labels, a classifier's float ``[N, C]`` output its class
probabilities (columns in class order 0..C-1), a regressor's float output its values.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from mlrollout_serving.contract.evaluation import CLASSIFICATION_METRICS
from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.server.loading import LoadedModel
from mlrollout_serving.server.signature import TensorSpec, output_roles

NEEDS: dict[str, str] = {
    "accuracy": "label",
    "balancedAccuracy": "label",
    "logLoss": "probabilities",
    "rocAuc": "probabilities",
    "mae": "value",
    "rmse": "value",
}


class Output(NamedTuple):
    """What one model said about one chunk: labels (classifiers), probabilities, or values (regressors)."""

    labels: npt.NDArray[Any] | None = None
    probabilities: npt.NDArray[np.float32] | None = None
    values: npt.NDArray[np.float32] | None = None


class Scorer:
    """One loaded model, checked once against the holdout's columns and the metric's needs."""

    def __init__(self, role: str, model: LoadedModel, metric: str, features: int) -> None:
        self.role = role
        self.session = model.session
        sig = model.signature
        if len(sig.inputs) != 1:
            names = ", ".join(t.name for t in sig.inputs)
            raise BadInput(f"{role} model has {len(sig.inputs)} inputs ({names}); evaluation needs one input of rows")
        self.signature = sig
        self.input: TensorSpec = sig.inputs[0]
        _check_input(role, self.input, features)
        roles = output_roles(sig, "classification" if metric in CLASSIFICATION_METRICS else "regression")
        by_role: dict[str, str] = {}
        for name, r in roles.items():
            by_role.setdefault(r, name)
        need = NEEDS[metric]
        self.label_output = by_role.get("label")
        self.probability_output = by_role.get("probabilities")
        value = by_role.get("value")
        spec = sig.output(value) if value else None
        # a regression output is one value per row: [N] or [N, 1]
        self.value_output = value if spec is not None and (len(spec.shape) == 1 or spec.shape[1:] == (1,)) else None
        if need == "label" and self.label_output is None and self.probability_output is None:
            raise BadInput(f"{role} model has no class label or probability output; {metric} needs one")
        if need == "probabilities" and self.probability_output is None:
            raise BadInput(f"{role} model has no class probability output (float [N, classes]); {metric} needs one")
        if need == "value" and self.value_output is None:
            raise BadInput(f"{role} model has no regression output (float [N] or [N, 1]); {metric} needs one")
        self.need = need
        self.wanted = [n for n in (self.label_output, self.probability_output, self.value_output) if n is not None]

    @property
    def label_kind(self) -> str:
        """``i`` when the model predicts integer classes, ``U`` for text classes (what labels are read as)."""
        spec = self.signature.output(self.label_output) if self.label_output else None
        return "U" if spec is not None and spec.dtype.kind == "O" else "i"

    def run(self, features: npt.NDArray[Any]) -> Output:
        """The model's outputs for ``features`` (float64 from the holdout, or already in the input's dtype)."""
        x = features.astype(self.input.dtype, copy=False)
        try:
            results = self.session.run(self.wanted, {self.input.name: x})
        except Exception as e:  # onnxruntime raises its own exception types
            raise BadInput(f"{self.role} model refused the holdout's rows: {str(e).splitlines()[0]}") from None
        out = dict(zip(self.wanted, results, strict=True))
        labels = out.get(self.label_output) if self.label_output else None
        probabilities = out.get(self.probability_output) if self.probability_output else None
        values = out.get(self.value_output) if self.value_output else None
        if labels is None and probabilities is not None and self.need == "label":
            labels = np.argmax(probabilities, axis=1)
        return Output(
            labels=None if labels is None else np.asarray(labels).reshape(-1),
            probabilities=None if probabilities is None else np.asarray(probabilities, dtype=np.float32),
            values=None if values is None else np.asarray(values, dtype=np.float32).reshape(-1),
        )


def _check_input(role: str, spec: TensorSpec, features: int) -> None:
    if spec.dtype.kind not in "fiu":
        raise BadInput(f"{role} model's input {spec.name!r} is {spec.datatype}; evaluation reads numeric features")
    if len(spec.shape) != 2:
        raise BadInput(
            f"{role} model's input {spec.name!r} has shape {spec.oip_shape}; evaluation needs [rows, features]"
        )
    width = spec.shape[1]
    if width is not None and width != features:
        raise BadInput(
            f"{role} model's input {spec.name!r} takes {width} features, the dataset has {features} feature columns"
        )


def check_features(
    features: npt.NDArray[np.float64], names: tuple[str, ...], scorers: tuple[Scorer, ...], first_row: int
) -> None:
    """Non-finite features are refused (the model server refuses them too); integer inputs need whole numbers."""
    finite = np.isfinite(features)
    if not finite.all():
        row, col = (int(v) for v in np.argwhere(~finite)[0])
        raise BadInput(f"row {first_row + row}, column {names[col]!r}: {features[row, col]} is not a finite number")
    for scorer in scorers:
        if scorer.input.dtype.kind in "iu" and not np.array_equal(features, np.round(features)):
            row, col = (int(v) for v in np.argwhere(features != np.round(features))[0])
            raise BadInput(
                f"row {first_row + row}, column {names[col]!r}: {features[row, col]} is not a whole number "
                f"({scorer.role} model's input is {scorer.input.datatype})"
            )
