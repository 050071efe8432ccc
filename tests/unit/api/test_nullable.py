"""Explicit nulls that mean something (null is a choice, not an absence) survive the CRD and `to_dict`.

`errorRate.maxRate: null` disables the error-rate SLO, while an absent maxRate means the default 0.05. The
API server prunes nulls from fields that are not `nullable`, and `to_dict` used to drop every null, so in
both places the choice turned back into the default.
"""

from __future__ import annotations

from typing import Any

import yaml

from mlrollout.api import crdgen
from mlrollout.api.common import null_is_meaningful
from mlrollout.api.rolloutpolicy import ErrorRateMetric, LatencyMetric, RolloutPolicy, RolloutPolicySpec


def _nullable_paths(schema: dict[str, Any], path: str = "") -> set[str]:
    found = {path} if schema.get("nullable") else set()
    for name, sub in (schema.get("properties") or {}).items():
        found |= _nullable_paths(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found |= _nullable_paths(schema["items"], f"{path}[]")
    return found


def test_only_fields_whose_null_differs_from_their_default_are_nullable() -> None:
    paths = set()
    for kind in crdgen.KIND_INFO:
        doc = yaml.safe_load(crdgen.render(kind))
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        paths |= {f"{kind}{p}" for p in _nullable_paths(schema)}
    assert paths == {"RolloutPolicy.spec.analysis.metrics.errorRate.maxRate"}
    assert null_is_meaningful(ErrorRateMetric.model_fields["max_rate"])
    assert not null_is_meaningful(LatencyMetric.model_fields["max_seconds"])  # null and absent: no SLO


def test_to_dict_keeps_a_meaningful_null_and_drops_the_others() -> None:
    spec = RolloutPolicySpec.model_validate({"analysis": {"metrics": {"errorRate": {"maxRate": None}}}})
    assert spec.analysis.metrics.error_rate.max_rate is None
    data = spec.to_dict()
    error_rate = data["analysis"]["metrics"]["errorRate"]
    assert "maxRate" in error_rate and error_rate["maxRate"] is None
    assert "maxSeconds" not in data["analysis"]["metrics"]["latency"]  # unset, null means the same
    assert "custom" not in data["analysis"]["metrics"]
    again = RolloutPolicySpec.model_validate(data)
    assert again.analysis.metrics.error_rate.max_rate is None and again == spec


def test_absent_max_rate_is_the_default_and_round_trips() -> None:
    spec = RolloutPolicySpec.model_validate({})
    assert spec.to_dict()["analysis"]["metrics"]["errorRate"]["maxRate"] == 0.05
    policy = RolloutPolicy.model_validate(
        {
            "apiVersion": "mlrollout.io/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "p"},
            "spec": {"analysis": {"metrics": {"errorRate": {"maxRate": None}}}},
        }
    )
    assert policy.to_dict()["spec"]["analysis"]["metrics"]["errorRate"]["maxRate"] is None
