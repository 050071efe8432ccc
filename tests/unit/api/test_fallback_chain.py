"""A FallbackPolicy's chain is accepted by the API exactly when the gateway accepts the operator's table."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError
from tests.support.invalid_manifests import FALLBACK_LINKS, fallback_chains

from mlrollout.api import FallbackPolicySpec
from mlrollout.api.fallbackpolicy import FallbackAction
from mlrollout.policy import fallback_settings
from mlrollout_serving.contract.routes import BackupModel

CHAINS = fallback_chains()


def api_accepts(chain: tuple[str, ...]) -> bool:
    try:
        FallbackPolicySpec.model_validate({"chain": [FALLBACK_LINKS[name] for name in chain]})
    except ValidationError:
        return False
    return True


def gateway_accepts(chain: tuple[str, ...]) -> bool:
    """The operator's route-table settings for this chain (links checked one by one), as the gateway takes them."""
    links = [FallbackAction.model_validate(FALLBACK_LINKS[name]) for name in chain]
    backups = {link.backup: BackupModel(name=link.backup, upstream="http://gw:80") for link in links if link.backup}
    try:
        fallback_settings(FallbackPolicySpec.model_construct(chain=links), backups)
    except ValidationError:
        return False
    return True


def test_the_family_has_both_kinds() -> None:
    verdicts = [api_accepts(c) for c in CHAINS]
    assert len(CHAINS) == 399 and 20 < sum(verdicts) < len(CHAINS) - 20


def test_api_and_gateway_agree_on_every_chain() -> None:
    disagree = [chain for chain in CHAINS if api_accepts(chain) != gateway_accepts(chain)]
    assert disagree == []


def test_low_confidence_action_needs_a_threshold_like_the_gateway() -> None:
    with pytest.raises(ValidationError, match="lowConfidenceAction needs a confidenceThreshold"):
        FallbackPolicySpec.model_validate({"lowConfidenceAction": {"action": "refuse"}})
    spec = FallbackPolicySpec.model_validate({"confidenceThreshold": 0.6, "lowConfidenceAction": {"action": "refuse"}})
    assert spec.low_confidence_action is not None


REVIEW = {"url": "http://reviews.ops.svc:8080/in"}


def test_review_needs_a_trigger_and_settings_like_the_gateway() -> None:
    with pytest.raises(ValidationError, match="lowConfidenceAction review needs review settings"):
        FallbackPolicySpec.model_validate({"confidenceThreshold": 0.6, "lowConfidenceAction": {"action": "review"}})
    with pytest.raises(ValidationError, match="nothing sends to it"):
        FallbackPolicySpec.model_validate({"review": REVIEW})
    with pytest.raises(ValidationError, match=re.escape("review.respond default needs review.defaultResponse")):
        FallbackPolicySpec.model_validate({"review": {**REVIEW, "respond": "default", "highStakes": {"header": "x"}}})
    with pytest.raises(ValidationError, match=re.escape("review.message is only for respond refuse")):
        FallbackPolicySpec.model_validate({"review": {**REVIEW, "message": "m", "highStakes": {"header": "x"}}})


def test_review_becomes_the_route_tables_review() -> None:
    spec = FallbackPolicySpec.model_validate(
        {
            "confidenceThreshold": 0.7,
            "lowConfidenceAction": {"action": "review"},
            "review": {
                **REVIEW, "respond": "default", "response": {"outputs": [
                    {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]},
                "highStakes": {"jsonField": "parameters.high_stakes"}, "timeout": "750ms", "backoff": "1s",
                "retries": 4, "queueSize": 10, "concurrency": 3, "maxBodyBytes": 4096,
            },
        }
    )  # fmt: skip
    settings = fallback_settings(spec, {})
    review = settings.review
    assert settings.low_confidence_action is not None and settings.low_confidence_action.action == "review"
    assert review is not None and review.url == REVIEW["url"] and review.respond == "default"
    assert review.default_response == {"outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]}
    assert review.high_stakes is not None and review.high_stakes.json_field == "parameters.high_stakes"
    assert (review.timeout_seconds, review.backoff_seconds, review.retries) == (0.75, 1.0, 4)
    assert (review.queue_size, review.concurrency, review.max_body_bytes) == (10, 3, 4096)
    wire = settings.to_wire()["review"]
    assert wire["highStakes"] == {"jsonField": "parameters.high_stakes"} and wire["timeoutSeconds"] == 0.75


def test_no_review_leaves_the_route_table_without_one() -> None:
    assert fallback_settings(FallbackPolicySpec(), {}).review is None
