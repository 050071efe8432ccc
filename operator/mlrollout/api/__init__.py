"""The mlrollout.io/v1alpha1 API: pydantic models that are the source of truth for the CRDs."""

from mlrollout.api.common import API_VERSION, GROUP, VERSION, LabelSelector, PolicySelector, parse_duration
from mlrollout.api.fallbackpolicy import FallbackAction, FallbackPolicy, FallbackPolicySpec
from mlrollout.api.modeldeployment import (
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    StrategyOverride,
)
from mlrollout.api.rolloutpolicy import (
    CanaryStep,
    PauseStep,
    RolloutPolicy,
    RolloutPolicySpec,
    ShadowStep,
    Step,
    Strategy,
)

KINDS = {"ModelDeployment": ModelDeployment, "RolloutPolicy": RolloutPolicy, "FallbackPolicy": FallbackPolicy}

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "CanaryStep",
    "FallbackAction",
    "FallbackPolicy",
    "FallbackPolicySpec",
    "LabelSelector",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "PauseStep",
    "PolicySelector",
    "RolloutPolicy",
    "RolloutPolicySpec",
    "ShadowStep",
    "Step",
    "Strategy",
    "StrategyOverride",
    "parse_duration",
]
