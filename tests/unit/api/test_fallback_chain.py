"""A FallbackPolicy's chain is accepted by the API exactly when the gateway accepts the operator's table."""

from __future__ import annotations

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
    assert len(CHAINS) == 258 and 20 < sum(verdicts) < len(CHAINS) - 20


def test_api_and_gateway_agree_on_every_chain() -> None:
    disagree = [chain for chain in CHAINS if api_accepts(chain) != gateway_accepts(chain)]
    assert disagree == []


def test_low_confidence_action_needs_a_threshold_like_the_gateway() -> None:
    with pytest.raises(ValidationError, match="lowConfidenceAction needs a confidenceThreshold"):
        FallbackPolicySpec.model_validate({"lowConfidenceAction": {"action": "refuse"}})
    spec = FallbackPolicySpec.model_validate({"confidenceThreshold": 0.6, "lowConfidenceAction": {"action": "refuse"}})
    assert spec.low_confidence_action is not None
