"""The operator's scale figures against N, as one PNG for docs/operator.md (issue 19).

    .venv/bin/python bench/scale_plot.py

Reads ``bench/results/operator-scale.json`` (bench/operator_scale.py: CPU, RSS, reconcile and rollback
latency on hollow nodes; rollback both from the operator's verdict and from the judgement's injection, the
look wait included) and ``bench/results/analysis-batching.json`` (bench/analysis_batching.py:
Prometheus requests per analysis interval, looks alone and batched; and, when present,
``operator-scale-analysis.json`` from ``operator_scale.py --analysis``, the same from the operator) and writes
``docs/images/operator-scale.png``, each panel with the issue's goal where it sets one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
SCALE = ROOT / "bench" / "results" / "operator-scale.json"
BATCHING = ROOT / "bench" / "results" / "analysis-batching.json"
CLUSTER = ROOT / "bench" / "results" / "operator-scale-analysis.json"  # operator_scale.py --analysis
OUT = ROOT / "docs" / "images" / "operator-scale.png"


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    ordered = sorted(rows, key=lambda r: int(r["n"]))
    return [int(r["n"]) for r in ordered], [float(r[key]) for r in ordered]


def plot(scale: dict[str, Any], batching: dict[str, Any], out: Path, cluster: dict[str, Any] | None = None) -> None:
    sizes, goals = scale["sizes"], scale["goals"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    (cpu, rss), (latency, queries) = axes

    for key, label in (("idle_cores", "idle"), ("active_cores", "creating N ModelDeployments")):
        cpu.plot(*series(sizes, key), "o-", label=label)
    cpu.axhline(goals["cores"], color="grey", ls="--", label=f"goal at N=1,000: {goals['cores']:g} core")
    cpu.set(title="Operator CPU", ylabel="cores")

    rss.plot(*series(sizes, "peak_rss_mib"), "o-", label="peak RSS")
    rss.axhline(goals["rss_mib"], color="grey", ls="--", label=f"goal: {goals['rss_mib']:g} MB")
    rss.set(title="Operator memory", ylabel="MiB", ylim=(0, goals["rss_mib"] * 1.15))

    for key, label, style in (("reconcile_p50_s", "reconcile p50", "o-"), ("reconcile_p99_s", "reconcile p99", "o-"),
                              ("verdict_route_p50_s", "rollback verdict→route p50", "o-"),
                              ("verdict_route_max_s", "rollback verdict→route max", "o-"),
                              ("injection_route_p50_s", "rollback judgement written→route p50 (look wait in)", "s--"),
                              ("injection_route_max_s", "rollback judgement written→route max (look wait in)",
                               "s--")):  # fmt: skip
        latency.plot(*series([r for r in sizes if key in r], key), style, label=label)
    latency.axhline(goals["reconcile_p99_s"], color="grey", ls="--", label="goals: p99 2 s, verdict→route 1 s")
    latency.axhline(goals["verdict_route_s"], color="grey", ls=":")
    changes = "/".join(str(r["reconcile_samples"]) for r in sorted(sizes, key=lambda r: int(r["n"])))
    rollbacks = "/".join(str(r["rollback_samples"]) for r in sorted(sizes, key=lambda r: int(r["n"])))
    latency.set(title=f"Latency ({changes} spec changes, {rollbacks} rollbacks per N)", ylabel="seconds", yscale="log")

    for mode, label, color in (("alone", "each look alone", "C0"), ("batched", "looks batched", "C1")):
        picked = [r for r in batching["rows"] if r["mode"] == mode]
        if picked:
            queries.plot(*series(picked, "queries_per_interval"), "o-", color=color, label=label)
        for r in picked:  # a size where the looks did not keep up: the count is of the looks taken
            if r["looks_per_interval"] < 0.9 * r["n"]:
                text = f"{r['looks_per_interval']:.0f} of {r['n']} looks"
                where = (r["n"], r["queries_per_interval"])
                queries.annotate(text, where, textcoords="offset points", xytext=(-110, 4), fontsize=7, color=color)
        picked = [r for r in (cluster or {}).get("rows", []) if r["mode"] == mode]
        if picked:
            queries.plot(*series(picked, "queries_per_interval"), "s--", color=color, mfc="none",
                         label=f"{label}: the operator on hollow nodes")  # fmt: skip
        for r in picked:  # the operator's counts only where it took under half the looks (keeps it legible)
            if r["looks_per_interval"] < 0.5 * r["n"]:
                text = f"operator: {r['looks_per_interval']:.0f} of {r['n']}"
                where = (r["n"], r["queries_per_interval"])
                queries.annotate(text, where, textcoords="offset points", xytext=(-100, -12), fontsize=7, color=color)
    queries.set(title=f"Prometheus requests per {batching['analysis_interval_s']:g} s analysis interval",
                ylabel="requests", yscale="log")  # fmt: skip

    for ax in (cpu, rss, latency, queries):
        ax.set(xlabel="ModelDeployments (N)", xscale="log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left" if ax is queries else "best")  # clear of the look counts
    fig.suptitle("One mlrollout operator at N ModelDeployments (kubemark hollow nodes; real Prometheus)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cluster = json.loads(CLUSTER.read_text()) if CLUSTER.exists() else None
    plot(json.loads(SCALE.read_text()), json.loads(BATCHING.read_text()), args.out, cluster)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
