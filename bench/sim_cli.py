"""The command line shared by the simulation benchmarks (harm_power.py, rollout_power.py).

Each simulates rows with ``run(runs, seed)``, saves them as JSON and prints ``table(rows)`` as Markdown.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Rows = list[dict[str, Any]]


def simulation_main(
    doc: str | None,
    run: Callable[[int, int], Rows],
    table: Callable[[Rows], str],
    results: Path,
    default_runs: int,
    argv: list[str] | None = None,
) -> int:
    p = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    p.add_argument("--runs", type=int, default=default_runs, help=f"simulated runs per row (default {default_runs})")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--output", type=Path, default=results)
    args = p.parse_args(argv)
    rows = run(args.runs, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"runs": args.runs, "seed": args.seed, "rows": rows}, indent=2) + "\n")
    print(table(rows))
    return 0
