"""The model server's hot path before and after a change: the same wrk runs against two versions, alternately.

Each round starts the base version's server (its ``inference/`` tree taken from git with ``git archive``,
nothing checked out) and this worktree's, one after the other on the same pinned core, and runs wrk
(one JSON wine row, concurrency 1 and 16) against each. Alternating rounds spread the machine's changing
load over both versions; the report gives medians over the rounds of requests/s, wrk's p50 and the
server's CPU time per request (the least load-sensitive of the three), and the new/base ratios.

Usage (from the repository root):

    .venv/bin/python bench/serve_ab.py --base main [--rounds 5] [--duration 3]

Results: a table on stdout and bench/results/serve-ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import models  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

from serve_bench import WrkResult, json_body, lua_script, mlrollout_cmd, run_wrk, server_process  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve-ab.json"
CONCURRENCY = (1, 16)


def export(rev: str, into: Path) -> Path:
    """``inference/`` of ``rev``, written under ``into`` (git archive: the repository is only read)."""
    archive = subprocess.run(["git", "archive", rev, "inference"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "inference"


def one_round(label: str, source: Path | None, script: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start ``label``'s server (from ``source``, else this worktree) and run wrk at each concurrency."""
    wine = models.wine()
    port = free_port()
    previous = os.environ.get("PYTHONPATH")
    if source is not None:
        os.environ["PYTHONPATH"] = str(source)  # the child imports mlrollout_serving from there
    try:
        with server_process(mlrollout_cmd(wine, "wine", port), f"http://127.0.0.1:{port}/v2/health/ready",
                            args.server_core, workdir / f"{label}.log") as pid:  # fmt: skip
            url = f"http://127.0.0.1:{port}/v2/models/wine/infer"
            run_wrk(url, script, 1, 1, args.client_cores, pid)  # warm-up
            results: dict[str, WrkResult] = {}
            for c in CONCURRENCY:
                results[str(c)] = run_wrk(url, script, c, args.duration, args.client_cores, pid)
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    return {c: vars(r) for c, r in results.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--client-cores", default="0")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="serve-ab-") as tmp:
        workdir = Path(tmp)
        base_source = export(args.base, workdir)
        script = lua_script(workdir, "wine", json_body(models.wine().samples[:1]), None)
        versions: list[tuple[str, Path | None]] = [("base", base_source), ("new", None)]
        for i in range(args.rounds):
            for label, source in versions if i % 2 == 0 else versions[::-1]:
                runs[label].append(one_round(label, source, script, args, workdir))
            print(f"round {i + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", flush=True)
    summary: dict[str, Any] = {}
    print(f"{'concurrency':>11} | {'metric':>18} | {'base':>9} | {'new':>9} | new/base")
    for c in map(str, CONCURRENCY):
        for metric in ("rps", "p50", "cpu_us_per_request"):
            base = statistics.median(r[c][metric] for r in runs["base"])
            new = statistics.median(r[c][metric] for r in runs["new"])
            summary[f"c{c}_{metric}"] = {"base": base, "new": new, "ratio": round(new / base, 3)}
            scale = 1000 if metric == "p50" else 1
            print(f"{c:>11} | {metric:>18} | {base * scale:9.2f} | {new * scale:9.2f} | {new / base:.3f}")
    doc = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "base": args.base,
        "new": f"worktree at {head.strip()}",
        "rounds": args.rounds,
        "duration_s": args.duration,
        "load_after": round(os.getloadavg()[0], 2),
        "summary": summary,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
