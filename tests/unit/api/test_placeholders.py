"""The custom-query placeholder rule: one definition for the API (pydantic and CEL) and the renderer."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.invalid_manifests import QUERY_PIECES

from mlrollout.analysis.queries import QueryError, render_custom
from mlrollout.api import crdgen
from mlrollout.api.placeholders import (
    ANY_PLACEHOLDER,
    PLACEHOLDER,
    PLACEHOLDERS,
    QUERY_RULES,
    UNBALANCED_BRACES,
    UNKNOWN_PLACEHOLDER,
    query_problem,
)


def render(query: str) -> str:
    return render_custom(query, namespace="ns", model_deployment="md", track="stable", revision="r1", window_seconds=30)


def reference_problem(query: str) -> str | None:
    """The rule as a reader states it: every {{...}} names a placeholder, and once each is replaced by a
    brace-free value no {{ or }} is left."""
    written = re.findall(ANY_PLACEHOLDER, query)
    if any(not re.fullmatch(PLACEHOLDER, p) for p in written):
        return UNKNOWN_PLACEHOLDER
    filled = re.sub(ANY_PLACEHOLDER, "x", query)
    return UNBALANCED_BRACES if "{{" in filled or "}}" in filled else None


@given(st.lists(st.sampled_from(QUERY_PIECES), max_size=8).map("".join))
def test_the_counting_rule_is_the_rule_as_stated(query: str) -> None:
    """The CEL rules can only count matches; counting refuses exactly what the stated rule refuses."""
    got, expected = query_problem(query), reference_problem(query)
    assert (got is None) == (expected is None), query
    if got is not None and expected is not None:
        assert got.startswith(expected), (query, got)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('up{ns="{{namespace}}",md="{{ modelDeployment }}"}[{{window}}]', None),
        ('rate(x{track="{{track}}",revision="{{revision}}"}[5m])', None),
        ('sum(x{a="b"}) / {{{namespace}}}', None),  # a lone brace beside a placeholder is PromQL's
        ('up{ns="{{bogus}}"}', UNKNOWN_PLACEHOLDER),
        ('up{ns="{{Namespace}}"}', UNKNOWN_PLACEHOLDER),
        ('up{ns="{{namespace}"}', UNBALANCED_BRACES),
        ('up{ns="namespace}}"}', UNBALANCED_BRACES),
        ("{{{{namespace}}}}", UNBALANCED_BRACES),
    ],
)
def test_queries(query: str, problem: str | None) -> None:
    got = query_problem(query)
    assert got == problem or (got is not None and problem is not None and got.startswith(problem)), got


def test_the_renderer_refuses_what_the_api_refuses_with_the_same_words() -> None:
    for query in ('up{ns="{{bogus}}"}', 'up{ns="{{namespace}"}'):
        problem = query_problem(query)
        assert problem is not None
        with pytest.raises(QueryError) as caught:
            render(query)
        assert str(caught.value) == problem


def test_every_placeholder_is_filled() -> None:
    query = " ".join("{{" + name + "}}" for name in PLACEHOLDERS)
    assert render(query) == "ns md stable r1 30s"


def test_the_crd_carries_the_same_rules_on_the_query_field() -> None:
    schema = crdgen.crd("RolloutPolicy")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    metrics = schema["properties"]["spec"]["properties"]["analysis"]["properties"]["metrics"]
    query = metrics["properties"]["custom"]["items"]["properties"]["query"]
    assert query["x-kubernetes-validations"] == list(QUERY_RULES)
    assert query["maxLength"] == 2048  # bounds the cost the API server estimates for findAll
