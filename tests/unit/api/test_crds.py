"""The committed CRDs are exactly what the models generate, and carry what kubectl users rely on."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mlrollout.api import crdgen
from mlrollout.api.modeldeployment import SHA256_PATTERN
from mlrollout.api.uris import MODEL_URI_PATTERN, URI_PATTERN


@pytest.mark.parametrize("kind", list(crdgen.KIND_INFO))
def test_committed_crds_match_the_models(kind: str) -> None:
    for directory in crdgen.OUTPUT_DIRS:
        committed = (directory / crdgen.filename(kind)).read_text()
        assert committed == crdgen.render(kind), f"{directory.name}/{crdgen.filename(kind)} is stale: run `make crds`"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    return out


@pytest.mark.parametrize("kind", list(crdgen.KIND_INFO))
def test_schema_is_structural_and_documented(kind: str) -> None:
    doc = yaml.safe_load(crdgen.render(kind))
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        scalar_item = path.endswith("[]") and node.get("type") != "object"
        if path and path != ".metadata" and not scalar_item:
            assert node.get("description"), f"{kind}{path} has no description (kubectl explain shows it)"


def test_names_scopes_columns_and_subresources() -> None:
    expected = {"ModelDeployment": ("md", "Namespaced"), "RolloutPolicy": ("rp", "Cluster"),
                "FallbackPolicy": ("fp", "Cluster")}  # fmt: skip
    for kind, (short, scope) in expected.items():
        spec = crdgen.crd(kind)["spec"]
        assert spec["group"] == "mlrollout.io" and spec["scope"] == scope
        assert spec["names"]["shortNames"] == [short] and spec["names"]["categories"] == ["mlrollout"]
        version = spec["versions"][0]
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in crdgen.crd("ModelDeployment")["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Phase", "Stable", "Candidate", "Split", "Age"]


def test_cel_rules_are_present_where_pydantic_has_cross_field_checks() -> None:
    text = crdgen.render("RolloutPolicy") + crdgen.render("FallbackPolicy") + crdgen.render("ModelDeployment")
    for message in (
        "canary weights must be strictly increasing",
        "each step must set exactly one of shadow, canary, pause, blueGreen",
        "a margin sets exactly one of absolute, relative",
        "action backup needs backup",
        "sticky sets exactly one of header, jsonField",
        "custom metric names must be unique",
        "min must not be above max",
        "fallback chain repeats an action",
        "fallback action refuse always answers, so it must be last",
        "lowConfidenceAction needs a confidenceThreshold",
        "lowConfidenceAction review needs review settings",
        "review is set but nothing sends to it",
        "review.respond default needs review.defaultResponse",
        "fallback action review needs the model's answer",
    ):
        assert message in text
    model = crdgen.crd("ModelDeployment")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = model["properties"]["model"]["properties"]
    assert props["sha256"]["pattern"] == SHA256_PATTERN
    assert props["uri"]["pattern"] == MODEL_URI_PATTERN
    assert props["referenceProfile"]["pattern"] == URI_PATTERN
