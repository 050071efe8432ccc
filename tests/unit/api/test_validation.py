"""The offline validator: examples pass, every case of the shared invalid table is refused on its field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.support.invalid_manifests import CASES, Case

from mlrollout.validate import main, validate_documents

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.server for c in CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_manifest_is_refused_on_its_field(case: Case) -> None:
    problems = validate_documents([("case.yaml", i, d) for i, d in enumerate(case.documents(), 1)])
    matching = [p for p in problems if p.path.startswith(case.path) and case.message in p.message]
    assert matching, f"expected a problem at {case.path} saying {case.message!r}; got {[str(p) for p in problems]}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates(path: Path) -> None:
    assert main([str(path)]) == 0


def test_examples_cover_the_documented_scenarios() -> None:
    kinds = [d.get("kind") for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d]
    assert len(EXAMPLES) >= 5
    assert {"ModelDeployment", "RolloutPolicy", "FallbackPolicy"} <= set(kinds)


def test_cli_prints_field_path_and_exits_non_zero(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    docs = [c.manifest for c in CASES if c.id in ("sha256-short", "weights-decreasing")]
    broken.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [sys.executable, "-m", "mlrollout.cli", "validate", str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "spec.model.sha256: must be 64 lowercase hex characters" in result.stderr
    assert "spec.strategy: canary weights must be strictly increasing" in result.stderr
    assert "document 2 (RolloutPolicy bad)" in result.stderr


def test_cli_reports_unreadable_yaml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert main([str(broken)]) == 1


def test_other_apis_are_left_alone_but_wrong_versions_of_ours_are_not() -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    ours_wrong = {**CASES[0].manifest, "apiVersion": "mlrollout.io/v1beta1"}
    unknown_kind = {**CASES[0].manifest, "kind": "ModelRollout"}
    problems = validate_documents([("f", 1, namespace), ("f", 2, ours_wrong), ("f", 3, unknown_kind)])
    assert [p.path for p in problems] == ["apiVersion", "kind"]


def test_cluster_scoped_kinds_refuse_a_namespace() -> None:
    doc = {"apiVersion": "mlrollout.io/v1alpha1", "kind": "RolloutPolicy", "metadata": {"name": "p", "namespace": "x"}}
    problems = validate_documents([("f", 1, doc)])
    assert [p.path for p in problems] == ["metadata.namespace"]
