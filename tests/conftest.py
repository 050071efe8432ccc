"""Shared fixtures for every test tier."""

from __future__ import annotations

import pytest
from tests.support import models


# Real ONNX models built from scikit-learn's bundled datasets (tests/support/models.py), once per session.
@pytest.fixture(scope="session")
def wine_model() -> models.BuiltModel:
    return models.wine()


@pytest.fixture(scope="session")
def wine_worse_model() -> models.BuiltModel:
    return models.wine_worse()


@pytest.fixture(scope="session")
def diabetes_model() -> models.BuiltModel:
    return models.diabetes()


@pytest.fixture(scope="session")
def breast_cancer_model() -> models.BuiltModel:
    return models.breast_cancer()


@pytest.fixture(scope="session")
def digits_model() -> models.BuiltModel:
    return models.digits()
