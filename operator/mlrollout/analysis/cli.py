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

__all__ = ["cli_main"]


def _load(path: str, what: str) -> Any:
    text = Path(path).read_text()
    return json.loads(text) if what == "snapshot" else yaml.safe_load(text)


def cli_main(argv: list[str]) -> int:
    """Print the verdict dict as JSON; exit 0, or 2 with a one-line error for unreadable input."""
    parser = argparse.ArgumentParser(prog="mlrollout analyze", description="Judge a metrics snapshot offline.")
    parser.add_argument("--snapshot", required=True, help="snapshot JSON (format in docs/analysis.md)")
    parser.add_argument("--policy", help="RolloutPolicy manifest or spec, YAML or JSON (default: built-in)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        snapshot = _load(args.snapshot, "snapshot")
        policy = _load(args.policy, "policy") if args.policy else None
        if policy is not None and not isinstance(policy, dict):
            raise ValueError("the policy file must hold a mapping")
        result = judge(snapshot, policy)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # JSONDecodeError and ValidationError are ValueErrors
        kind = "invalid policy" if isinstance(exc, ValidationError) else "cannot read input"
        print(f"mlrollout analyze: {kind}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    if result["reason"].startswith("invalid snapshot:"):
        print(f"mlrollout analyze: {result['reason']}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
