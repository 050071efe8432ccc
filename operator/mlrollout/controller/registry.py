"""Resolving a models:/ URI with an MLflow Model Registry: the adapter behind `ModelResolver`.

Talks to the tracking server's REST API with the standard library (the operator image stays free of
mlflow's dependencies) and answers, once per registered version, what the state machine pins in the
revision (`Resolved`) or why it cannot (`Unresolved`, final or not):

1. ``models:/NAME@ALIAS``: ``GET /api/2.0/mlflow/registered-models/alias`` names the version, once; the
   revision records the number, so a moved alias never redeploys anything by itself.
2. ``GET /api/2.0/mlflow/model-versions/get``: the version exists and is ``READY`` (still registering:
   not final), its run id.
3. ``GET /api/2.0/mlflow/model-versions/get-download-uri``: its artifact location. Served by the tracking
   server itself (``mlflow-artifacts:/...``, the default of ``mlflow server``) or plain ``http(s)://``;
   any other store (``s3://`` without the proxy) is refused with the reason (docs/sources.md).
4. The model's ``MLmodel``: an ``onnx`` flavour names the file (``data``); any other flavour is refused.
5. The file itself, streamed through sha256 (bounded, never held in memory): the digest is pinned, or
   checked against ``spec.model.sha256`` when the spec gives one.

With ``spec.model.registry.credentials`` the reconciler reads the named Secret (`auth_from_secret`) and every
call to the tracking server carries its ``Authorization`` header (a bearer token, or HTTP basic), as MLflow's
own client does with the same variables; never to another host (an ``http(s)://`` artifact location
elsewhere gets no credentials). A refusal (401, 403) is final and says whether credentials were sent.

Answers are cached per (registry, credentials, URI, expected digest): a success for the process's life (the revision in
status keeps it for good), a failure for a back-off that doubles from 10 s to 5 min, so a registry that is
down or a typo in the version is asked at that pace, never in a loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import yaml

from mlrollout.api.modeldeployment import ModelSource
from mlrollout.revision import Resolved
from mlrollout.rollout import Unresolved
from mlrollout_serving.contract.process import RegistryEnv, registry_authorization, under

API: Final = "/api/2.0/mlflow"
ARTIFACTS: Final = "/api/2.0/mlflow-artifacts/artifacts"
TIMEOUT_SECONDS: Final = 10.0
MAX_MODEL_BYTES: Final = 2 << 30  # the model server's default --download-max-bytes
MAX_MLMODEL_BYTES: Final = 1 << 20
FIRST_BACKOFF: Final = 10.0
MAX_BACKOFF: Final = 300.0
USER_AGENT: Final = "mlrollout-operator"


@dataclass(frozen=True)
class RegistryAuth:
    """The ``Authorization`` header for the tracking server (never in a repr, a log or status)."""

    header: str = field(repr=False)
    source: str  # for messages: which Secret and which kind, e.g. 'Secret "mlflow" (basic, user alice)'

    @property
    def fingerprint(self) -> str:
        """Tells credentials apart in a cache key without keeping them there."""
        return hashlib.sha256(self.header.encode()).hexdigest()[:16]


class ModelResolver(Protocol):
    """What the reconciler needs: the registry's answer for a models:/ spec (never raises)."""

    def resolve(self, model: ModelSource, auth: RegistryAuth | None = None) -> Resolved | Unresolved: ...


class ResolutionError(Exception):
    def __init__(self, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.final = final


def auth_from_secret(name: str, data: Mapping[str, str] | None) -> RegistryAuth:
    """The credentials in a Secret's ``data`` (base64 values, as the API returns them): MLFLOW_TRACKING_TOKEN,
    else MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (``contract.process.RegistryEnv``). A Secret
    without a usable set is a final ResolutionError naming the keys it has, never their values (pure)."""
    values: dict[str, str] = {}
    for key in RegistryEnv:
        raw = (data or {}).get(key)
        if raw is None:
            continue
        try:
            values[key] = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            message = f'registry credentials: Secret "{name}" key {key} is not UTF-8 text'
            raise ResolutionError(message, final=True) from None
    header = registry_authorization(values)
    if header is None:
        keys = ", ".join(sorted(data or {})) or "none"
        raise ResolutionError(
            f'registry credentials: Secret "{name}" has neither {RegistryEnv.TOKEN} nor {RegistryEnv.USERNAME} and '
            f"{RegistryEnv.PASSWORD} (its keys: {keys})",
            final=True,
        )
    who = "token" if header.startswith("Bearer ") else f"user {values[RegistryEnv.USERNAME].strip()}"
    return RegistryAuth(header, f'Secret "{name}" ({who})')


@dataclass(frozen=True)
class RegistryRef:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""

    name: str
    version: str | None
    alias: str | None

    @classmethod
    def parse(cls, uri: str) -> RegistryRef:
        rest = uri.removeprefix("models:/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return cls(name, None, alias)
        name, version = rest.rsplit("/", 1)
        return cls(name, version, None)


def artifact_url(registry: str, location: str) -> str:
    """The HTTP address of an artifact location the tracking server can serve (pure)."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme == "mlflow-artifacts":
        return f"{registry.rstrip('/')}{ARTIFACTS}/{parts.path.lstrip('/')}"
    if parts.scheme in ("http", "https"):
        return location.rstrip("/")
    raise ResolutionError(
        f"the registry keeps this model at {location}, which the tracking server does not serve; run "
        "`mlflow server` with artifact serving (the default) or give the file's own URI",
        final=True,
    )


def onnx_file(mlmodel: Any, location: str) -> str:
    """The ONNX file named by an MLmodel document, or a final error naming the flavours it has (pure)."""
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    if not isinstance(flavors, dict):
        raise ResolutionError(f"{location}/MLmodel has no flavors: not an MLflow model", final=True)
    onnx = flavors.get("onnx")
    if not isinstance(onnx, dict):
        names = ", ".join(sorted(str(k) for k in flavors)) or "none"
        raise ResolutionError(f"not an ONNX model (its flavours: {names}); mlrollout serves onnx only", final=True)
    data = onnx.get("data")
    if not isinstance(data, str) or not data or data.startswith("/") or ".." in data.split("/"):
        raise ResolutionError(f"{location}/MLmodel names no usable onnx data file ({data!r})", final=True)
    return data


def classify(status: int, body: bytes, what: str, auth: RegistryAuth | None = None) -> ResolutionError:
    """An HTTP error of the registry as a ResolutionError: a missing thing or a refusal is final (pure)."""
    message = ""
    try:
        doc = json.loads(body)
        message = str(doc.get("message") or doc.get("error_code") or "")
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace").strip()
    text = f"{what}: HTTP {status}{': ' + message if message else ''}"
    if status == 401:
        if auth is None:
            return ResolutionError(
                f"{text} (the registry wants credentials: set spec.model.registry.credentials)", final=True
            )
        return ResolutionError(f"{text} (the registry refused the credentials of {auth.source})", final=True)
    if status == 403:
        who = f"the credentials of {auth.source}" if auth is not None else "anonymous calls"
        return ResolutionError(f"{text} (the registry does not allow this to {who})", final=True)
    final = 400 <= status < 500 and status not in (408, 429)
    return ResolutionError(text, final=final)


class _Refuse(urllib.request.HTTPRedirectHandler):
    """With credentials, a redirect is an answer (a 3xx error), never a place to send them to."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


class MlflowClient:
    """The few REST calls of the resolution; every failure is a ResolutionError."""

    def __init__(self, base: str, timeout: float = TIMEOUT_SECONDS, auth: RegistryAuth | None = None) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.auth = auth

    def _open(self, url: str, what: str) -> Any:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        auth = self.auth if under(url, self.base) else None
        if auth is not None:
            headers["Authorization"] = auth.header
        request = urllib.request.Request(url, headers=headers)
        try:
            if auth is not None:  # urllib would re-send the header to wherever a redirect points
                return _NO_REDIRECTS.open(request, timeout=self.timeout)
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            body = e.read(64 << 10)
            e.close()
            raise classify(e.code, body, what, auth) from None
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise ResolutionError(f"{what}: registry {self.base} unreachable: {reason}", final=False) from None

    def get(self, path: str, what: str, **query: str) -> dict[str, Any]:
        url = f"{self.base}{API}/{path}?{urllib.parse.urlencode(query)}"
        with self._open(url, what) as resp:
            try:
                doc = json.loads(resp.read(MAX_MLMODEL_BYTES))
            except ValueError:
                raise ResolutionError(
                    f"{what}: the registry answered something that is not JSON", final=False
                ) from None
        if not isinstance(doc, dict):
            raise ResolutionError(f"{what}: unexpected answer from the registry", final=False)
        return doc

    def read(self, url: str, what: str, limit: int) -> bytes:
        with self._open(url, what) as resp:
            data: bytes = resp.read(limit + 1)
        if len(data) > limit:
            raise ResolutionError(f"{what} is larger than {limit} bytes", final=True)
        return data

    def digest(self, url: str, what: str, limit: int) -> tuple[str, int]:
        """sha256 and size of the file at ``url``, streamed (never in memory)."""
        sha, size = hashlib.sha256(), 0
        with self._open(url, what) as resp:
            try:
                while chunk := resp.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise ResolutionError(f"{what} is larger than the limit of {limit} bytes", final=True)
                    sha.update(chunk)
            except OSError as e:
                raise ResolutionError(f"{what}: download cut: {e}", final=False) from None
        return sha.hexdigest(), size


def resolve(model: ModelSource, client: MlflowClient, max_bytes: int = MAX_MODEL_BYTES) -> Resolved:
    """Ask the registry what ``model.uri`` is (the five steps above); raises ResolutionError."""
    ref = RegistryRef.parse(model.uri)
    version = ref.version
    if ref.alias is not None:
        doc = client.get("registered-models/alias", f"alias {ref.name}@{ref.alias}", name=ref.name, alias=ref.alias)
        version = str((doc.get("model_version") or {}).get("version") or "")
        if not version:
            raise ResolutionError(f"alias {ref.name}@{ref.alias} names no version", final=True)
    assert version is not None
    label = f"model version {ref.name}/{version}"
    found = client.get("model-versions/get", label, name=ref.name, version=version).get("model_version") or {}
    status = str(found.get("status") or "READY")
    if status == "PENDING_REGISTRATION":
        raise ResolutionError(f"{label} is still being registered", final=False)
    if status != "READY":
        raise ResolutionError(f"{label} is {status}: {found.get('status_message') or 'not usable'}", final=True)
    run_id = str(found.get("run_id") or "") or None
    location = str(
        client.get("model-versions/get-download-uri", label, name=ref.name, version=version).get("artifact_uri") or ""
    )
    if not location:
        raise ResolutionError(f"{label} has no artifact location", final=True)
    base = artifact_url(client.base, location)
    try:
        mlmodel = yaml.safe_load(client.read(f"{base}/MLmodel", f"{label}: MLmodel", MAX_MLMODEL_BYTES))
    except yaml.YAMLError as e:
        raise ResolutionError(f"{label}: MLmodel is not YAML: {e}", final=True) from None
    file_url = f"{base}/{urllib.parse.quote(onnx_file(mlmodel, location))}"
    sha256, _ = client.digest(file_url, f"{label}: model file", max_bytes)
    if model.sha256 is not None and sha256 != model.sha256:
        raise ResolutionError(
            f"{label}: the file's sha256 is {sha256}, not spec.model.sha256 {model.sha256}", final=True
        )
    return Resolved(uri=file_url, sha256=sha256, version=version, run_id=run_id)


@dataclass
class _Entry:
    answer: Resolved | Unresolved
    retry_at: float
    backoff: float


class CachingResolver:
    """`ModelResolver` over `resolve`: successes kept, failures asked again only after a back-off."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 512) -> None:
        self._clock = clock
        self._cache: dict[tuple[str, str, str, str | None], _Entry] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def resolve(self, model: ModelSource, auth: RegistryAuth | None = None) -> Resolved | Unresolved:
        assert model.registry is not None, "a models:/ URI always names its registry (CRD rule)"
        key = (model.registry.uri, auth.fingerprint if auth else "", model.uri, model.sha256)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and (isinstance(entry.answer, Resolved) or self._clock() < entry.retry_at):
                return entry.answer
        try:
            answer: Resolved | Unresolved = resolve(model, MlflowClient(model.registry.uri, auth=auth))
        except ResolutionError as e:
            answer = Unresolved(str(e), final=e.final)
        backoff = FIRST_BACKOFF if entry is None or isinstance(entry.answer, Resolved) else entry.backoff * 2
        backoff = min(backoff, MAX_BACKOFF)
        with self._lock:
            if len(self._cache) >= self._max and key not in self._cache:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = _Entry(answer, self._clock() + backoff, backoff)
        return answer
