"""Content-addressed revisions: a stable hash of the part of the spec that changes what the pods run.

In the hash: the model (uri, sha256, format, referenceProfile; name and version too, because the server
reports them in `mlrollout_model_info` and on /v2/models), the serving image (the operator's default is
resolved first, so upgrading that default rolls out like any other image change), resources and serving
settings. Not in the hash: `replicas` (scaling must never redeploy: both tracks are scaled in place),
the policy references and overrides, `paused`, `traffic` (routing, not pods) and metadata.

The hash is sha256 over canonical JSON (sorted keys, no whitespace, defaults filled in by the models), so
it does not depend on how the user spelled the YAML, and it is the same in every operator process.

A ``models:/`` URI is hashed as the spec writes it: the registry's answer (`Resolved`: the file, its
digest, the version and run) is recorded in the revision once, when the rollout starts, and never looked up
again for that revision, so an alias that moves later or a registry that changes cannot redeploy anything
behind the user's back, and `undo` brings back the very bytes that ran.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pydantic import Field

from mlrollout.api.common import ApiModel
from mlrollout.api.modeldeployment import (
    Credentials,
    ModelDeploymentSpec,
    ModelSource,
    Registry,
    Resources,
    RevisionStatus,
    Serving,
    shared_credentials,
)
from mlrollout.api.uris import is_registry

HASH_LENGTH: Final = 16
DIGEST_VERSION_LENGTH: Final = 12


@dataclass(frozen=True)
class Resolved:
    """What a registry said a models:/ URI is, pinned in the revision."""

    uri: str  # the model file the pods read
    sha256: str  # its digest, taken at resolution (or checked against spec.model.sha256)
    version: str  # the registry version (an alias resolved to its number)
    run_id: str | None = None


class RevisionTemplate(ApiModel):
    """The pod-affecting spec of one revision; stored in status so `undo` can redeploy it."""

    model: ModelSource = Field(description="The model.")
    image: str = Field(description="Resolved serving image.")
    resources: Resources | None = Field(default=None, description="Pod resources.")
    serving: Serving = Field(description="Model-server settings.")

    def to_json(self) -> str:
        """Canonical JSON: the hash input and the stored form."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RevisionTemplate:
        """Parse the stored form back."""
        return cls.model_validate_json(text)


def reading_credentials(revisions: Iterable[RevisionStatus]) -> Credentials | None:
    """The credentials one pod reads these revisions' models with (the evaluation Job: stable and
    candidate, and its holdout): theirs, as their model servers use them. ValueError, naming the
    revisions, when they name different ones (:func:`~mlrollout.api.modeldeployment.shared_credentials`)."""
    return shared_credentials(
        (f"revision {rev.number}", RevisionTemplate.from_json(rev.template).model.credentials if rev.template else None)
        for rev in revisions
    )


def registry_of(rev: RevisionStatus) -> Registry | None:
    """The MLflow tracking server a revision's model file is read from, with its credentials: a models:/
    revision's (resolved), else None."""
    if not rev.resolved_uri or not rev.template:
        return None
    return RevisionTemplate.from_json(rev.template).model.registry


def reading_registry(revisions: Iterable[RevisionStatus]) -> Registry | None:
    """The tracking server (and credentials) one pod reads these revisions' models:/ files from (the
    evaluation Job), as their model servers do: the one that names credentials, else the first. ValueError,
    naming the revisions, when two name different credentials or addresses with credentials: a pod has one
    ``--registry-uri`` and one set of ``MLFLOW_TRACKING_*``, so one file would be read with the other's."""
    found = [(f"revision {rev.number}", r) for rev in revisions if (r := registry_of(rev)) is not None]
    with_credentials = [(who, r) for who, r in found if r.credentials is not None]
    for who, r in with_credentials[1:]:
        first, theirs = with_credentials[0]
        if r != theirs:
            raise ValueError(
                f"{first} and {who} read MLflow registries with different credentials ({_registry_said(theirs)} vs "
                f"{_registry_said(r)}); one pod can hold only one set: give both revisions the same registry "
                "and credentials"
            )
    chosen = with_credentials or found
    return chosen[0][1] if chosen else None


def _registry_said(r: Registry) -> str:
    secret = f", secretRef {r.credentials.secret_ref.name}" if r.credentials is not None else ""
    return f"{r.uri}{secret}"


def template_of(spec: ModelDeploymentSpec, default_image: str) -> RevisionTemplate:
    """The pod-affecting part of a spec, with the default image resolved."""
    return RevisionTemplate(
        model=spec.model,
        image=spec.image or default_image,
        resources=spec.resources,
        serving=spec.serving,
    )


def revision_hash(template: RevisionTemplate) -> str:
    """First HASH_LENGTH hex digits of sha256 over the canonical JSON."""
    return hashlib.sha256(template.to_json().encode()).hexdigest()[:HASH_LENGTH]


def needs_resolution(spec: ModelDeploymentSpec) -> bool:
    """The spec's model is a registered model: the operator must ask the registry before deploying it."""
    return is_registry(spec.model.uri)


def spec_hash(spec: ModelDeploymentSpec, default_image: str) -> str:
    """The revision hash of the spec (no registry look-up needed)."""
    return revision_hash(template_of(spec, default_image))


def revision_of(spec: ModelDeploymentSpec, default_image: str, resolved: Resolved | None = None) -> RevisionStatus:
    """The revision the spec asks for; `number` is 1 until the state machine assigns the real one.

    A models:/ spec needs ``resolved``; without it (not resolved yet) the revision has an empty digest and
    the state machine deploys nothing from it (`Facts.unresolved` says why)."""
    template = template_of(spec, default_image)
    model = spec.model
    sha256 = resolved.sha256 if resolved is not None else (model.sha256 or "")
    version = model.version or (resolved.version if resolved is not None else None) or sha256[:DIGEST_VERSION_LENGTH]
    return RevisionStatus(
        revision=revision_hash(template),
        number=1,
        model_version=version or "unresolved",
        model_uri=model.uri,
        sha256=sha256,
        resolved_uri=resolved.uri if resolved is not None else None,
        run_id=resolved.run_id if resolved is not None else None,
        origin="spec",
        template=template.to_json(),
    )
