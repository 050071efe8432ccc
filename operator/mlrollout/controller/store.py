"""How a container reaches the model store: the one builder of a pod's store access (pure).

The model-server pods and the evaluation Job read the same URIs with the same credentials, so both take
their environment, volumes, mounts and identity from :func:`store_access` (built twice, they drifted: the
Job once lacked the gs:// key file and could not download what the servers served).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from mlrollout.api.modeldeployment import Credentials, Registry
from mlrollout.traffic.base import Manifest
from mlrollout_serving.contract.process import ServerEnv

PVC_MOUNT_ROOT: Final = "/mnt/models"
GCS_KEY_DIR: Final = "/var/run/secrets/mlrollout/model-store"
GCS_KEY: Final = "key.json"
GCS_KEY_VOLUME: Final = "model-store-key"
TMP_VOLUME: Final = "tmp"
TMP_SIZE: Final = "4Gi"


def locate(uri: str) -> str:
    """The URI the container reads: a pvc:// URI becomes the file under its claim's read-only mount."""
    if not uri.startswith("pvc://"):
        return uri
    parts = urlsplit(uri)
    return f"file://{claim_mount(parts.netloc)}/{parts.path.lstrip('/')}"


def claim_mount(claim: str) -> str:
    """Where a claim is mounted: one path per claim, so every URI on it reads the same mount."""
    return f"{PVC_MOUNT_ROOT}/{claim}"


@dataclass(frozen=True)
class StoreAccess:
    """What one container needs to read its models and data, ready to put into its pod."""

    env: tuple[Manifest, ...]
    env_from: tuple[Manifest, ...]
    volumes: tuple[Manifest, ...]
    mounts: tuple[Manifest, ...]
    service_account_name: str | None

    def give(self, container: Manifest) -> None:
        """Give a container this access (``env`` the caller puts after its own, so its own wins): envFrom
        of the credentials, the store's mounts and the emptyDir ``/tmp`` the downloads go to (the root
        filesystem is read-only)."""
        if self.env_from:
            container["envFrom"] = list(self.env_from)
        container["volumeMounts"] = [*self.mounts, {"name": TMP_VOLUME, "mountPath": "/tmp"}]

    def pod_volumes(self) -> list[Manifest]:
        """The pod's volumes behind :meth:`give`'s mounts."""
        return [*self.volumes, {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE}}]


def store_access(
    uris: Iterable[str | None], credentials: Credentials | None, registry: Registry | None = None
) -> StoreAccess:
    """The store access of a container reading `uris` (None entries skipped) with `credentials`.

    - each claim a pvc:// URI names: one read-only volume and mount (``claim-<n>``), however many URIs;
    - ``credentials.secretRef``: ``envFrom`` of the Secret (its keys are the store's standard variables,
      AWS_ACCESS_KEY_ID, ...; the caller's ``env`` wins over them, so a Secret cannot change what the
      container reads or how it reports); when a URI is gs://, its ``key.json`` also mounted and named by
      ``GOOGLE_APPLICATION_CREDENTIALS``, where google-auth looks. That volume is optional so that a
      missing Secret is reported by ``envFrom`` (CreateContainerConfigError, at once) rather than a mount
      that waits forever; a Secret without ``key.json`` makes the reader exit naming the missing file;
    - ``credentials.serviceAccountName``: the pod's ServiceAccount (web identity);
    - ``registry``: the tracking server a models:/ revision's file was resolved on: its address as
      ``ServerEnv.REGISTRY_URI`` (``env``, so a Secret cannot move it) and its credentials Secret (MLflow's
      ``MLFLOW_TRACKING_*``) as ``envFrom``; the reader (model server, ``mlrollout-evaluate``) sends them only
      to URLs under that address (``contract.process.registry_header``).
    """
    listed = [u for u in uris if u]
    claims = dict.fromkeys(urlsplit(u).netloc for u in listed if u.startswith("pvc://"))
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    for n, claim in enumerate(claims):
        volumes.append({"name": f"claim-{n}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": f"claim-{n}", "mountPath": claim_mount(claim), "readOnly": True})
    env: list[Manifest] = []
    env_from: list[Manifest] = []
    secret = credentials.secret_ref.name if credentials is not None and credentials.secret_ref else None
    if secret is not None:
        env_from.append({"secretRef": {"name": secret}})
        if any(u.startswith("gs://") for u in listed):
            volumes.append({"name": GCS_KEY_VOLUME, "secret": {"secretName": secret, "optional": True}})
            mounts.append({"name": GCS_KEY_VOLUME, "mountPath": GCS_KEY_DIR, "readOnly": True})
            env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_DIR}/{GCS_KEY}"})
    if registry is not None:
        env.append({"name": str(ServerEnv.REGISTRY_URI), "value": str(registry.uri)})
        registry_secret = registry.credentials.secret_ref.name if registry.credentials is not None else None
        if registry_secret is not None and registry_secret != secret:
            env_from.append({"secretRef": {"name": registry_secret}})
    return StoreAccess(
        env=tuple(env),
        env_from=tuple(env_from),
        volumes=tuple(volumes),
        mounts=tuple(mounts),
        service_account_name=credentials.service_account_name if credentials is not None else None,
    )
