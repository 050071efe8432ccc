"""Offline validation of manifests (`mlrollout validate`, `kubectl mlrollout lint`), and with a stated traffic
level, warnings for policy steps that cannot decide within their maxDuration (`--rps`).

Uses the same pydantic models as the operator, so a manifest that passes here is one the operator
understands; the CRDs generated from those models make the API server refuse the same manifests.
Every problem is reported with its field path; nothing stops at the first error.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlrollout.api import API_VERSION, GROUP, KINDS, ModelDeployment, RolloutPolicy
from mlrollout.api.common import DNS_LABEL_PATTERN, DURATION_PATTERN
from mlrollout.api.modeldeployment import QUANTITY_PATTERN, SHA256_PATTERN
from mlrollout.api.rolloutpolicy import MIN_MARGIN, NOT_BLANK_PATTERN
from mlrollout.api.uris import MODEL_URI_MESSAGE, MODEL_URI_PATTERN, URI_MESSAGE, URI_PATTERN
from mlrollout.plan import Assumptions, PlanError, plan, warnings
from mlrollout.policy import PolicyError, resolve_rollout_policy

_PATTERN_MESSAGES = {
    SHA256_PATTERN: "must be 64 lowercase hex characters (a sha256 digest)",
    DURATION_PATTERN: "must be a duration such as 30s, 5m, 1h30m or 250ms (no sign)",
    URI_PATTERN: URI_MESSAGE,
    MODEL_URI_PATTERN: MODEL_URI_MESSAGE,
    DNS_LABEL_PATTERN: "must be a DNS label (lowercase letters, digits and '-')",
    QUANTITY_PATTERN: "must be a Kubernetes quantity such as 500m, 2 or 512Mi",
    NOT_BLANK_PATTERN: "must not be blank",
}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _is_namespace(value: object) -> bool:
    """A namespace name as the API server takes it: a DNS label (it refuses any other namespace)."""
    return isinstance(value, str) and len(value) <= 63 and re.fullmatch(DNS_LABEL_PATTERN, value) is not None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one document, located by field path."""

    source: str
    document: int
    kind: str
    name: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: document {self.document}"
        what = f"{self.kind} {self.name}".strip()
        return f"{where} ({what}): {self.path}: {self.message}" if what else f"{where}: {self.path}: {self.message}"


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-wrap")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def _message(error: Any) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_MESSAGES:
        return f"{_PATTERN_MESSAGES[ctx['pattern']]} (got {error['input']!r})"
    loc = [str(part) for part in error.get("loc", ())]
    if error["type"] == "greater_than_equal" and "margins" in loc and loc[-1] in ("absolute", "floor"):
        return (
            f"must be at least {MIN_MARGIN:g} (got {error['input']!r}): no rollout collects enough requests to "
            "show a smaller margin, so promotion would be impossible"
        )
    if error["type"] == "value_error":
        return str(ctx.get("error", error["msg"]))
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return str(error["msg"])


def validate_document(doc: Any, source: str = "<input>", index: int = 1) -> tuple[list[Problem], Any]:
    """Problems of one parsed YAML document, and the model object when it is valid."""

    def problem(path: str, message: str, kind: str = "", name: str = "") -> Problem:
        return Problem(source, index, kind, name, path, message)

    if not isinstance(doc, dict):
        return [problem("(document)", "expected a mapping with apiVersion, kind, metadata and spec")], None
    kind = str(doc.get("kind", ""))
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = str(meta.get("name", "")) if meta else ""
    api_version = str(doc.get("apiVersion", ""))
    if not api_version.startswith(f"{GROUP}/"):
        return [], None  # another API's object (a Namespace, say): not ours to judge
    if api_version != API_VERSION:
        return [problem("apiVersion", f"must be {API_VERSION} (got {api_version!r})", kind, name)], None
    if kind not in KINDS:
        return [problem("kind", f"must be one of {', '.join(KINDS)} (got {kind!r})", kind, name)], None
    problems: list[Problem] = []
    if not name or not _NAME.match(name) or len(name) > 253:
        problems.append(problem("metadata.name", "required, a DNS subdomain name", kind, name))
    if kind != "ModelDeployment" and meta and "namespace" in meta:
        problems.append(problem("metadata.namespace", f"{kind} is cluster-scoped: remove the namespace", kind, name))
    elif meta and "namespace" in meta and not _is_namespace(meta["namespace"]):
        message = f"{_PATTERN_MESSAGES[DNS_LABEL_PATTERN]}, at most 63 characters (got {meta['namespace']!r})"
        problems.append(problem("metadata.namespace", message, kind, name))
    try:
        obj = KINDS[kind].model_validate(doc)
    except ValidationError as exc:
        problems += [problem(_path(e["loc"]), _message(e), kind, name) for e in exc.errors()]
        return problems, None
    return problems, (obj if not problems else None)


def validate_documents(documents: Sequence[tuple[str, int, Any]]) -> list[Problem]:
    """Problems across documents, including overrides checked against policies found among them."""
    problems: list[Problem] = []
    valid: list[tuple[str, int, Any]] = []
    for source, index, doc in documents:
        found, obj = validate_document(doc, source, index)
        problems += found
        if obj is not None:
            valid.append((source, index, obj))
    policies = [obj for _, _, obj in valid if isinstance(obj, RolloutPolicy)]
    known = {str(p.metadata.get("name")) for p in policies}
    for source, index, obj in valid:
        if not isinstance(obj, ModelDeployment) or obj.spec.strategy is None:
            continue
        ref = obj.spec.rollout_policy_ref
        if ref is not None and ref.name not in known:
            continue  # the policy lives in the cluster; the operator checks the override there
        try:
            resolve_rollout_policy(obj, {}, policies if ref is not None else [])
        except PolicyError as exc:
            path, _, message = str(exc).partition(": ")
            problems.append(Problem(source, index, "ModelDeployment", str(obj.metadata.get("name")), path, message))
    return problems


def load_documents(path: Path) -> tuple[list[tuple[str, int, Any]], list[Problem]]:
    """Every YAML document in a file (empty documents skipped), or the parse error as a problem."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        return [], [Problem(str(path), 0, "", "", "(file)", f"cannot read YAML: {exc}".replace("\n", " "))]
    return [(str(path), i, d) for i, d in enumerate(docs, start=1)], []


def traffic_options(parser: argparse.ArgumentParser) -> None:
    """The options that make validation also check each policy's steps can decide at a stated traffic."""
    group = parser.add_argument_group("time to decision (warnings only)")
    group.add_argument("--rps", type=float, help="warn when a policy's steps cannot decide at this traffic")
    group.add_argument("--base-error-rate", type=float, default=0.01, help="stable's error rate (with --rps)")
    group.add_argument("--latency-p99", type=float, default=0.05, help="stable's p99 latency, seconds (with --rps)")


def planning_warnings(documents: Sequence[tuple[str, int, Any]], assumptions: Assumptions) -> list[Problem]:
    """For each valid RolloutPolicy, the steps that cannot decide within maxDuration at the stated traffic."""
    out = []
    for source, index, doc in documents:
        found, obj = validate_document(doc, source, index)
        if found or not isinstance(obj, RolloutPolicy):
            continue
        name = str(obj.metadata.get("name", ""))
        for path, message in warnings(plan(obj.spec, assumptions), assumptions):
            out.append(Problem(source, index, "RolloutPolicy", name, path, message))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`mlrollout validate FILE... [--rps R]`: print every problem with its field path; exit 1 if any.

    With ``--rps``, also warn (exit status unchanged) for every policy step that cannot decide within its
    ``maxDuration`` at that traffic (``mlrollout plan`` shows the whole forecast).
    """
    parser = argparse.ArgumentParser(prog="mlrollout validate", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="YAML files (multi-document allowed)")
    traffic_options(parser)
    args = parser.parse_args(argv)
    documents: list[tuple[str, int, Any]] = []
    problems: list[Problem] = []
    for path in args.files:
        docs, errors = load_documents(path)
        documents += docs
        problems += errors
    problems += validate_documents(documents)
    for p in problems:
        print(p, file=sys.stderr)
    if args.rps is not None:
        try:
            assumptions = Assumptions(args.rps, args.base_error_rate, args.latency_p99)
        except PlanError as exc:
            print(f"mlrollout validate: {exc}", file=sys.stderr)
            return 2
        for warning in planning_warnings(documents, assumptions):
            print(f"warning: {warning}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {len(documents)} document(s)", file=sys.stderr)
        return 1
    print(f"{len(documents)} document(s) valid")
    return 0
