"""Building blocks shared by the three kinds: the base model, durations, selectors, conditions.

The pydantic models are the single source of truth: `mlrollout.api.crdgen` turns them into the CRDs, so
every field carries a description (it becomes `kubectl explain` text) and every cross-field rule exists
twice, as a Python validator (offline: `mlrollout validate`) and as a CEL rule attached with `cel()` (the
API server), with the same message so both layers report the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

GROUP: Final = "mlrollout.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    Field(description="A duration such as 30s, 5m, 1h30m or 250ms (Go duration syntax, no sign)."),
]
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SHA256_PATTERN: Final = r"^[a-f0-9]{64}$"
QUANTITY_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=32)]
Name = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]


def clip(limit: int) -> Callable[[Any], Any]:
    """A validator that shortens text to ``limit`` characters, ending in an ellipsis when it cut.

    For what the operator writes into status: a long reason must never make the status write fail.
    """

    def clipped(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return value[: limit - 1] + "…"
        return value

    return clipped


# Text the operator writes for people, clipped to the length the CRD allows (spec fields are refused instead).
Word = Annotated[str, BeforeValidator(clip(32)), StringConstraints(max_length=32)]
Label = Annotated[str, BeforeValidator(clip(128)), StringConstraints(max_length=128)]
Line = Annotated[str, BeforeValidator(clip(300)), StringConstraints(max_length=300)]
Message = Annotated[str, BeforeValidator(clip(1024)), StringConstraints(max_length=1024)]
LongMessage = Annotated[str, BeforeValidator(clip(4096)), StringConstraints(max_length=4096)]


def parse_duration(text: str) -> float:
    """Seconds in a duration string; raises ValueError on anything the CRD pattern would refuse."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use forms like 30s, 5m, 1h30m or 250ms")
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text))


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `field_path` points the server's error at a child field."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """json_schema_extra carrying CEL rules for a model, read by the CRD generator."""
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused (like kubectl --validate)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        validate_assignment=True,  # the state machine assigns status fields: clipped and checked like the rest
    )

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, unset optional fields omitted, but an explicit
        null kept where null means something else than the default (e.g. `errorRate.maxRate: null`, no SLO;
        the CRD marks those fields `nullable`, see `null_is_meaningful`)."""
        pruned: dict[str, Any] = _prune_nulls(self, self.model_dump(by_alias=True, mode="json"))
        return pruned


def null_is_meaningful(field: FieldInfo) -> bool:
    """A field that accepts null and whose default is not null: null there is a choice, not an absence."""
    accepts_null = field.annotation is None or type(None) in get_args(field.annotation)
    has_default = field.default_factory is not None or field.default not in (None, PydanticUndefined)
    return accepts_null and has_default


def _prune_nulls(value: Any, dumped: Any) -> Any:
    """Drop the nulls of `dumped` (the full dump of `value`) that only mean "unset"."""
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        for name, field in type(value).model_fields.items():
            key = field.alias or name
            if key not in dumped:
                continue
            if dumped[key] is None:
                if not null_is_meaningful(field):
                    del dumped[key]
            else:
                dumped[key] = _prune_nulls(getattr(value, name), dumped[key])
    elif isinstance(value, list | tuple) and isinstance(dumped, list):
        return [_prune_nulls(v, d) for v, d in zip(value, dumped, strict=True)]
    elif isinstance(value, dict) and isinstance(dumped, dict):
        return {k: _prune_nulls(value.get(k), d) for k, d in dumped.items()}
    return dumped


class LabelSelectorRequirement(ApiModel):
    """A set-based label requirement, as in Kubernetes' LabelSelector."""

    key: str = Field(description="The label key the requirement applies to.", max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="How the key relates to the values.")
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None,
        max_length=64,
        description="Values for In and NotIn; must be empty for Exists and DoesNotExist.",
    )


class LabelSelector(ApiModel):
    """Kubernetes' label selector: all matchLabels and all matchExpressions must hold; empty matches all."""

    match_labels: dict[str, str] | None = Field(
        default=None, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Set-based requirements that must all hold."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes semantics of a label selector applied to one object's labels."""
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions or []:
            present = req.key in labels
            values = req.values or []
            if req.operator == "In" and not (present and labels[req.key] in values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class PolicySelector(ApiModel):
    """Which ModelDeployments a cluster-scoped policy applies to when they do not name a policy."""

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Labels of the namespaces whose ModelDeployments this policy governs."
    )
    model_selector: LabelSelector | None = Field(
        default=None, description="Labels of the ModelDeployments this policy governs."
    )

    def matches(self, namespace_labels: dict[str, str], model_labels: dict[str, str]) -> bool:
        """Both parts must match; an absent part matches everything."""
        ns_ok = self.namespace_selector is None or self.namespace_selector.matches(namespace_labels)
        md_ok = self.model_selector is None or self.model_selector.matches(model_labels)
        return ns_ok and md_ok


class PolicyRef(ApiModel):
    """A reference to a cluster-scoped policy by name."""

    name: Name = Field(description="Name of the cluster-scoped policy.")


class Condition(ApiModel):
    """A standard Kubernetes condition (Available, Progressing, Degraded)."""

    type: str = Field(description="Condition type: Available, Progressing or Degraded.", max_length=64)
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: Label = Field(default="", description="One CamelCase word for machines.")
    message: LongMessage = Field(default="", description="A sentence for humans.")
    last_transition_time: str | None = Field(default=None, description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed from."
    )


class PolicyStatus(ApiModel):
    """Status of a cluster-scoped policy: whether the operator has read and accepted it."""

    observed_generation: int | None = Field(default=None, description="The metadata.generation the operator last read.")
    conditions: list[Condition] | None = Field(
        default=None, max_length=8, description="Standard conditions (Accepted)."
    )
