"""The evaluate step's Job manifest and what the operator reads back from the Job and its pod (both pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.api.modeldeployment import ModelDeploymentSpec, RevisionStatus
from mlrollout.api.rolloutpolicy import EvaluateStep
from mlrollout.controller import children, evaluation, naming, store
from mlrollout.revision import Resolved, revision_of
from mlrollout.rollout import RunEvaluation
from mlrollout_serving.contract.evaluation import EvaluateEnv, EvaluationReport
from mlrollout_serving.contract.process import ServerEnv
from mlrollout_serving.evaluation import cli as evaluate_cli

MD: dict[str, Any] = {
    "apiVersion": "mlrollout.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "wine", "namespace": "ml", "uid": "1234-uid"},
}
SHA = "c" * 64


def run(**step: Any) -> RunEvaluation:
    stable, cand = revision_of(spec("1", "a"), IMAGE), revision_of(spec("2", "b"), IMAGE)
    body = {"dataset": {"uri": "pvc://holdouts/wine/holdout.csv", "sha256": SHA, "label": "quality"},
            "maxDuration": "7m", "margin": {"absolute": 0.02}, "slices": ["region"], **step}  # fmt: skip
    return RunEvaluation("wine-eval-0123456789", EvaluateStep.model_validate(body), stable, cand, 0.01)


def test_the_job_runs_the_evaluate_command_from_the_serving_image_with_least_privilege() -> None:
    job = evaluation.evaluation_job(MD, run())
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == ("batch/v1", "Job", "wine-eval-0123456789")
    assert job["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 420
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "wine-evaluation" and pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == IMAGE and container["command"] == ["mlrollout-evaluate"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # its pods are children the operator lists (for the termination message), but never a revision's pods
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[naming.MODEL_DEPLOYMENT] == "wine" and naming.REVISION not in labels
    # the holdout on a claim is mounted read-only, as the model servers mount theirs
    assert pod["volumes"][0] == {
        "name": "claim-0",
        "persistentVolumeClaim": {"claimName": "holdouts", "readOnly": True},
    }
    assert {"name": "claim-0", "mountPath": "/mnt/models/holdouts", "readOnly": True} in container["volumeMounts"]


def test_the_request_is_what_mlrollout_evaluate_reads_from_its_environment() -> None:
    job = evaluation.evaluation_job(MD, run())
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    request = evaluate_cli.request_from(evaluate_cli.parser().parse_args([]), env)
    assert request.stable.uri == "file:///models/wine-1.onnx" and request.stable.sha256 == "a" * 64
    assert request.candidate.uri == "file:///models/wine-2.onnx" and request.candidate.sha256 == "b" * 64
    assert request.dataset.uri == "file:///mnt/models/holdouts/wine/holdout.csv" and request.dataset.sha256 == SHA
    assert (request.metric, request.alpha, request.slices) == ("accuracy", 0.01, ("region",))
    assert request.margin.absolute == 0.02 and request.effective_baseline == "majority"
    assert env["MLROLLOUT_TERMINATION_LOG"] == "/dev/termination-log"
    assert len(env["MLROLLOUT_EVALUATION_REQUEST"]) < 1024 and json.loads(env["MLROLLOUT_EVALUATION_REQUEST"])


def test_the_service_account_has_no_token_and_resources_follow_the_step() -> None:
    sa = evaluation.service_account(MD)
    assert (sa["kind"], sa["metadata"]["name"], sa["automountServiceAccountToken"]) == (
        "ServiceAccount", "wine-evaluation", False,
    )  # fmt: skip
    job = evaluation.evaluation_job(MD, run(resources={"cpu": "500m", "memory": "256Mi"}))
    res = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}


def revision(number: int, uri: str, **credentials: Any) -> RevisionStatus:
    model = {"name": "wine", "version": str(number), "uri": uri, "sha256": f"{number}" * 64}
    spec = ModelDeploymentSpec.model_validate(
        {"model": {**model, **({"credentials": credentials} if credentials else {})}}
    )
    return revision_of(spec, IMAGE).model_copy(update={"number": number})


REGISTRY = "http://mlflow.mlops:5000"


def registered(number: int, secret: str | None = "mlflow-reader", registry: str = REGISTRY,
               **credentials: Any) -> RevisionStatus:  # fmt: skip
    """A models:/ revision as the resolver leaves it: its file on the tracking server, pinned."""
    reg: dict[str, Any] = {"uri": registry}
    if secret is not None:
        reg["credentials"] = {"secretRef": {"name": secret}}
    model = {"name": "wine", "uri": f"models:/wine/{number}", "registry": reg,
             **({"credentials": credentials} if credentials else {})}  # fmt: skip
    file = f"{registry}/api/2.0/mlflow-artifacts/artifacts/1/r{number}/artifacts/model/model.onnx"
    resolved = Resolved(file, f"{number}" * 64, str(number), f"r{number}")
    return revision_of(ModelDeploymentSpec.model_validate({"model": model}), IMAGE, resolved).model_copy(
        update={"number": number}
    )


def store_run(stable: RevisionStatus, cand: RevisionStatus, dataset: str) -> RunEvaluation:
    step = EvaluateStep.model_validate({"dataset": {"uri": dataset, "sha256": SHA, "label": "quality"},
                                        "maxDuration": "7m", "margin": {"absolute": 0.02}})  # fmt: skip
    return RunEvaluation("wine-eval-0123456789", step, stable, cand, 0.01)


def store_side(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod is its store access: env not the program's own, envFrom, volumes, mounts (identity is
    the Job's own ServiceAccount when the models name none, so it is compared apart)."""
    (container,) = pod["containers"]
    own = [e for e in container["env"] if e["name"] == ServerEnv.REGISTRY_URI or not e["name"].startswith("MLROLLOUT_")]
    return own, container.get("envFrom"), pod["volumes"], container["volumeMounts"]


@pytest.mark.parametrize(
    ("where", "credentials", "dataset"),
    [
        ("gs://models/wine", {"secretRef": {"name": "gcs-reader"}}, None),
        ("s3://models/wine", {"secretRef": {"name": "s3-reader"}, "serviceAccountName": "models"}, None),
        ("pvc://models/wine", {"secretRef": {"name": "reader"}}, None),
    ],
)
def test_the_job_reads_the_store_exactly_as_the_model_servers_of_the_same_models(
    where: str, credentials: dict[str, Any], dataset: str | None
) -> None:
    """The reviewer's reproduction: a gs:// Job had envFrom only (no key file, no
    GOOGLE_APPLICATION_CREDENTIALS), so its download failed and every such rollout rolled back."""
    stable, cand = revision(1, f"{where}-1.onnx", **credentials), revision(2, f"{where}-2.onnx", **credentials)
    job = evaluation.evaluation_job(MD, store_run(stable, cand, dataset or f"{where}/holdout.csv"))
    pod = job["spec"]["template"]["spec"]
    servers = [children.track_deployment(MD, stable, "stable", 1)["spec"]["template"]["spec"],
               children.track_deployment(MD, cand, "candidate", 1)["spec"]["template"]["spec"]]  # fmt: skip
    assert store_side(pod) == store_side(servers[0]) == store_side(servers[1])
    (container,) = pod["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": credentials["secretRef"]["name"]}}]
    assert pod["serviceAccountName"] == credentials.get("serviceAccountName", "wine-evaluation")
    assert servers[1].get("serviceAccountName") == credentials.get("serviceAccountName")
    env = {e["name"]: e["value"] for e in container["env"]}
    request = json.loads(env["MLROLLOUT_EVALUATION_REQUEST"])
    if where.startswith("gs://"):
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{store.GCS_KEY_DIR}/key.json"
        key = {"name": "model-store-key", "secret": {"secretName": "gcs-reader", "optional": True}}
        assert key in pod["volumes"]
        assert {"name": "model-store-key", "mountPath": store.GCS_KEY_DIR, "readOnly": True} in container[
            "volumeMounts"
        ]
    else:
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    if where.startswith("pvc://"):  # one claim, mounted once, for both models and the holdout
        assert [v["name"] for v in pod["volumes"]] == ["claim-0", "tmp"]
        assert request["candidate"]["uri"] == "file:///mnt/models/models/wine-2.onnx"
        assert request["dataset"]["uri"] == "file:///mnt/models/models/wine/holdout.csv"
    else:
        assert request["stable"]["uri"] == f"{where}-1.onnx" and request["candidate"]["uri"] == f"{where}-2.onnx"


@pytest.mark.parametrize(
    "credentials",
    [{}, {"secretRef": {"name": "s3-reader"}}, {"secretRef": {"name": "mlflow-reader"}}],
    ids=["registry-only", "beside-store-credentials", "one-secret-for-both"],
)
def test_the_job_reads_a_registrys_files_exactly_as_the_model_servers_of_the_same_revisions(
    credentials: dict[str, Any],
) -> None:
    """models:/ revisions behind a tracking server with authentication on: the Job once had neither the
    registry's Secret nor its address, so its download answered 401 where the servers' succeeded."""
    stable, cand = registered(1, **credentials), registered(2, **credentials)
    job = evaluation.evaluation_job(MD, store_run(stable, cand, "http://store/holdout.csv"))
    pod = job["spec"]["template"]["spec"]
    servers = [children.track_deployment(MD, stable, "stable", 1)["spec"]["template"]["spec"],
               children.track_deployment(MD, cand, "candidate", 1)["spec"]["template"]["spec"]]  # fmt: skip
    assert store_side(pod) == store_side(servers[0]) == store_side(servers[1])
    (container,) = pod["containers"]
    store_secret = [{"secretRef": credentials["secretRef"]}] if credentials else []
    shared = credentials.get("secretRef") == {"name": "mlflow-reader"}  # one Secret with both sets: once
    mlflow = [] if shared else [{"secretRef": {"name": "mlflow-reader"}}]
    assert container["envFrom"] == [*store_secret, *mlflow]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[ServerEnv.REGISTRY_URI] == REGISTRY == env[EvaluateEnv.REGISTRY_URI]
    # mlrollout-evaluate reads that address from the same variable, and the pinned files from the request
    request = evaluate_cli.request_from(evaluate_cli.parser().parse_args([]), env)
    assert (request.stable.uri, request.candidate.uri) == (stable.resolved_uri, cand.resolved_uri)
    assert request.candidate.sha256 == cand.sha256


def test_a_registry_without_credentials_gives_the_address_and_no_secret() -> None:
    stable, cand = registered(1, secret=None), registered(2, secret=None)
    pod = evaluation.evaluation_job(MD, store_run(stable, cand, "http://store/holdout.csv"))["spec"]["template"]["spec"]
    server = children.track_deployment(MD, cand, "candidate", 1)["spec"]["template"]["spec"]
    assert store_side(pod) == store_side(server)
    assert "envFrom" not in pod["containers"][0]
    assert {"name": ServerEnv.REGISTRY_URI, "value": REGISTRY} in pod["containers"][0]["env"]


def test_a_registry_revision_next_to_a_plain_one_gives_the_job_its_registry() -> None:
    """An http:// stable and a models:/ candidate (either way round): the one registry and its Secret."""
    plain, reg = revision(1, "http://store/wine-1.onnx"), registered(2)
    for stable, cand in ((plain, reg), (reg, plain)):
        (container,) = evaluation.evaluation_job(MD, store_run(stable, cand, "http://store/holdout.csv"))[
            "spec"]["template"]["spec"]["containers"]  # fmt: skip
        assert container["envFrom"] == [{"secretRef": {"name": "mlflow-reader"}}]
        assert {"name": ServerEnv.REGISTRY_URI, "value": REGISTRY} in container["env"]


@pytest.mark.parametrize(
    ("second", "words"),
    [
        ({"secret": "other-reader"}, "secretRef mlflow-reader vs http://mlflow.mlops:5000, secretRef other-reader"),
        ({"registry": "http://mlflow2:5000"}, "vs http://mlflow2:5000, secretRef mlflow-reader"),
    ],
)
def test_revisions_with_different_registry_credentials_get_no_job(second: dict[str, Any], words: str) -> None:
    """One pod has one --registry-uri and one set of MLFLOW_TRACKING_*: refused, naming both, as the
    model-store credentials are (the machine turns it into an inconclusive step without a Job)."""
    with pytest.raises(ValueError, match="revision 1 and revision 2 read MLflow registries") as err:
        evaluation.evaluation_job(MD, store_run(registered(1), registered(2, **second), "http://store/h.csv"))
    assert words in str(err.value)
    # a tracking server without credentials next to one with them is no conflict: nothing of it is sent
    stable, cand = registered(1), registered(2, secret=None, registry="http://mlflow2:5000")
    (container,) = evaluation.evaluation_job(MD, store_run(stable, cand, "http://store/h.csv"))["spec"]["template"][
        "spec"]["containers"]  # fmt: skip
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-reader"}}]


def test_the_job_reads_with_the_one_revision_that_names_credentials() -> None:
    """A stable served from plain http next to a gs:// candidate (or the other way round): the one set."""
    plain, gs = revision(1, "http://store/wine-1.onnx"), revision(2, "gs://models/wine-2.onnx", secretRef={"name": "k"})
    for stable, cand in ((plain, gs), (gs, plain)):
        pod = evaluation.evaluation_job(MD, store_run(stable, cand, "http://store/holdout.csv"))["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["envFrom"] == [{"secretRef": {"name": "k"}}]
        assert "GOOGLE_APPLICATION_CREDENTIALS" in {e["name"] for e in container["env"]}


def test_a_gs_holdout_next_to_s3_models_gets_the_key_file_too() -> None:
    """Issue #16: a gs:// holdout is read with the models' one set of credentials, so the Job mounts its
    key.json even when no model is on gs:// (the servers of those models do not need it)."""
    stable, cand = (
        revision(1, "s3://models/wine-1.onnx", secretRef={"name": "k"}),
        revision(2, "s3://models/wine-2.onnx", secretRef={"name": "k"}),
    )
    pod = evaluation.evaluation_job(MD, store_run(stable, cand, "gs://holdouts/wine.csv"))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{store.GCS_KEY_DIR}/key.json"
    assert container["envFrom"] == [{"secretRef": {"name": "k"}}]
    assert json.loads(env["MLROLLOUT_EVALUATION_REQUEST"])["dataset"]["uri"] == "gs://holdouts/wine.csv"


def test_revisions_with_different_credentials_get_no_job_and_the_error_names_both() -> None:
    stable = revision(1, "gs://models/wine-1.onnx", secretRef={"name": "old-key"})
    cand = revision(2, "gs://models/wine-2.onnx", secretRef={"name": "new-key"}, serviceAccountName="models")
    with pytest.raises(ValueError, match="revision 1 and revision 2") as err:
        evaluation.evaluation_job(MD, store_run(stable, cand, "s3://models/holdout.csv"))
    assert "secretRef old-key" in str(err.value) and "secretRef new-key, serviceAccountName models" in str(err.value)


def _job(*conditions: tuple[str, str, str]) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": t, "status": "True", "reason": r, "message": m}
                                      for t, r, m in conditions]}}  # fmt: skip


def _pod(job: str, message: str, exit_code: int = 0) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "message": message}
    return {"metadata": {"labels": {"job-name": job}},
            "status": {"containerStatuses": [{"name": "evaluate", "state": {"terminated": terminated}}]}}  # fmt: skip


def test_the_fact_reads_the_report_from_the_pods_termination_message() -> None:
    report = EvaluationReport(verdict="fail", reason="FAIL: worse", metric="accuracy", rows=10)
    text = json.dumps(report.to_wire())
    assert evaluation.evaluation_fact("j", None, []).state == "missing"
    assert evaluation.evaluation_fact("j", {"status": {}}, [_pod("j", text)]).state == "running"
    backoff = _job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    fact = evaluation.evaluation_fact("j", backoff, [_pod("other", "{}"), _pod("j", text, 1)])
    assert fact.state == "failed" and fact.report == report and fact.detail.startswith("BackoffLimitExceeded")
    done = evaluation.evaluation_fact("j", _job(("Complete", "", "")), [_pod("j", text)])
    assert done.state == "succeeded" and done.report == report


def test_without_a_report_the_fact_says_what_the_job_and_pod_said() -> None:
    deadline = _job(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"))
    fact = evaluation.evaluation_fact("j", deadline, [])
    assert fact.report is None and fact.detail == "DeadlineExceeded: Job was active longer than specified deadline"
    crashed = evaluation.evaluation_fact("j", _job(("Failed", "BackoffLimitExceeded", "")),
                                         [_pod("j", "Traceback ...\nMemoryError", 137)])  # fmt: skip
    assert crashed.report is None and "not JSON" in crashed.detail and "exit code 137" in crashed.detail
    assert "MemoryError" in crashed.detail
