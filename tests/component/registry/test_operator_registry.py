"""models:/ with a real MLflow tracking server and registry: the operator resolves a registered version
(REST, standard library) and pins the file, its digest and run in the revision; the pods' model server
downloads exactly that file and checks that digest; v1 -> v2 by editing the URI; history keeps both.

The Kubernetes API is KMock's emulator (as in tests/unit/controller), the registry and the model server
are real processes on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.component.server.conftest import infer_body, post
from tests.support import holdouts
from tests.support.mlflow import BasicAuth, MlflowServer, run_mlflow
from tests.support.models import BuiltModel
from tests.support.procs import free_port, run_server_until_exit, serve_model
from tests.unit.controller.kmock_support import ApplyingEmulator, declare_operator_resources

from mlrollout.api.modeldeployment import ModelDeploymentSpec
from mlrollout.api.rolloutpolicy import EvaluateStep
from mlrollout.controller.evaluation import evaluation_job
from mlrollout.controller.kube import Kube
from mlrollout.controller.reconcile import Reconciled, Reconciler
from mlrollout.controller.registry import CachingResolver, auth_from_secret
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.verdicts import RecordedVerdicts
from mlrollout.revision import Resolved, revision_of
from mlrollout.rollout import RunEvaluation
from mlrollout_serving.contract.evaluation import EvaluateEnv, EvaluateExit, parse_report
from mlrollout_serving.contract.process import ExitCode, RegistryEnv, ServerEnv

pytestmark = [pytest.mark.component, pytest.mark.kmock(cls=ApplyingEmulator)]

MD = "mlrollout.io/v1alpha1/modeldeployments"
DEPLOYMENTS = "apps/v1/deployments"
LOG = logging.getLogger("test.registry")
ADMIN = BasicAuth("admin", secrets.token_urlsafe(12))
T0 = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
POLICY = {
    "apiVersion": "mlrollout.io/v1alpha1",
    "kind": "RolloutPolicy",
    "metadata": {"name": "fast"},
    "spec": {"strategy": {"steps": [{"canary": {"weight": 20, "minRequests": 10}}]}, "analysis": {"interval": "1s"}},
}


@pytest.fixture(scope="module")
def registry(wine_model: BuiltModel, wine_worse_model: BuiltModel) -> Iterator[MlflowServer]:
    """wine v1 and v2 (ONNX), v3 a scikit-learn pickle; alias champion -> 1."""
    with run_mlflow() as mlflow:
        assert mlflow.register_onnx("wine", wine_model.path)[0] == "1"
        assert mlflow.register_onnx("wine", wine_worse_model.path)[0] == "2"
        assert mlflow.register_sklearn("wine")[0] == "3"
        mlflow.set_alias("wine", "champion", "1")
        yield mlflow


def md_body(uri: str, registry_url: str, secret: str | None = None) -> dict[str, Any]:
    registry: dict[str, Any] = {"uri": registry_url}
    if secret is not None:
        registry["credentials"] = {"secretRef": {"name": secret}}
    return {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "wine", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {
            "model": {"name": "wine", "uri": uri, "registry": registry},
            "rolloutPolicyRef": {"name": "fast"},
        },
    }


@pytest.fixture(scope="module")
def locked_registry(wine_model: BuiltModel, wine_worse_model: BuiltModel) -> Iterator[MlflowServer]:
    """A tracking server with MLflow's authentication on (basic-auth app): wine v1 and v2 (ONNX)."""
    with run_mlflow(auth=ADMIN) as mlflow:
        assert mlflow.register_onnx("wine", wine_model.path)[0] == "1"
        assert mlflow.register_onnx("wine", wine_worse_model.path)[0] == "2"
        yield mlflow


@pytest.fixture
def cluster(kmock: Any) -> Any:
    declare_operator_resources(kmock)
    kmock.resources["v1/secrets"].kind = "Secret"
    kmock["get /api/v1/namespaces/ml"] << {"metadata": {"name": "ml", "labels": {}}}
    kmock.objects["mlrollout.io/v1alpha1/rolloutpolicies", None, "fast"] = POLICY
    return kmock


def reconciler(server: Any, verdicts: Path) -> Reconciler:
    api = client.ApiClient(client.Configuration(host=str(server.url).rstrip("/")))
    settings = OperatorSettings(serving_image="mlrollout/serving:test", gateway_image="gw:test")
    return Reconciler(Kube(api), RecordedVerdicts(str(verdicts)), settings, CachingResolver())


async def run(rec: Reconciler, now: datetime) -> Reconciled | None:
    return await asyncio.to_thread(rec.reconcile, "ml", "wine", LOG, now)


def ready(server: Any, name: str) -> None:
    dep = server.objects[DEPLOYMENTS, "ml", name]
    n = dep["spec"]["replicas"]
    dep.patch(
        {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "readyReplicas": n, "updatedReplicas": n}}
    )


def server_env(server: Any, revision: str) -> dict[str, str]:
    container = server.objects[DEPLOYMENTS, "ml", f"wine-{revision}"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def sha256_of(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return hashlib.sha256(resp.read()).hexdigest()


async def test_v1_to_v2_pins_the_resolved_file_digest_and_run(
    cluster: Any, registry: MlflowServer, wine_model: BuiltModel, tmp_path: Path
) -> None:
    cluster.objects[MD, "ml", "wine"] = md_body("models:/wine/1", registry.url)
    rec = reconciler(cluster, tmp_path)
    out = await run(rec, T0)
    assert out is not None and "Deploying" in out.events
    stable = cluster.objects[MD, "ml", "wine"]["status"]["stable"]
    assert stable["modelUri"] == "models:/wine/1" and stable["modelVersion"] == "1"
    assert stable["resolvedUri"].startswith(f"{registry.url}/api/2.0/mlflow-artifacts/artifacts/")
    assert stable["resolvedUri"].endswith("/model.onnx") and stable["runId"]
    assert stable["sha256"] == sha256_of(stable["resolvedUri"])

    # the pods read the pinned file with the pinned digest: the real model server's download path
    env = server_env(cluster, stable["revision"])
    assert env[ServerEnv.MODEL_URI] == stable["resolvedUri"] and env[ServerEnv.MODEL_SHA256] == stable["sha256"]
    with serve_model(env[ServerEnv.MODEL_URI], sha256=env[ServerEnv.MODEL_SHA256], name="wine") as server:
        status, _, _ = post(server.port, "/v2/models/wine/infer", infer_body(wine_model, wine_model.samples[:4]))
        assert status == 200

    ready(cluster, f"wine-{stable['revision']}")
    ready(cluster, "wine")
    assert (await run(rec, T0 + timedelta(seconds=5))) is not None

    # v2: edit the URI; the candidate pins v2's file
    cluster.objects[MD, "ml", "wine"].patch({"spec": md_body("models:/wine/2", registry.url)["spec"],
                                             "metadata": {"generation": 2}})  # fmt: skip
    out = await run(rec, T0 + timedelta(seconds=10))
    assert out is not None and "RolloutStarted" in out.events
    cand = cluster.objects[MD, "ml", "wine"]["status"]["candidate"]
    assert cand["modelVersion"] == "2" and cand["resolvedUri"] != stable["resolvedUri"]
    assert cand["sha256"] == sha256_of(cand["resolvedUri"]) != stable["sha256"]
    ready(cluster, f"wine-{cand['revision']}")
    await run(rec, T0 + timedelta(seconds=11))
    (tmp_path / "ml.wine.json").write_text(
        json.dumps({"verdict": "promote", "reason": "recorded", "samples": {"stable": 500, "candidate": 50}})
    )
    out = await run(rec, T0 + timedelta(seconds=13))
    assert out is not None and "Promoted" in out.events
    history = cluster.objects[MD, "ml", "wine"]["status"]["history"]
    assert [(h["modelVersion"], h["resolvedUri"], h["sha256"], h["runId"]) for h in history] == [
        ("1", stable["resolvedUri"], stable["sha256"], stable["runId"]),
        ("2", cand["resolvedUri"], cand["sha256"], cand["runId"]),
    ]


async def test_an_alias_is_resolved_once_and_recorded(cluster: Any, registry: MlflowServer, tmp_path: Path) -> None:
    cluster.objects[MD, "ml", "wine"] = md_body("models:/wine@champion", registry.url)
    rec = reconciler(cluster, tmp_path)
    await run(rec, T0)
    stable = cluster.objects[MD, "ml", "wine"]["status"]["stable"]
    assert stable["modelUri"] == "models:/wine@champion" and stable["modelVersion"] == "1"
    registry.set_alias("wine", "champion", "2")  # the alias moves: nothing follows it silently
    await run(rec, T0 + timedelta(seconds=60))
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert status["stable"]["resolvedUri"] == stable["resolvedUri"] and "candidate" not in status
    registry.set_alias("wine", "champion", "1")


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("models:/wine/9", "Model Version (name=wine, version=9) not found"),
        ("models:/nope/1", "not found"),
        ("models:/wine/3", "not an ONNX model (its flavours: python_function, sklearn)"),
        ("models:/wine@nobody", "alias nobody not found"),
    ],
)
async def test_what_cannot_be_resolved_is_refused_with_the_registrys_words(
    cluster: Any, registry: MlflowServer, tmp_path: Path, uri: str, words: str
) -> None:
    cluster.objects[MD, "ml", "wine"] = md_body(uri, registry.url)
    out = await run(reconciler(cluster, tmp_path), T0)
    assert out is not None and out.phase == "Degraded" and "ResolutionFailed" in out.events
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert status["heldBack"]["outcome"] == "refused" and words in status["heldBack"]["reason"]
    assert words in status["message"] and "stable" not in status
    assert not [k for k in cluster.objects if k[0] == DEPLOYMENTS and k[2].startswith("wine-")]  # nothing deployed
    posted = [e for e in cluster.posted_events if e["reason"] == "ResolutionFailed"]
    assert posted and words in posted[0]["message"]


async def test_a_registry_that_is_down_is_waited_for_without_a_loop(cluster: Any, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    cluster.objects[MD, "ml", "wine"] = md_body("models:/wine/1", down)
    rec = reconciler(cluster, tmp_path)
    out = await run(rec, T0)
    assert out is not None and out.phase == "Progressing" and "RegistryUnavailable" in out.events
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert status["resolving"]["revision"] and "unreachable" in status["resolving"]["reason"]
    assert "resolving models:/wine/1" in status["message"]
    out = await run(rec, T0 + timedelta(seconds=10))
    assert out is not None and out.events == ()  # quietly waiting (the resolver backs off)


def secret(cluster: Any, name: str, **data: str) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    meta = {"name": name, "namespace": "ml"}
    cluster.objects["v1/secrets", "ml", name] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "data": encoded,
    }


async def test_registry_credentials_from_the_secret_resolve_a_version_behind_authentication(
    cluster: Any, locked_registry: MlflowServer, wine_model: BuiltModel, tmp_path: Path
) -> None:
    """MLflow's basic-auth app in front of everything: with the Secret's user and password the version is
    resolved and the file hashed through the authenticated artifact endpoint."""
    secret(cluster, "mlflow-creds", MLFLOW_TRACKING_USERNAME=ADMIN.username, MLFLOW_TRACKING_PASSWORD=ADMIN.password)
    cluster.objects[MD, "ml", "wine"] = md_body("models:/wine/1", locked_registry.url, secret="mlflow-creds")
    out = await run(reconciler(cluster, tmp_path), T0)
    assert out is not None and "Deploying" in out.events
    stable = cluster.objects[MD, "ml", "wine"]["status"]["stable"]
    assert stable["modelVersion"] == "1" and stable["resolvedUri"].endswith("/model.onnx")
    request = urllib.request.Request(stable["resolvedUri"], headers={"Authorization": "Basic " + base64.b64encode(
        f"{ADMIN.username}:{ADMIN.password}".encode()).decode()})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert stable["sha256"] == hashlib.sha256(resp.read()).hexdigest()
    assert ADMIN.password not in str(cluster.objects[MD, "ml", "wine"].raw)

    # the pods: the same Secret as envFrom, the registry's address, and the real model server downloading the
    # pinned file through the authenticated artifact endpoint with MLflow's variables
    dep = cluster.objects[DEPLOYMENTS, "ml", f"wine-{stable['revision']}"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "mlflow-creds"}}]
    env = server_env(cluster, stable["revision"])
    assert env[ServerEnv.REGISTRY_URI] == locked_registry.url
    pinned = {str(ServerEnv.REGISTRY_URI): env[ServerEnv.REGISTRY_URI]}
    creds = {"MLFLOW_TRACKING_USERNAME": ADMIN.username, "MLFLOW_TRACKING_PASSWORD": ADMIN.password}
    with serve_model(env[ServerEnv.MODEL_URI], sha256=stable["sha256"], name="wine", env=pinned | creds) as server:
        status, _, _ = post(server.port, "/v2/models/wine/infer", infer_body(wine_model, wine_model.samples[:4]))
        assert status == 200
    # without them, or for a model elsewhere, the server sends nothing and the tracking server refuses
    code, output, ready = run_server_until_exit(env[ServerEnv.MODEL_URI], sha256=stable["sha256"], env=pinned)
    assert code == ExitCode.LOAD_FAILED and not ready and "HTTP 401" in output
    code, output, ready = run_server_until_exit(env[ServerEnv.MODEL_URI], sha256=stable["sha256"], env=creds)
    assert code == ExitCode.LOAD_FAILED and not ready and "HTTP 401" in output


@pytest.mark.parametrize(
    ("secret_data", "words"),
    [
        (None, "HTTP 401: You are not authenticated"),  # no credentials in the spec
        ({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "wrong"},
         'the registry refused the credentials of Secret "mlflow-creds" (user admin)'),
        ({"MLFLOW_TRACKING_TOKEN": "not-a-token-it-knows"},
         'the registry refused the credentials of Secret "mlflow-creds" (token)'),
        ({"username": "admin"}, 'Secret "mlflow-creds" has neither MLFLOW_TRACKING_TOKEN nor'),
        ("missing", 'Secret "mlflow-creds" not found in namespace ml'),
    ],
)  # fmt: skip
async def test_wrong_or_missing_registry_credentials_are_refused_with_a_clear_reason(
    cluster: Any, locked_registry: MlflowServer, tmp_path: Path, secret_data: Any, words: str
) -> None:
    if isinstance(secret_data, dict):
        secret(cluster, "mlflow-creds", **secret_data)
    named = None if secret_data is None else "mlflow-creds"
    cluster.objects[MD, "ml", "wine"] = md_body("models:/wine/1", locked_registry.url, secret=named)
    out = await run(reconciler(cluster, tmp_path), T0)
    assert out is not None and out.phase == "Degraded" and "ResolutionFailed" in out.events
    status = cluster.objects[MD, "ml", "wine"]["status"]
    assert status["heldBack"]["outcome"] == "refused" and words in status["heldBack"]["reason"], status["heldBack"]
    if secret_data is None:
        assert "set spec.model.registry.credentials" in status["heldBack"]["reason"]
    assert not [k for k in cluster.objects if k[0] == DEPLOYMENTS and k[2].startswith("wine-")]  # nothing deployed


def test_the_evaluation_job_downloads_both_versions_through_the_authenticated_registry(
    locked_registry: MlflowServer, wine_model: BuiltModel, tmp_path: Path
) -> None:
    """The evaluate step of two models:/ revisions behind MLflow's basic-auth app: the real resolver pins
    both, the operator renders the Job, and the real ``mlrollout-evaluate`` runs with that Job's container
    environment and the Secret's keys (what envFrom gives it). It once had neither, and answered 401."""
    creds = {str(RegistryEnv.USERNAME): ADMIN.username, str(RegistryEnv.PASSWORD): ADMIN.password}
    data = {k: base64.b64encode(v.encode()).decode() for k, v in creds.items()}
    resolver, revisions = CachingResolver(), []
    for n in (1, 2):
        spec = ModelDeploymentSpec.model_validate(
            md_body(f"models:/wine/{n}", locked_registry.url, "mlflow-creds")["spec"]
        )
        resolved = resolver.resolve(spec.model, auth_from_secret("mlflow-creds", data))
        assert isinstance(resolved, Resolved), resolved
        revisions.append(revision_of(spec, "mlrollout/serving:test", resolved).model_copy(update={"number": n}))
    stable, cand = revisions
    holdout = holdouts.holdout_csv(tmp_path / "wine.csv", wine_model)
    digest = hashlib.sha256(holdout.read_bytes()).hexdigest()
    dataset = {"uri": f"file://{holdout}", "sha256": digest, "label": "label"}
    step = EvaluateStep.model_validate(
        {"dataset": dataset, "maxDuration": "5m", "margin": {"absolute": 0.5}, "baseline": "none"}
    )
    md = md_body("models:/wine/2", locked_registry.url, "mlflow-creds")
    job = evaluation_job(md, RunEvaluation("wine-eval-0123456789", step, stable, cand, 0.05))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-creds"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[EvaluateEnv.REGISTRY_URI] == locked_registry.url
    env |= {EvaluateEnv.TERMINATION_LOG: str(tmp_path / "termination"), EvaluateEnv.WORK_DIR: str(tmp_path / "work")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}

    def job_run(*extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "mlrollout-evaluate"), "--json"]
        merged = {k: v for part in (clean, env, *extra) for k, v in part.items()}
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=merged, check=False)

    # with the Secret's keys: both files fetched through the artifact endpoint, verified, scored
    proc = job_run(creds)
    report = parse_report(proc.stdout)
    assert report.problem is None, proc.stdout + proc.stderr
    assert (report.stable_sha256, report.candidate_sha256) == (stable.sha256, cand.sha256)
    assert proc.returncode in (EvaluateExit.PASS, EvaluateExit.FAIL)
    assert parse_report((tmp_path / "termination").read_text()).candidate_sha256 == cand.sha256
    assert ADMIN.password not in proc.stdout + proc.stderr

    # without them (a ModelDeployment without registry.credentials): bad input, and the reason says why
    proc = job_run()
    report = parse_report(proc.stdout)
    assert proc.returncode == EvaluateExit.BAD_INPUT and report.problem == "badInput", proc.stdout
    assert "stable model" in report.reason and "HTTP 401" in report.reason
    assert "sent without credentials" in report.reason and "registry.credentials" in report.reason

    # a data scientist's run: the same flag and variables as the model server's
    flags = ["evaluate", "--stable", stable.resolved_uri or "", "--candidate", cand.resolved_uri or "",
             "--data", str(holdout), "--label", "label", "--absolute-margin", "0.5", "--baseline", "none",
             "--json"]  # fmt: skip
    by_hand = [str(Path(sys.executable).parent / "mlrollout"), *flags]
    run = subprocess.run([*by_hand, "--registry-uri", locked_registry.url], capture_output=True, text=True,
                         timeout=300, env=clean | creds, check=False)  # fmt: skip
    assert parse_report(run.stdout).problem is None and run.returncode in (0, 1), run.stdout + run.stderr
    # the credentials without the registry's address are sent nowhere
    run = subprocess.run(by_hand, capture_output=True, text=True, timeout=300, env=clean | creds, check=False)
    assert run.returncode == EvaluateExit.BAD_INPUT and "HTTP 401" in parse_report(run.stdout).reason
    assert "--registry-uri" in parse_report(run.stdout).reason
