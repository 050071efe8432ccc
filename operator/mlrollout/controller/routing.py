"""Facts about the routing when another provider than the built-in gateway routes: pure functions of the
objects the API returned (no I/O here).

Gateway API: the implementation says whether it serves our HTTPRoute in the route's ``status.parents``
entry for our Gateway (conditions ``Accepted`` and ``ResolvedRefs``), whether the Gateway itself is
``Programmed``, and what it can do in its GatewayClass' ``status.supportedFeatures``. The operator holds
every step while the route is not served and never writes a mirror the implementation cannot apply.
What only the built-in gateway does is listed per ModelDeployment (``not_applied``), so a FallbackPolicy
chosen by labels or a quality check that can get no labels is visible in status, not silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mlrollout.analysis.collect import SPLIT_UNCOUNTED
from mlrollout.controller.observe import one_line
from mlrollout.rollout.facts import Acceptance, MirrorSupport, Routing
from mlrollout.traffic.base import Capabilities

MIRROR: Final = "HTTPRouteRequestMirror"
PERCENTAGE_MIRROR: Final = "HTTPRouteRequestPercentageMirror"
GROUP: Final = "gateway.networking.k8s.io"


@dataclass(frozen=True)
class ParentRef:
    """The Gateway (and listener) our HTTPRoute attaches to."""

    name: str
    namespace: str
    section: str | None = None

    def __str__(self) -> str:
        return f"Gateway {self.namespace}/{self.name}" + (f" listener {self.section}" if self.section else "")


def _conditions(obj: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (obj or {}).get("conditions") or [] if isinstance(c, Mapping)}


def _said(cond: Mapping[str, Any]) -> str:
    text = f"{cond.get('type')}={cond.get('status')} ({cond.get('reason', '')})"
    message = str(cond.get("message") or "").strip()
    return f"{text}: {one_line(message, 160)}" if message else text


def _our_parent(route: Mapping[str, Any], parent: ParentRef) -> Mapping[str, Any] | None:
    """The status.parents entry for our Gateway (its namespace defaults to the route's)."""
    route_ns = (route.get("metadata") or {}).get("namespace")
    for entry in (route.get("status") or {}).get("parents") or []:
        ref = entry.get("parentRef") or {}
        if (
            ref.get("name") == parent.name
            and (ref.get("namespace") or route_ns) == parent.namespace
            and ref.get("kind", "Gateway") == "Gateway"
            and ref.get("group", GROUP) == GROUP
            and (parent.section is None or ref.get("sectionName") == parent.section)
        ):
            return entry  # type: ignore[no-any-return]
    return None


def acceptance(route: Mapping[str, Any] | None, gateway: Mapping[str, Any] | None,
               parent: ParentRef) -> tuple[Acceptance, str]:  # fmt: skip
    """Whether the implementation serves the route for our Gateway, and its words."""
    if gateway is None:
        return "False", f"{parent} does not exist"
    programmed = _conditions(gateway.get("status")).get("Programmed")
    if programmed is not None and programmed.get("status") == "False":
        return "False", f"{parent} is not programmed: {_said(programmed)}"
    if route is None:
        return "Unknown", "the HTTPRoute is not created yet"
    entry = _our_parent(route, parent)
    if entry is None:
        return "Unknown", f"no implementation has reported on the HTTPRoute for {parent} yet"
    conds = _conditions(entry)
    accepted, refs = conds.get("Accepted"), conds.get("ResolvedRefs")
    words = "; ".join(_said(c) for c in (accepted, refs) if c is not None)
    if (accepted is not None and accepted.get("status") == "False") or (
        refs is not None and refs.get("status") == "False"
    ):
        return "False", words
    if accepted is not None and accepted.get("status") == "True":
        return "True", words
    return "Unknown", words or f"the implementation has not said whether {parent} accepts the HTTPRoute"


def _feature_names(gateway_class: Mapping[str, Any] | None) -> set[str]:
    """The class' supportedFeatures: a list of {name: ...} (Gateway API v1.2 and later) or of names."""
    features = ((gateway_class or {}).get("status") or {}).get("supportedFeatures") or []
    return {str(f.get("name") if isinstance(f, Mapping) else f) for f in features}


def mirror_support(gateway_class: Mapping[str, Any] | None) -> MirrorSupport | None:
    """What the implementation can mirror, by its own word; None when its class lists no features."""
    names = _feature_names(gateway_class)
    if not names:
        return None
    if MIRROR not in names:
        return "none"
    return "percent" if PERCENTAGE_MIRROR in names else "full"


def not_applied(caps: Capabilities, provider: str, fallback: str | None, quality: bool, split: bool) -> tuple[str, ...]:
    """What this ModelDeployment gets from its policies that the provider cannot do.

    ``fallback`` names the FallbackPolicy chosen by labels (a referenced one is refused by the API); the
    built-in default has no chain and needs no note. ``quality`` and ``split`` are the rollout policy's
    quality and traffic-split checks.
    """
    notes: list[str] = []
    if fallback and not caps.fallback:
        notes.append(f"FallbackPolicy {fallback}: only the built-in gateway applies fallbacks ({provider} routes)")
    if quality and not caps.feedback:
        notes.append(
            "quality: labels reach the analysis only through the built-in gateway's feedback ids; with "
            f"{provider} the quality check gets none and stays inconclusive (no promotion)"
        )
    if split and not caps.gateway_series:
        notes.append(f"traffic-split check ({provider} routes): {SPLIT_UNCOUNTED}")
    return tuple(notes)


def gateway_api_routing(
    route: Mapping[str, Any] | None,
    gateway: Mapping[str, Any] | None,
    gateway_class: Mapping[str, Any] | None,
    parent: ParentRef,
    notes: Iterable[str] = (),
) -> Routing:
    """The Gateway API implementation's word on our route, and what it can mirror."""
    accepted, detail = acceptance(route, gateway, parent)
    mirror = mirror_support(gateway_class)
    if mirror is not None and mirror != "percent":
        name = ((gateway_class or {}).get("metadata") or {}).get("name", "?")
        can = "no RequestMirror" if mirror == "none" else "RequestMirror without a share"
        detail = f"{detail}; GatewayClass {name} supports {can}"
    return Routing("gatewayAPI", accepted, detail, mirror, tuple(notes))
