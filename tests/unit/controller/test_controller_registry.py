"""The registry adapter's pure parts, its cache's back-off, and what the pods get for each model source."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from tests.support.httpd import QuietHandler, serving
from tests.unit.rollout.world import IMAGE

from mlrollout.api.modeldeployment import ModelDeploymentSpec, ModelSource
from mlrollout.controller import children, registry, store
from mlrollout.controller.observe import track_facts
from mlrollout.controller.registry import CachingResolver, RegistryRef, ResolutionError
from mlrollout.revision import Resolved, revision_of
from mlrollout.rollout import Unresolved
from mlrollout_serving.contract.process import ServerEnv

MD = {"metadata": {"name": "wine", "namespace": "ml", "uid": "u"}}


def test_registry_refs() -> None:
    assert RegistryRef.parse("models:/wine/12") == RegistryRef("wine", "12", None)
    assert RegistryRef.parse("models:/wine@champion") == RegistryRef("wine", None, "champion")


def test_artifact_locations() -> None:
    assert (
        registry.artifact_url("http://mlflow:5000/", "mlflow-artifacts:/1/models/m-1/artifacts")
        == "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/models/m-1/artifacts"
    )
    assert registry.artifact_url("http://mlflow:5000", "https://store/m/") == "https://store/m"
    with pytest.raises(ResolutionError, match="does not serve") as info:
        registry.artifact_url("http://mlflow:5000", "s3://bucket/1/m")
    assert info.value.final


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"flavors": {"sklearn": {}, "python_function": {}}}, "its flavours: python_function, sklearn"),
        ({"flavors": {"onnx": {"data": "../x.onnx"}}}, "no usable onnx data file"),
        ({"flavors": {"onnx": {}}}, "no usable onnx data file"),
        ("just text", "not an MLflow model"),
    ],
)
def test_mlmodel_without_an_onnx_file_is_refused(doc: Any, words: str) -> None:
    with pytest.raises(ResolutionError, match=words) as info:
        registry.onnx_file(doc, "loc")
    assert info.value.final
    assert registry.onnx_file({"flavors": {"onnx": {"data": "model.onnx"}}}, "loc") == "model.onnx"


@pytest.mark.parametrize(
    ("status", "final"), [(404, True), (400, True), (401, True), (403, True), (429, False), (500, False), (503, False)]
)
def test_registry_http_errors(status: int, final: bool) -> None:
    error = registry.classify(status, b'{"error_code": "X", "message": "why"}', "model version wine/2")
    assert error.final is final and str(error).startswith(f"model version wine/2: HTTP {status}: why")


def test_failures_are_asked_again_only_after_a_doubling_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    now = [0.0]

    def failing(model: ModelSource, client: Any) -> Resolved:
        calls.append(now[0])
        raise ResolutionError("connection refused", final=False)

    monkeypatch.setattr(registry, "resolve", failing)
    resolver = CachingResolver(clock=lambda: now[0])
    model = ModelSource.model_validate({"name": "w", "uri": "models:/w/1", "registry": {"uri": "http://r:5000"}})
    for t in range(0, 200):
        now[0] = float(t)
        assert resolver.resolve(model) == Unresolved("connection refused", final=False)
    assert calls == [0.0, 10.0, 30.0, 70.0, 150.0]


def _pod(spec: dict[str, Any], resolved: Resolved | None = None) -> dict[str, Any]:
    rev = revision_of(ModelDeploymentSpec.model_validate(spec), IMAGE, resolved)
    rev = rev.model_copy(update={"number": 1})
    pod: dict[str, Any] = children.track_deployment(MD, rev, "stable", 1)["spec"]["template"]["spec"]
    return pod


def test_pods_get_the_resolved_file_and_its_digest() -> None:
    resolved = Resolved("http://r:5000/api/2.0/mlflow-artifacts/artifacts/1/m/model.onnx", "d" * 64, "7", "run")
    spec = {"model": {"name": "wine", "uri": "models:/wine/7", "registry": {"uri": "http://r:5000"}}}
    env = {e["name"]: e["value"] for e in _pod(spec, resolved)["containers"][0]["env"]}
    assert env[ServerEnv.MODEL_URI] == resolved.uri
    assert env[ServerEnv.MODEL_SHA256] == "d" * 64 and env[ServerEnv.MODEL_VERSION] == "7"
    assert env[ServerEnv.REGISTRY_URI] == "http://r:5000"  # where MLflow credentials may go, if any
    assert "envFrom" not in _pod(spec, resolved)["containers"][0]


def test_registry_credentials_go_to_the_pods_beside_the_store_credentials() -> None:
    resolved = Resolved("http://r:5000/api/2.0/mlflow-artifacts/artifacts/1/m/model.onnx", "d" * 64, "7", "run")
    registry = {"uri": "http://r:5000", "credentials": {"secretRef": {"name": "mlflow-reader"}}}
    spec = {"model": {"name": "wine", "uri": "models:/wine/7", "registry": registry}}
    assert _pod(spec, resolved)["containers"][0]["envFrom"] == [{"secretRef": {"name": "mlflow-reader"}}]
    both = {**spec["model"], "credentials": {"secretRef": {"name": "s3-reader"}}}
    assert _pod({"model": both}, resolved)["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "s3-reader"}}, {"secretRef": {"name": "mlflow-reader"}}
    ]  # fmt: skip


def test_credentials_go_to_the_pods_as_envfrom_and_a_service_account() -> None:
    creds = {"secretRef": {"name": "s3-reader"}, "serviceAccountName": "models"}
    spec = {"model": {"name": "wine", "uri": "s3://models/wine.onnx", "sha256": "c" * 64, "credentials": creds}}
    pod = _pod(spec)
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-reader"}}]
    assert pod["serviceAccountName"] == "models" and pod["automountServiceAccountToken"] is False
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env[ServerEnv.MODEL_URI] == "s3://models/wine.onnx" and env[ServerEnv.MODEL_VERSION] == "c" * 12
    plain = _pod({"model": {"name": "wine", "uri": "s3://models/wine.onnx", "sha256": "c" * 64}})
    assert "envFrom" not in plain["containers"][0] and plain.get("serviceAccountName") is None


def test_a_gs_credentials_secret_is_also_a_key_file_named_by_google_application_credentials() -> None:
    creds = {"secretRef": {"name": "gcs-reader"}}
    spec = {"model": {"name": "wine", "uri": "gs://models/wine.onnx", "sha256": "c" * 64, "credentials": creds}}
    pod = _pod(spec)
    server = pod["containers"][0]
    # envFrom stays: a missing Secret is then CreateContainerConfigError, reported at once
    assert server["envFrom"] == [{"secretRef": {"name": "gcs-reader"}}]
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{store.GCS_KEY_DIR}/key.json"
    volume = next(v for v in pod["volumes"] if v["name"] == "model-store-key")
    assert volume["secret"] == {"secretName": "gcs-reader", "optional": True}
    assert {"name": "model-store-key", "mountPath": store.GCS_KEY_DIR, "readOnly": True} in server["volumeMounts"]
    s3 = _pod({"model": {**spec["model"], "uri": "s3://models/wine.onnx"}})
    assert all(v["name"] != "model-store-key" for v in s3["volumes"])
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in {e["name"] for e in s3["containers"][0]["env"]}


def test_a_missing_credentials_secret_is_a_config_error_with_the_kubelets_words() -> None:
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "s3-reader" not found'}
    pod = {"status": {"containerStatuses": [{"name": "server", "state": {"waiting": waiting}, "restartCount": 0}]}}
    facts = track_facts({"spec": {"replicas": 1}, "status": {}, "metadata": {}}, [pod])
    assert facts.config_error and 'secret "s3-reader" not found' in facts.detail


def test_a_crash_loop_says_why_the_server_exited() -> None:
    term = {"exitCode": 1, "message": "cannot read s3://models/wine.onnx: access denied (AccessDenied)"}
    cs = {"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": term},
          "restartCount": 4}  # fmt: skip
    facts = track_facts(
        {"spec": {"replicas": 1}, "status": {}, "metadata": {}}, [{"status": {"containerStatuses": [cs]}}]
    )
    assert facts.crash_looping and "access denied" in facts.detail


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_registry_credentials_from_a_secrets_data() -> None:
    token = registry.auth_from_secret("mlflow", {"MLFLOW_TRACKING_TOKEN": b64("t0k\n")})
    assert token.header == "Bearer t0k" and token.source == 'Secret "mlflow" (token)'
    basic = registry.auth_from_secret(
        "mlflow", {"MLFLOW_TRACKING_USERNAME": b64("alice"), "MLFLOW_TRACKING_PASSWORD": b64("p:w")}
    )
    assert basic.header == f"Basic {b64('alice:p:w')}" and basic.source == 'Secret "mlflow" (user alice)'
    assert "p:w" not in repr(basic) and basic.fingerprint != token.fingerprint
    both = registry.auth_from_secret("m", {"MLFLOW_TRACKING_TOKEN": b64("t"), "MLFLOW_TRACKING_USERNAME": b64("a")})
    assert both.header == "Bearer t"  # the token wins, as in MLflow's client


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (None, "(its keys: none)"),
        ({"username": b64("a"), "password": b64("b")}, "(its keys: password, username)"),
        ({"MLFLOW_TRACKING_USERNAME": b64("alice")}, "neither MLFLOW_TRACKING_TOKEN nor"),
        ({"MLFLOW_TRACKING_TOKEN": "%%%"}, "key MLFLOW_TRACKING_TOKEN is not UTF-8 text"),
        ({"MLFLOW_TRACKING_TOKEN": b64("")}, "neither"),
    ],
)
def test_a_secret_without_usable_credentials_is_refused_naming_its_keys(data: Any, words: str) -> None:
    with pytest.raises(ResolutionError, match=re.escape(words)) as info:
        registry.auth_from_secret("mlflow", data)
    assert info.value.final and "b64" not in str(info.value)


def test_refusals_say_whether_credentials_were_sent() -> None:
    alice = registry.RegistryAuth("Basic x", 'Secret "m" (user alice)')
    assert "set spec.model.registry.credentials" in str(registry.classify(401, b"no", "v"))
    assert 'refused the credentials of Secret "m" (user alice)' in str(registry.classify(401, b"no", "v", alice))
    forbidden = registry.classify(403, b'{"message": "Permission denied"}', "v", alice)
    assert forbidden.final and "Permission denied" in str(forbidden) and "(user alice)" in str(forbidden)
    assert "anonymous calls" in str(registry.classify(403, b"", "v"))


def test_credentials_go_only_to_the_tracking_server_and_never_through_a_redirect() -> None:
    seen: list[tuple[str, str | None]] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path.startswith("/moved"):
                self.send_response(302)
                self.send_header("Location", "/api/2.0/mlflow/x")
                self.end_headers()
                return
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as ours, serving(Handler) as elsewhere:
        client = registry.MlflowClient(ours, auth=registry.RegistryAuth("Bearer t", "test"))
        client.get("x", "ours")
        client.read(f"{elsewhere}/artifact", "elsewhere", 100)
        with pytest.raises(ResolutionError, match="HTTP 302"):
            client.read(f"{ours}/moved", "moved", 100)
        registry.MlflowClient(ours).get("x", "anonymous")
    assert seen == [("/api/2.0/mlflow/x?", "Bearer t"), ("/artifact", None), ("/moved", "Bearer t"),
                    ("/api/2.0/mlflow/x?", None)]  # fmt: skip
