"""The evaluate step's Job: its manifest (pure), and what the Job and its pod say, as a fact (pure).

The Job runs ``mlrollout-evaluate`` from the candidate's serving image (the onnxruntime the model pods use)
over the stable and candidate model files, with the request in one environment variable and the report in
the container's termination message, so the operator reads the answer from the pod's status (it lists
those pods anyway) and needs no access to logs. The pod has no Kubernetes API token (its ServiceAccount
``<md>-evaluation`` has no Role; a models' ServiceAccount for web identity is used instead when the
model names one, as the model servers do), a hardened container, CPU and memory limits, one attempt
(backoffLimit 0) and the step's maxDuration as activeDeadlineSeconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from mlrollout.api.common import parse_duration
from mlrollout.controller import naming
from mlrollout.controller.children import HARDENED_CONTAINER, RESTRICTED_POD, _meta
from mlrollout.controller.store import locate, store_access
from mlrollout.revision import RevisionTemplate, reading_credentials, reading_registry
from mlrollout.rollout.actions import RunEvaluation
from mlrollout.rollout.facts import EvaluationFact
from mlrollout.traffic.base import Manifest
from mlrollout_serving.contract.evaluation import (
    EVALUATE_COMMAND,
    DatasetRef,
    EvaluateEnv,
    EvaluationFormatError,
    EvaluationRequest,
    MarginSpec,
    ModelRef,
    parse_report,
)
from mlrollout_serving.contract.process import TERMINATION_LOG

EVALUATION_COMPONENT: Final = "evaluation"
CONTAINER: Final = "evaluate"
JOB_NAME_LABEL: Final = "job-name"  # set by the Job controller on the Job's pods
WORK_DIR: Final = "/tmp/evaluation"
TTL_SECONDS: Final = 86400  # a finished Job stays a day for `kubectl logs`; status keeps the answer
CPU_REQUEST: Final = "100m"


def service_account_name(md: str) -> str:
    """The evaluation pods' identity: no Role binds it, and its token is never mounted."""
    return f"{md[:52]}-evaluation"


def service_account(md: Manifest) -> Manifest:
    md_name = md["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(md, service_account_name(md_name), naming.base_labels(md_name, EVALUATION_COMPONENT)),
        "automountServiceAccountToken": False,
    }


def evaluation_job(md: Manifest, run: RunEvaluation) -> Manifest:
    """The Job that scores stable and candidate on the step's holdout (``run.job`` names it)."""
    assert run.stable.template is not None and run.candidate.template is not None
    stable_tpl = RevisionTemplate.from_json(run.stable.template)
    tpl = RevisionTemplate.from_json(run.candidate.template)
    md_name = md["metadata"]["name"]
    step, stable, cand = run.step, run.stable, run.candidate
    uris = (stable.resolved_uri or stable_tpl.model.uri, cand.resolved_uri or tpl.model.uri, step.dataset.uri)
    # the machine never asks for a Job whose revisions' credentials differ (`reading_credentials` and
    # `reading_registry` raise); a models:/ revision's tracking server and its Secret as its servers get them
    access = store_access(uris, reading_credentials((stable, cand)), reading_registry((stable, cand)))
    request = EvaluationRequest(
        stable=ModelRef(uri=locate(uris[0]), sha256=stable.sha256 or None),
        candidate=ModelRef(uri=locate(uris[1]), sha256=cand.sha256 or None),
        dataset=DatasetRef(
            uri=locate(uris[2]), sha256=step.dataset.sha256, label=step.dataset.label,
            format=step.dataset.format,
        ),
        metric=step.metric,
        margin=MarginSpec(relative=step.margin.relative, floor=step.margin.floor, absolute=step.margin.absolute),
        baseline=step.baseline,
        alpha=run.alpha,
        slices=tuple(step.slices or ()),
        resamples=step.resamples,
        seed=step.seed,
    )  # fmt: skip
    env = {
        EvaluateEnv.REQUEST: json.dumps(request.to_wire(), separators=(",", ":")),
        EvaluateEnv.TERMINATION_LOG: TERMINATION_LOG,
        EvaluateEnv.WORK_DIR: WORK_DIR,
    }
    limits = {"cpu": step.resources.cpu, "memory": step.resources.memory}
    container: Manifest = {
        "name": CONTAINER,
        "image": tpl.image,
        "command": [EVALUATE_COMMAND],
        "env": [*({"name": str(k), "value": v} for k, v in env.items()), *access.env],
        "resources": {"limits": limits, "requests": {"cpu": CPU_REQUEST, "memory": step.resources.memory}},
        # the report (at most 4096 bytes) is the termination message; a crash leaves its log's tail there
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": HARDENED_CONTAINER,
    }
    access.give(container)
    labels = naming.base_labels(md_name, EVALUATION_COMPONENT)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(md, run.job, labels),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(int(parse_duration(step.max_duration)), 1),
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": RESTRICTED_POD,
                    "serviceAccountName": access.service_account_name or service_account_name(md_name),
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": access.pod_volumes(),
                },
            },
        },
    }


def evaluation_fact(job_name: str, job: Mapping[str, Any] | None, pods: Iterable[Mapping[str, Any]]) -> EvaluationFact:
    """What the cluster says about one evaluation Job: missing, running, or finished with the report its pod
    left in its termination message (or, without one, what the Job and the pod said)."""
    if job is None:
        return EvaluationFact(job_name, "missing")
    conditions = {
        c.get("type"): c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"
    }
    failed = conditions.get("Failed")
    state: Literal["succeeded", "failed"]
    if "Complete" in conditions:
        state = "succeeded"
    elif failed is not None:
        state = "failed"
    else:
        return EvaluationFact(job_name, "running")
    detail = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ") if failed else ""
    mine = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL) == job_name]
    for pod in mine:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated")
            if cs.get("name") != CONTAINER or not terminated:
                continue
            message = terminated.get("message") or ""
            try:
                return EvaluationFact(job_name, state, parse_report(message), detail)
            except EvaluationFormatError as exc:
                said = f"exit code {terminated.get('exitCode')}, {terminated.get('reason', '')}: {message[-300:]}"
                detail = "; ".join(p for p in (detail, f"{exc} ({said.strip()})") if p)
    return EvaluationFact(job_name, state, None, detail or "its pod left no report")
