"""Shared fixtures for every test tier."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from tests.support import models

# CI explores the same examples every run, so a landing never depends on luck; developers' runs stay
# random (and keep failures in .hypothesis/) so new counterexamples are still found.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


# Real ONNX models built from scikit-learn's bundled datasets (tests/support/models.py), once per session.
@pytest.fixture(scope="session")
def wine_model() -> models.BuiltModel:
    return models.wine()


@pytest.fixture(scope="session")
def wine_worse_model() -> models.BuiltModel:
    return models.wine_worse()


@pytest.fixture(scope="session")
def wine_plausible_model() -> models.BuiltModel:
    return models.wine_plausible()


@pytest.fixture(scope="session")
def diabetes_model() -> models.BuiltModel:
    return models.diabetes()


@pytest.fixture(scope="session")
def diabetes_worse_model() -> models.BuiltModel:
    return models.diabetes_worse()


@pytest.fixture(scope="session")
def breast_cancer_model() -> models.BuiltModel:
    return models.breast_cancer()


@pytest.fixture(scope="session")
def digits_model() -> models.BuiltModel:
    return models.digits()
