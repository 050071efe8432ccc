"""The API server and `mlrollout validate` agree, input by input, on whole families of edge cases.

The invalid-manifest table (test_controlplane.py) shows each rule refuses its case on its field; here the
server's CEL rules and patterns (RE2, Kubernetes' CEL library) are held to the offline rules (pydantic's
regex engine, Python) on every input of a family: custom queries, fallback chains, model URIs. Each
family goes to the server as one List in a server-side dry run, so nothing is stored.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from tests.cluster.kube import Kubectl
from tests.support.invalid_manifests import (
    ACCEPTED_URIS,
    FALLBACK_LINKS,
    REFUSED_URIS,
    custom_queries,
    fallback_chains,
    fallback_policy,
    rollout_policy,
    with_model,
)

from mlrollout.validate import validate_document

pytestmark = pytest.mark.cluster

Family = list[tuple[str, dict[str, Any]]]  # (what, document)


def named(docs: Family, prefix: str, namespace: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """The documents under unique names (`prefix-N`), namespaced ones placed in `namespace`."""
    out = {}
    for i, (what, doc) in enumerate(docs):
        doc = copy.deepcopy(doc)
        doc["metadata"] = {"name": f"{prefix}-{i}"}
        if doc["kind"] == "ModelDeployment":
            doc["metadata"]["namespace"] = namespace
        out[doc["metadata"]["name"]] = (what, doc)
    return out


def server_accepts(kubectl: Kubectl, docs: dict[str, tuple[str, dict[str, Any]]]) -> set[str]:
    """Names of the documents a server-side dry run creates; kubectl goes on after each refusal."""
    # JSON, not YAML: kubectl reads YAML 1.1, where an output named `y` would be the boolean true
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": [doc for _, doc in docs.values()]})
    proc = kubectl("create", "--dry-run=server", "-o", "name", "-f", "-", input=body, check=False, timeout=600)
    created = {line.rsplit("/", 1)[-1] for line in proc.stdout.split()}
    refused = set(re.findall(r"\"([a-z]+-[0-9]+)\" is invalid", proc.stderr))
    # every document is accounted for: created, or refused as invalid (not some other failure)
    assert created | refused == set(docs) and not created & refused, proc.stderr[-4000:]
    return created


def offline_accepts(docs: dict[str, tuple[str, dict[str, Any]]]) -> set[str]:
    return {name for name, (_, doc) in docs.items() if validate_document(doc)[1] is not None}


def assert_agree(kubectl: Kubectl, namespace: str, prefix: str, family: Family) -> None:
    docs = named(family, prefix, namespace)
    server, offline = server_accepts(kubectl, docs), offline_accepts(docs)
    assert 0 < len(offline) < len(docs), "a family needs inputs of both kinds"
    disagree = {docs[n][0]: ("server" if n in server else "offline") for n in server ^ offline}
    assert disagree == {}, f"accepted by only one side: {disagree}"


def family(items: list[Any], make: Callable[[Any], dict[str, Any]], what: Callable[[Any], str] = repr) -> Family:
    return [(what(item), make(item)) for item in items]


def test_custom_queries(kubectl: Kubectl, dry_run_namespace: str) -> None:
    def policy(query: str) -> dict[str, Any]:
        return rollout_policy(analysis={"metrics": {"custom": [{"name": "q", "query": query, "max": 1}]}})

    assert_agree(kubectl, dry_run_namespace, "query", family(custom_queries(), policy))


def test_fallback_chains(kubectl: Kubectl, dry_run_namespace: str) -> None:
    def policy(chain: tuple[str, ...]) -> dict[str, Any]:
        return fallback_policy(chain=[FALLBACK_LINKS[link] for link in chain])

    assert_agree(kubectl, dry_run_namespace, "chain", family(fallback_chains(), policy, "-".join))


def test_review_settings(kubectl: Kubectl, dry_run_namespace: str) -> None:
    """Every combination of respond (or none), its answer, a high-stakes marker and the low-confidence action."""
    lows = (None, {"action": "review"}, {"action": "stable"})
    responds = (None, "model", "default", "refuse")  # None: unset (the CRD has no default for it)
    combos = list(itertools.product(responds, (False, True), (False, True), (False, True), lows))

    def policy(combo: tuple[Any, ...]) -> dict[str, Any]:
        respond, response, message, high, low = combo
        review: dict[str, Any] = {"url": "http://reviews.ops.svc:8080/in"}
        review |= {"respond": respond} if respond else {}
        review |= {"response": FALLBACK_LINKS["default"]["response"]} if response else {}
        review |= {"message": "a person decides"} if message else {}
        review |= {"highStakes": {"header": "x-high-stakes"}} if high else {}
        spec: dict[str, Any] = {"review": review, "confidenceThreshold": 0.6}
        return fallback_policy(**spec, **({"lowConfidenceAction": low} if low else {}))

    assert_agree(kubectl, dry_run_namespace, "review", family(combos, policy))


def test_margins_per_metric(kubectl: Kubectl, dry_run_namespace: str) -> None:
    """A margin's absolute part above 1 is refused for rates and fractions only, by both sides alike."""
    holdout = {"uri": "http://store/holdout.csv", "sha256": "a" * 64, "label": "quality"}
    evaluated = ("accuracy", "balancedAccuracy", "rocAuc", "logLoss", "mae", "rmse")
    places = ["errorRate", "latency", "quality accuracy", "quality mae"] + [f"evaluate {m}" for m in evaluated]

    def policy(combo: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        place, margin = combo
        if place in ("errorRate", "latency"):
            return rollout_policy(significance={"margins": {place: margin}})
        if place.startswith("quality"):
            quality = {"enabled": True, "margin": margin}
            quality |= {"metric": "mae", "errorBound": 10} if place.endswith("mae") else {}
            return rollout_policy(analysis={"metrics": {"quality": quality}})
        evaluate = {"dataset": holdout, "metric": place.split()[1], "margin": margin}
        return rollout_policy(strategy={"steps": [{"evaluate": evaluate}]})

    margins = [{"absolute": a} for a in (0.5, 1, 1.0001, 250)] + [{"relative": 0.1, "floor": f} for f in (1, 3)]
    combos = list(itertools.product(places, margins))
    docs = family(combos, policy, lambda c: f"{c[0]} {json.dumps(c[1])}")
    assert_agree(kubectl, dry_run_namespace, "margin", docs)


def test_model_uris(kubectl: Kubectl, dry_run_namespace: str) -> None:
    uris = ACCEPTED_URIS + REFUSED_URIS
    docs = family(uris, lambda uri: with_model(uri=uri), lambda uri: f"uri {uri!r}")
    docs += family(uris, lambda uri: with_model(referenceProfile=uri), lambda uri: f"referenceProfile {uri!r}")
    assert_agree(kubectl, dry_run_namespace, "uri", docs)
