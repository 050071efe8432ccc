"""Real ONNX models built from scikit-learn's bundled datasets, cached on disk.

Tests across the project (server, gateway, analysis) need real models, not mocks. Building them takes a
few seconds, so each model is built once per cache directory and reused; the cache key includes the
library versions and a recipe version, so a changed recipe or library never serves a stale file.

Builds are deterministic in behaviour (fixed ``random_state``; the file bytes may differ between builds
because skl2onnx names nodes uniquely, so always use ``BuiltModel.sha256``) and safe when several pytest
processes build the same model at once: each writes a private temporary file and atomically renames it
into place.

Classifiers are converted with ``zipmap=False`` so their outputs are plain tensors: ``label`` (int64,
shape ``[N]``) and ``probabilities`` (float32, ``[N, classes]``). Regressors output ``variable``
(float32, ``[N, 1]``). Every model has one float32 input named ``input`` with a dynamic batch dimension.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

RECIPE_VERSION = 1
INPUT_NAME = "input"
DEFAULT_CACHE = "/tmp/mlrollout-test-models"
SAMPLE_ROWS = 64

Kind = Literal["classifier", "regressor"]


@dataclass(frozen=True)
class BuiltModel:
    """A model file on disk plus what a test needs to drive and check it."""

    name: str
    path: Path
    sha256: str
    kind: Kind
    n_features: int
    samples: npt.NDArray[np.float32]
    """Held-out rows (float32, shape ``[SAMPLE_ROWS or fewer, n_features]``) to send in requests."""
    train: npt.NDArray[np.float32]
    """The rows the model was trained on (float32), e.g. to build a reference profile."""
    input_name: str
    output_names: tuple[str, ...]
    classes: tuple[int, ...]
    """Class labels for classifiers (empty for regressors)."""
    sample_targets: npt.NDArray[Any]
    """The true target of each of ``samples`` (class labels, or values for regressors): labels to send back."""
    holdout: npt.NDArray[np.float32]
    """Every held-out row (``samples`` are the first of them): a labelled holdout for offline evaluation."""
    holdout_targets: npt.NDArray[Any]

    @property
    def uri(self) -> str:
        """The ``file://`` URI the server's ``--model-uri`` takes."""
        return self.path.as_uri()


def cache_dir() -> Path:
    """Directory of cached models: ``$MLROLLOUT_TEST_CACHE`` or ``/tmp/mlrollout-test-models``."""
    path = Path(os.environ.get("MLROLLOUT_TEST_CACHE", DEFAULT_CACHE))
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_key() -> str:
    import onnx
    import skl2onnx
    import sklearn

    return f"r{RECIPE_VERSION}-sk{sklearn.__version__}-s2o{skl2onnx.__version__}-onnx{onnx.__version__}"


def _split(
    x: npt.NDArray[Any], y: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any], npt.NDArray[np.float32], npt.NDArray[Any]]:
    """Deterministic split: every 5th row is held out (request samples, the evaluation holdout)."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    held = np.arange(len(x32)) % 5 == 0
    return x32[~held], y[~held], x32[held], y[held]


def _to_onnx(estimator: Any, n_features: int, classifier: bool) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options: dict[Any, Any] | None = None
    if classifier:
        last = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        options = {id(last): {"zipmap": False}}
    onx = convert_sklearn(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    data: bytes = onx.SerializeToString()
    return data


def _build(
    name: str,
    kind: Kind,
    load: Callable[[], tuple[npt.NDArray[Any], npt.NDArray[Any]]],
    make: Callable[[], Any],
    shuffle_labels: bool = False,
) -> BuiltModel:
    x, y = load()
    train_x, train_y, held_x, held_y = _split(x, y)
    if shuffle_labels:
        train_y = np.random.RandomState(7).permutation(train_y)
    path = cache_dir() / f"{name}-{_cache_key()}.onnx"
    if not path.exists():
        estimator = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning etc. must not fail warning-strict tests
            estimator.fit(train_x, train_y)
            data = _to_onnx(estimator, train_x.shape[1], kind == "classifier")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    classes = tuple(int(c) for c in np.unique(y)) if kind == "classifier" else ()
    outputs = ("label", "probabilities") if kind == "classifier" else ("variable",)
    return BuiltModel(
        name=name,
        path=path,
        sha256=sha256_file(path),
        kind=kind,
        n_features=int(train_x.shape[1]),
        samples=held_x[:SAMPLE_ROWS],
        train=train_x,
        input_name=INPUT_NAME,
        output_names=outputs,
        classes=classes,
        sample_targets=held_y[:SAMPLE_ROWS],
        holdout=held_x,
        holdout_targets=held_y,
    )


def _dataset(loader_name: str) -> Callable[[], tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    def load() -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        from sklearn import datasets

        x, y = getattr(datasets, loader_name)(return_X_y=True)
        return np.asarray(x), np.asarray(y)

    return load


def wine() -> BuiltModel:
    """Logistic regression (standardised inputs) on wine: 13 features, 3 classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _build(
        "wine-logreg",
        "classifier",
        _dataset("load_wine"),
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)),
    )


def wine_worse() -> BuiltModel:
    """Same signature as :func:`wine` but trained on shuffled labels: a deliberately bad candidate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _build(
        "wine-logreg-worse",
        "classifier",
        _dataset("load_wine"),
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)),
        shuffle_labels=True,
    )


def wine_plausible() -> BuiltModel:
    """Same signature as :func:`wine`, trained on its two most telling features only: about 90 % accurate
    where :func:`wine` is right on every held-out row, with the same class mix. A candidate that answers
    fast, never errs and predicts the usual classes while being wrong more often: only labels catch it."""
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _build(
        "wine-logreg-two-features",
        "classifier",
        _dataset("load_wine"),
        lambda: make_pipeline(StandardScaler(), SelectKBest(f_classif, k=2), LogisticRegression(max_iter=1000)),
    )


def diabetes() -> BuiltModel:
    """Gradient-boosting regressor on diabetes: 10 features, one continuous output."""
    from sklearn.ensemble import GradientBoostingRegressor

    return _build(
        "diabetes-gbr",
        "regressor",
        _dataset("load_diabetes"),
        lambda: GradientBoostingRegressor(n_estimators=60, max_depth=3, random_state=0),
    )


def diabetes_worse() -> BuiltModel:
    """Same signature as :func:`diabetes`, a linear fit trained on shuffled targets: predictions near the
    mean target (the usual range), never an error, and a clearly higher MAE. Only labels catch it."""
    from sklearn.linear_model import LinearRegression

    return _build(
        "diabetes-linear-worse", "regressor", _dataset("load_diabetes"), LinearRegression, shuffle_labels=True
    )


def breast_cancer() -> BuiltModel:
    """Random forest on breast cancer: 30 features, 2 classes."""
    from sklearn.ensemble import RandomForestClassifier

    return _build(
        "breast-cancer-rf",
        "classifier",
        _dataset("load_breast_cancer"),
        lambda: RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0),
    )


def digits() -> BuiltModel:
    """MLP on digits: 64 features, 10 classes; the model for large-batch requests."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _build(
        "digits-mlp",
        "classifier",
        _dataset("load_digits"),
        lambda: make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0)),
    )


def _synthetic() -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """10 000 generated rows (no download), two classes 69/31: holdouts of 2 000 rows decide offline comparisons."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=10_000, n_features=10, n_informative=5, n_redundant=2, weights=[0.7], flip_y=0.03,
        class_sep=0.8, random_state=3,
    )  # fmt: skip
    return np.asarray(x), np.asarray(y)


def synthetic_linear() -> BuiltModel:
    """Logistic regression on the synthetic task: about 78 % accurate on its 2 000 held-out rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _build("synthetic-logreg", "classifier", _synthetic,
                  lambda: make_pipeline(StandardScaler(), LogisticRegression(C=1.0)))  # fmt: skip


def synthetic_linear_twin() -> BuiltModel:
    """The same model with stronger regularisation: it disagrees with :func:`synthetic_linear` on about 11
    held-out rows of 2 000, an equivalent candidate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _build("synthetic-logreg-c005", "classifier", _synthetic,
                  lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.05)))  # fmt: skip


def synthetic_forest() -> BuiltModel:
    """A random forest on the synthetic task: about 90 % accurate, clearly better than the linear model."""
    from sklearn.ensemble import RandomForestClassifier

    return _build("synthetic-forest", "classifier", _synthetic,
                  lambda: RandomForestClassifier(n_estimators=40, max_depth=10, random_state=0))  # fmt: skip


def synthetic_shuffled() -> BuiltModel:
    """Trained on shuffled labels with balanced class weights: it guesses, about 63 % accurate where always
    predicting the majority class is 69 %: a model that loses to the trivial baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _build("synthetic-shuffled", "classifier", _synthetic,
                  lambda: make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced")),
                  shuffle_labels=True)  # fmt: skip


ALL: dict[str, Callable[[], BuiltModel]] = {
    "wine": wine,
    "wine_worse": wine_worse,
    "diabetes": diabetes,
    "breast_cancer": breast_cancer,
    "digits": digits,
}


def padded(model: BuiltModel, extra_bytes: int) -> Path:
    """``model`` with an unused float32 initializer of about ``extra_bytes``: a real ONNX file as large as
    a test needs (downloads slow enough to report progress), answering exactly as ``model`` does
    (onnxruntime drops the unused initializer). Cached beside the model."""
    import onnx

    path = model.path.with_name(f"{model.path.stem}-padded-{extra_bytes}.onnx")
    if not path.exists():
        proto = onnx.load(str(model.path))
        pad = np.random.default_rng(0).standard_normal(extra_bytes // 4).astype(np.float32)
        proto.graph.initializer.append(onnx.numpy_helper.from_array(pad, name="mlrollout_test_padding"))
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
        os.close(fd)
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    return path
