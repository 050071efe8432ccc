"""``mlrollout analyze --snapshot FILE.json [--policy FILE.yaml]``: judge a saved snapshot offline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlrollout.analysis.judge import judge
from mlrollout.analysis.snapshot import SnapshotError, parse_snapshot
from mlrollout.api.rolloutpolicy import RolloutPolicySpec

__all__ = ["cli_main"]


def _load(path: str, what: str) -> Any:
    text = Path(path).read_text()
    return json.loads(text) if what == "snapshot" else yaml.safe_load(text)


def _policy(raw: Any) -> RolloutPolicySpec | None:
    """A RolloutPolicy manifest or its bare spec (None: the built-in default)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("the policy file must hold a mapping")
    if raw.get("kind") == "RolloutPolicy" and "spec" in raw:
        raw = raw["spec"]
    return RolloutPolicySpec.model_validate(raw)


def cli_main(argv: list[str]) -> int:
    """Print the judgement as JSON; exit 0, or 2 with a one-line error for unreadable input."""
    parser = argparse.ArgumentParser(prog="mlrollout analyze", description="Judge a metrics snapshot offline.")
    parser.add_argument("--snapshot", required=True, help="snapshot JSON (format in docs/analysis.md)")
    parser.add_argument("--policy", help="RolloutPolicy manifest or spec, YAML or JSON (default: built-in)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        raw = _load(args.snapshot, "snapshot")
        policy = _policy(_load(args.policy, "policy") if args.policy else None)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # JSONDecodeError and ValidationError are ValueErrors
        kind = "invalid policy" if isinstance(exc, ValidationError) else "cannot read input"
        print(f"mlrollout analyze: {kind}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    try:
        snapshot = parse_snapshot(raw)
    except SnapshotError as exc:
        print(f"mlrollout analyze: invalid snapshot: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(judge(snapshot, policy).to_json(), indent=2))
    return 0
