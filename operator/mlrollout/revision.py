"""Content-addressed revisions: a stable hash of the part of the spec that changes what the pods run.

In the hash: the model (uri, sha256, format, referenceProfile; name and version too, because the server
reports them in `mlrollout_model_info` and on /v2/models), the serving image (the operator's default is
resolved first, so upgrading that default rolls out like any other image change), resources and serving
settings. Not in the hash: `replicas` (scaling must never redeploy: both tracks are scaled in place),
the policy references and overrides, `paused`, `traffic` (routing, not pods) and metadata.

The hash is sha256 over canonical JSON (sorted keys, no whitespace, defaults filled in by the models), so
it does not depend on how the user spelled the YAML, and it is the same in every operator process.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

from pydantic import Field

from mlrollout.api.common import ApiModel
from mlrollout.api.modeldeployment import ModelDeploymentSpec, ModelSource, Resources, RevisionStatus, Serving

HASH_LENGTH: Final = 16


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


def revision_of(spec: ModelDeploymentSpec, default_image: str) -> RevisionStatus:
    """The revision the spec asks for; `number` is 1 until the state machine assigns the real one."""
    template = template_of(spec, default_image)
    return RevisionStatus(
        revision=revision_hash(template),
        number=1,
        model_version=spec.model.version,
        model_uri=spec.model.uri,
        sha256=spec.model.sha256,
        origin="spec",
        template=template.to_json(),
    )
