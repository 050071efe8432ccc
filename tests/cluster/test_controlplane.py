"""Our CRDs on a real API server: names, explain, printer columns, examples, validation, status.

Expected values are read from the generated CRD files and the shared invalid-manifest table, so the
tests check the server against our sources, not against copies of them.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.cluster.kube import CLUSTER_DIR, CRD_DIR, REPO, ControlPlane, Kubectl
from tests.support.invalid_manifests import CASES, Case

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
SERVER_CASES = [c for c in CASES if c.server]
CLUSTER_SCOPED = {"RolloutPolicy", "FallbackPolicy", "Namespace"}


def crd_files() -> dict[str, dict[str, Any]]:
    """The generated CRDs by kind."""
    docs = [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))]
    return {d["spec"]["names"]["kind"]: d for d in docs}


def in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A copy of ``doc`` placed in ``namespace`` when the kind is namespaced."""
    doc = copy.deepcopy(doc)
    if doc["kind"] not in CLUSTER_SCOPED:
        doc["metadata"]["namespace"] = namespace
    return doc


def squash(text: str) -> str:
    return " ".join(text.split())


def minimal_md(namespace: str) -> dict[str, Any]:
    """examples/01-minimal.yaml, in the test's namespace."""
    [doc] = [d for d in yaml.safe_load_all((REPO / "examples" / "01-minimal.yaml").read_text()) if d]
    return in_namespace(doc, namespace)


def test_crds_are_established_with_names_and_categories(kubectl: Kubectl, crds: list[str]) -> None:
    expected = crd_files()
    assert set(expected) == {"ModelDeployment", "RolloutPolicy", "FallbackPolicy"}
    for kind, crd in expected.items():
        live = kubectl.json("get", "crd", crd["metadata"]["name"])
        names = live["spec"]["names"]
        assert names["shortNames"] == crd["spec"]["names"]["shortNames"]
        assert "mlrollout" in names["categories"]
        assert live["spec"]["scope"] == crd["spec"]["scope"]
        conditions = {c["type"]: c["status"] for c in live["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True", kind
    short = {kind: crd["spec"]["names"]["shortNames"] for kind, crd in expected.items()}
    assert short == {"ModelDeployment": ["md"], "RolloutPolicy": ["rp"], "FallbackPolicy": ["fp"]}
    # The real client resolves the short names and the category through discovery.
    listed = kubectl("api-resources", "--api-group=mlrollout.io", "-o", "wide").stdout
    for kind, crd in expected.items():
        row = next(line for line in listed.splitlines() if re.search(rf"\s{kind}\s", line))
        assert crd["spec"]["names"]["shortNames"][0] in row.split() and "mlrollout" in row
    kubectl("get", "md,rp,fp", "--all-namespaces")
    kubectl("get", "mlrollout", "--all-namespaces")


def test_explain_shows_the_field_descriptions(kubectl: Kubectl, crds: list[str]) -> None:
    schema = crd_files()["ModelDeployment"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    model = schema["properties"]["spec"]["properties"]["model"]
    out = squash(kubectl("explain", "modeldeployment.spec.model").stdout)
    assert squash(model["description"]) in out
    for field, sub in model["properties"].items():
        assert field in out
        assert squash(sub["description"]) in out, field
    # Short name and a deeper path work too.
    deeper = squash(kubectl("explain", "md.spec.model.sha256").stdout)
    assert squash(model["properties"]["sha256"]["description"]) in deeper


def status_value(schema: dict[str, Any], field: str) -> Any:
    """A valid, recognisable value for a status field, derived from its schema."""
    if "enum" in schema:
        return schema["enum"][-1]
    if schema.get("type") == "integer":
        return 7
    return f"v-{field}"[: schema.get("maxLength", 64)]


def test_printer_columns_show_in_kubectl_get(kubectl: Kubectl, namespace: str) -> None:
    crd = crd_files()["ModelDeployment"]
    version = crd["spec"]["versions"][0]
    columns = version["additionalPrinterColumns"]
    status_schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    doc = minimal_md(namespace)
    name = doc["metadata"]["name"]
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    status: dict[str, Any] = {}
    for col in columns:
        match = re.fullmatch(r"\.status\.(\w+)", col["jsonPath"])
        if match:
            status[match[1]] = status_value(status_schema[match[1]], match[1])
    assert status, "expected printer columns showing status fields"
    kubectl("-n", namespace, "patch", "md", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))  # fmt: skip
    header, row = kubectl("-n", namespace, "get", "md", name).stdout.splitlines()
    assert header.split() == ["NAME"] + [c["name"].upper() for c in columns]
    assert row.split()[0] == name
    for value in status.values():
        assert str(value) in row.split(), (value, row)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted_by_the_server(kubectl: Kubectl, dry_run_namespace: str, example: Path) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert docs
    placed = [in_namespace(d, dry_run_namespace) for d in docs]
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(placed)).stdout
    assert out.count("(server dry run)") == len(docs), out


def test_examples_cover_every_kind() -> None:
    kinds = {d["kind"] for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d}
    assert {"ModelDeployment", "RolloutPolicy", "FallbackPolicy"} <= kinds


def test_invalid_table_is_large_enough() -> None:
    assert len(SERVER_CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", SERVER_CASES, ids=[c.id for c in SERVER_CASES])
def test_invalid_manifest_is_rejected_by_the_server(kubectl: Kubectl, dry_run_namespace: str, case: Case) -> None:
    docs = [d if case.keep_namespace else in_namespace(d, dry_run_namespace) for d in case.documents()]
    *extra, manifest = docs
    if extra:
        kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(extra))
    body = json.dumps(manifest)
    # The client alone accepts it: the rejection below is the API server's (schema, CEL, strict fields).
    kubectl("create", "--dry-run=client", "--validate=false", "-f", "-", input=body)
    proc = kubectl("create", "--dry-run=server", "-f", "-", input=body, check=False)
    assert proc.returncode != 0, f"the server accepted {case.id}: {proc.stdout}"
    err = proc.stderr
    assert re.search(r"^(Error from server|The \w+ \"bad\" is invalid:)", err), err
    named = case.server_says or case.path
    assert named in err, f"{named!r} not named in: {err}"


def test_status_patch_keeps_generation_and_spec_change_bumps_it(kubectl: Kubectl, namespace: str) -> None:
    doc = minimal_md(namespace)
    name = doc["metadata"]["name"]
    created = kubectl.json("create", "-f", "-", input=json.dumps(doc))
    gen = created["metadata"]["generation"]

    def get() -> dict[str, Any]:
        obj: dict[str, Any] = kubectl.json("-n", namespace, "get", "md", name)
        return obj

    after_status: dict[str, Any] = kubectl.json(
        "-n", namespace, "patch", "md", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"observedGeneration": gen, "phase": "Progressing"}}),
    )  # fmt: skip
    assert after_status["metadata"]["generation"] == gen
    assert after_status["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert get()["status"]["phase"] == "Progressing"

    # Status written through the main resource is ignored: the subresource owns it.
    kubectl("-n", namespace, "patch", "md", name, "--type=merge", "-p", json.dumps({"status": {"phase": "Healthy"}}))
    assert get()["status"]["phase"] == "Progressing"
    assert get()["metadata"]["generation"] == gen

    # A spec change bumps the generation, and a spec write through the status subresource is ignored.
    kubectl("-n", namespace, "patch", "md", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"spec": {"replicas": 5}}))  # fmt: skip
    assert get()["metadata"]["generation"] == gen
    assert get()["spec"].get("replicas") != 5
    kubectl("-n", namespace, "patch", "md", name, "--type=merge", "-p", json.dumps({"spec": {"replicas": 3}}))
    changed = get()
    assert changed["metadata"]["generation"] == gen + 1
    assert changed["spec"]["replicas"] == 3
    assert changed["status"]["observedGeneration"] == gen


def test_controller_manager_runs_the_core_controllers(kubectl: Kubectl, namespace: str) -> None:
    """Deployment -> ReplicaSet -> Pods, ServiceAccounts with tokens, and owner-reference garbage collection."""
    kubectl("-n", namespace, "create", "deployment", "web", "--image=registry.invalid/web:1", "--replicas=2")
    kubectl("-n", namespace, "wait", "--for=create", "--timeout=90s", "serviceaccount/default")
    kubectl("-n", namespace, "wait", "--for=jsonpath={.status.replicas}=2", "--timeout=90s", "deployment/web")
    [rs] = kubectl.json("-n", namespace, "get", "replicasets", "-l", "app=web")["items"]
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    pods = kubectl.json("-n", namespace, "get", "pods", "-l", "app=web")["items"]
    assert len(pods) == 2 and all(p["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"] for p in pods)
    token = kubectl("-n", namespace, "create", "token", "default").stdout.strip()
    review = kubectl.json("create", "-f", "-", input=json.dumps(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    ))  # fmt: skip
    assert review["status"]["user"]["username"] == f"system:serviceaccount:{namespace}:default"
    kubectl("-n", namespace, "delete", "deployment", "web", "--cascade=background")
    kubectl("-n", namespace, "wait", "--for=delete", "--timeout=90s", f"replicaset/{rs['metadata']['name']}")


def test_the_aggregation_layer_is_configured(kubectl: Kubectl, control_plane: ControlPlane) -> None:
    """The front proxy of e2e/cluster/up, which an APIService (metrics.k8s.io in the e2e tier) needs: the API
    server publishes its request-header CA (a CA of its own, not the client CA) and header names to extension
    API servers, as kube-system/extension-apiserver-authentication."""
    data = kubectl.json("-n", "kube-system", "get", "configmap", "extension-apiserver-authentication")["data"]
    assert json.loads(data["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(data["requestheader-group-headers"]) == ["X-Remote-Group"]
    assert json.loads(data["requestheader-extra-headers-prefix"]) == ["X-Remote-Extra-"]
    front_proxy_ca = (control_plane.state_dir / "pki" / "front-proxy-ca.crt").read_text()
    assert data["requestheader-client-ca-file"].strip() == front_proxy_ca.strip()
    assert data["client-ca-file"].strip() != front_proxy_ca.strip()


# --- the scripts themselves ---------------------------------------------------------------------


def pids(control_plane: ControlPlane) -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in sorted((control_plane.state_dir / "pids").glob("*.pid"))}


def test_up_is_idempotent_and_status_reports_every_component(control_plane: ControlPlane) -> None:
    before = pids(control_plane)
    assert set(before) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    up = subprocess.run(
        ["bash", str(CLUSTER_DIR / "up")], capture_output=True, text=True, env=dict(control_plane.env), check=True
    )
    assert up.stdout.strip() == str(control_plane.kubeconfig)
    assert pids(control_plane) == before
    status = subprocess.run(
        ["bash", str(CLUSTER_DIR / "status")], capture_output=True, text=True, env=dict(control_plane.env), check=False
    )
    assert status.returncode == 0, status.stdout
    for component, pid in before.items():
        assert re.search(rf"^{component}\s+running \(pid {pid}\)$", status.stdout, re.MULTILINE), status.stdout
    assert "readyz:     ok" in status.stdout


def test_status_fails_for_a_stopped_control_plane(control_plane: ControlPlane, tmp_path: Path) -> None:
    env = {**control_plane.env, "MLROLLOUT_STATE": str(tmp_path / "nothing-here")}
    status = subprocess.run(["bash", str(CLUSTER_DIR / "status")], capture_output=True, text=True, env=env, check=False)
    assert status.returncode != 0
    assert "kube-apiserver           stopped" in status.stdout


def test_missing_prerequisite_fails_loudly(control_plane: ControlPlane, tmp_path: Path) -> None:
    """Without openssl on PATH, `up` stops at once and says what to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "awk", "cat", "date", "printf"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {**control_plane.env, "PATH": str(bin_dir), "MLROLLOUT_STATE": str(tmp_path / "state")}
    up = subprocess.run([str(bin_dir / "bash"), str(CLUSTER_DIR / "up")], capture_output=True, text=True, env=env)
    assert up.returncode != 0
    assert "'openssl' not found" in up.stderr and "apt-get install -y openssl" in up.stderr, up.stderr
    assert not (tmp_path / "state").exists()
