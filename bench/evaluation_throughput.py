"""How fast `mlrollout evaluate` scores a holdout, and how much memory a large one costs (issue #16).

Goals from the issue: rows scored per second on a 100k-row holdout at least 80 % of a plain onnxruntime
loop's, and a 1 GB CSV that does not need 1 GB of memory.

Both sides score the same two real models (scikit-learn's wine data: the logistic regression and the
worse one the tests use) on the same CSV, in fresh processes, and are timed from start to exit:

- anchor: the plain loop a person would write: ``numpy.loadtxt`` reads the whole CSV, both sessions run
  over it in 8,192-row batches, and the accuracies are counted (no test, no interval, no streaming);
- ours: ``mlrollout-evaluate`` as the Job runs it (digests checked, the CSV streamed in chunks of 8,192
  lines, both models scored, the paired exact McNemar test, the interval, the majority baseline, the JSON
  report).

Same models, same CSV, same batch (8,192 rows) on both sides; the loop's sessions take onnxruntime's default
threads, ours the CPUs it may use (2 here) without spinning.

The holdout is the wine features with Gaussian noise (5 % of each column's spread) and the label of the
row it came from, so both models have something to get wrong. Peak memory is the process's ``ru_maxrss``;
bytes per row is what the peak grows by per extra row, from ``--rows`` to the large CSV (the fixed cost of
the interpreter, the libraries and the two sessions left out). Medians over ``--repeats``, the two sides
taking turns within each repeat, at ``--rows``, twice that, and ``--million`` rows.

Where the difference comes from: each side's start-up alone (a fresh process importing what it imports
before it reads a byte: numpy and onnxruntime for the loop; for ours the evaluation's modules too, and
the wire contract measured apart: it imported pydantic until 5 Dec, 0.15 s), medians over ``--repeats`` x 4
taking turns; and a line ``seconds = fixed + rows / rate`` fitted per side to the three sizes, which says
from how many rows on ours reaches 80 % of the loop's rows per second.

Usage (from the repository root):

    .venv/bin/python bench/evaluation_throughput.py [--rows 100000] [--million 1000000] [--big-mib 1024] [--repeats 3]
        [--one-cpu 1] [--output bench/results/evaluation-throughput.json]

``--one-cpu``: the two sides again at ``--rows``, each pinned to one core (``taskset -c 0``), as in the Job
with its default ``limits.cpu: 1``.

Results: a table on stdout and bench/results/evaluation-throughput.json (``--output``: another file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import models  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "evaluation-throughput.json"
PACKAGES = (ROOT / "inference" / "mlrollout_serving", ROOT / "operator" / "mlrollout")
MIB = 1 << 20
BIN = Path(sys.executable).parent
BYTES_PER_ROW = 100  # about what a noisy wine row takes in the CSV (13 numbers of 6 significant digits and a label)

ANCHOR = """
import sys, numpy as np, onnxruntime as ort
stable, candidate, data = sys.argv[1:4]
table = np.loadtxt(data, delimiter=",", skiprows=1, dtype=np.float32)
x, y = table[:, :-1], table[:, -1].astype(np.int64)
right = []
for path in (stable, candidate):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    labels = np.concatenate([session.run(None, {name: x[i : i + 8192]})[0] for i in range(0, len(x), 8192)])
    right.append(int((labels == y).sum()))
print(right)
"""

MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
seconds = time.perf_counter() - start
if done.returncode not in (0, 1):
    sys.exit("failed: " + done.stderr[-2000:])
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(seconds, used.ru_maxrss * 1024, used.ru_utime + used.ru_stime)
"""


def holdout(path: Path, rows: int, seed: int = 1) -> str:
    """Write a CSV of ``rows`` noisy wine rows (13 features, then ``quality``); its sha256."""
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    rng = np.random.default_rng(seed)
    spread = x.std(axis=0) * 0.05
    with path.open("w") as out:
        out.write(",".join(f"f{i}" for i in range(x.shape[1])) + ",quality\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            pick = rng.integers(0, len(x), n)
            noisy = x[pick] + rng.normal(0.0, 1.0, (n, x.shape[1])) * spread
            block = np.column_stack([noisy, y[pick]])
            np.savetxt(out, block, delimiter=",", fmt=["%.6g"] * x.shape[1] + ["%d"])
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for piece in iter(lambda: f.read(MIB), b""):
            digest.update(piece)
    return digest.hexdigest()


def measure(argv: list[str]) -> tuple[float, int, float]:
    """Seconds from start to exit, peak RSS (bytes) and CPU seconds (user + system, all threads) of ``argv``
    in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], check=True, capture_output=True, text=True)
    seconds, rss, cpu = out.stdout.split()
    return float(seconds), int(rss), float(cpu)


def ours(stable: Path, candidate: Path, data: Path, sha: str) -> list[str]:
    return [str(BIN / "mlrollout-evaluate"), "--stable", str(stable), "--candidate", str(candidate),
            "--data", str(data), "--data-sha256", sha, "--label", "quality", "--json"]  # fmt: skip


def anchor(stable: Path, candidate: Path, data: Path) -> list[str]:
    return [sys.executable, "-c", ANCHOR, str(stable), str(candidate), str(data)]


STARTUP = {  # what each side imports before it reads a byte (ours loads onnxruntime with the first model)
    "interpreter": "pass",
    "anchor": "import numpy, onnxruntime",
    "contract": "import numpy, onnxruntime, mlrollout_serving.contract.evaluation",
    "ours": "import onnxruntime, mlrollout_serving.evaluation.cli",
}


def startup(repeats: int) -> dict[str, float]:
    """Median seconds from start to exit of a process that only imports (``STARTUP``), the sides in turn."""
    samples: dict[str, list[float]] = {name: [] for name in STARTUP}
    for _ in range(repeats):
        for name, code in STARTUP.items():
            samples[name].append(measure([sys.executable, "-c", code])[0])
    return {name: statistics.median(s) for name, s in samples.items()}


def fit(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + rows * per_row`` over (rows, seconds); (fixed, per_row)."""
    rows = np.array(list(points), dtype=float)
    seconds = np.array(list(points.values()))
    per_row, fixed = np.polyfit(rows, seconds, 1)
    return float(fixed), float(per_row)


def crossover(anchor: tuple[float, float], ours: tuple[float, float], goal: float = 0.8) -> float | None:
    """Rows from which ours scores at least ``goal`` x the anchor's rows per second, by the fitted lines:
    anchor(n) >= goal * ours(n); None when ours' per-row cost keeps it below the goal at any size."""
    (fa, pa), (fo, po) = anchor, ours
    if pa - goal * po <= 0:
        return None
    return max(0.0, (goal * fo - fa) / (pa - goal * po))


def summary(name: str, samples: list[tuple[float, int, float]], rows: int) -> dict[str, Any]:
    seconds = statistics.median(s for s, _, _ in samples)
    rss = statistics.median(r for _, r, _ in samples)
    cpu = statistics.median(c for _, _, c in samples)
    print(f"  {name:<8} {rows:>10,} rows  {seconds:7.2f} s  {rows / seconds:>11,.0f} rows/s  peak {rss / MIB:7.1f} MiB"
          f"  cpu {cpu:6.2f} s", flush=True)  # fmt: skip
    return {"seconds": seconds, "rows_per_second": rows / seconds, "peak_rss_mib": rss / MIB, "cpu_seconds": cpu,
            "samples": [{"seconds": s, "peak_rss_mib": r / MIB, "cpu_seconds": c} for s, r, c in samples]}  # fmt: skip


def side_by_side(argvs: dict[str, list[str]], repeats: int, rows: int) -> dict[str, dict[str, Any]]:
    """Each repeat runs every side once, in turn, so a noisy machine slows them alike; medians per side."""
    samples: dict[str, list[tuple[float, int, float]]] = {name: [] for name in argvs}
    for _ in range(repeats):
        for name, argv in argvs.items():
            samples[name].append(measure(argv))
    return {name: summary(name, runs, rows) for name, runs in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the throughput holdout")
    ap.add_argument("--million", type=int, default=1_000_000, help="rows of the third side-by-side size (0: skip)")
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the large CSV (0: skip it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one-cpu", type=int, default=1, help="also both sides at --rows pinned to one CPU (0: skip)")
    ap.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes (keep earlier runs' files)")
    args = ap.parse_args()
    # The Job runs from an image whose modules carry valid bytecode (images/ocibuild.py), and pip compiled
    # numpy's and onnxruntime's here; an editable checkout on a machine with PYTHONDONTWRITEBYTECODE has
    # none of its own, so without this ours alone would compile its modules in every process it starts.
    subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, PACKAGES)], check=True)
    stable, candidate = models.wine(), models.wine_worse()
    result: dict[str, Any] = {"rows": args.rows, "repeats": args.repeats, "models": [stable.name, candidate.name],
                              "bytecode": "compiled before measuring, as in the image",
                              "load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mlrollout-bench-eval-") as tmp:
        sizes = [args.rows, 2 * args.rows, *([args.million] if args.million > 2 * args.rows else [])]
        for rows in sizes:
            data = Path(tmp) / f"holdout-{rows}.csv"
            sha = holdout(data, rows)
            print(f"{rows:,} rows, {data.stat().st_size / MIB:.1f} MiB CSV, medians of {args.repeats}:")
            sides = {
                "anchor": anchor(stable.path, candidate.path, data),
                "ours": ours(stable.path, candidate.path, data, sha),
            }
            for name, measured in side_by_side(sides, args.repeats, rows).items():
                result[f"{name}_{rows}"] = measured
            data.unlink()
        small, large = args.rows, 2 * args.rows
        for side in ("anchor", "ours"):  # the per-row rate without the process's start-up (imports, model loads)
            extra = result[f"{side}_{large}"]["seconds"] - result[f"{side}_{small}"]["seconds"]
            result[f"{side}_marginal_rows_per_second"] = (large - small) / extra if extra > 0 else None
        end_to_end = result[f"ours_{small}"]["rows_per_second"] / result[f"anchor_{small}"]["rows_per_second"]
        result["throughput_ratio"] = end_to_end
        a, o = result["anchor_marginal_rows_per_second"], result["ours_marginal_rows_per_second"]
        result["marginal_ratio"] = o / a if a and o else None  # None: start-up noise swamped the extra rows
        shown = f"{result['marginal_ratio']:.2f}" if result["marginal_ratio"] else "n/a (start-up noise)"
        print(
            f"ours / anchor at {small:,} rows, start to exit: {end_to_end:.2f}; per extra row: {shown} (goal >= 0.80)"
        )
        lines = {side: fit({n: result[f"{side}_{n}"]["seconds"] for n in sizes}) for side in ("anchor", "ours")}
        cross = crossover(lines["anchor"], lines["ours"])
        result["fit"] = {side: {"fixed_seconds": f, "rows_per_second": 1 / p if p > 0 else None}
                         for side, (f, p) in lines.items()}  # fmt: skip
        result["rows_for_0_8"] = cross
        starts = startup(4 * args.repeats)
        result["startup_seconds"] = starts
        print("start-up alone (medians): " + ", ".join(f"{k} {v:.3f} s" for k, v in starts.items()))
        print(f"fitted fixed cost: anchor {lines['anchor'][0]:.3f} s, ours {lines['ours'][0]:.3f} s; per row: ours / "
              f"anchor {lines['ours'][1] / lines['anchor'][1]:.2f}; ours reaches 0.80 from "
              f"{'never' if cross is None else f'{cross:,.0f}'} rows")  # fmt: skip
        result["ratios"] = {
            str(rows): result[f"ours_{rows}"]["rows_per_second"] / result[f"anchor_{rows}"]["rows_per_second"]
            for rows in sizes
        }
        print("rows        anchor s   ours s   ours/anchor (rows per second)   peak MiB anchor / ours")
        for rows in sizes:
            a_, o_ = result[f"anchor_{rows}"], result[f"ours_{rows}"]
            print(f"{rows:>10,}  {a_['seconds']:8.2f} {o_['seconds']:8.2f}   {result['ratios'][str(rows)]:5.2f}"
                  f"                         {a_['peak_rss_mib']:6.1f} / {o_['peak_rss_mib']:6.1f}")  # fmt: skip
        if args.one_cpu:  # the Job's default limits.cpu: 1, as an affinity mask: no second core for either side
            data = Path(tmp) / "holdout-one-cpu.csv"
            sha = holdout(data, small)
            print(f"{small:,} rows on one CPU (taskset -c 0), medians of {args.repeats}:")
            pinned = {"anchor": ["taskset", "-c", "0", *anchor(stable.path, candidate.path, data)],
                      "ours": ["taskset", "-c", "0", *ours(stable.path, candidate.path, data, sha)]}  # fmt: skip
            one = side_by_side(pinned, args.repeats, small)
            result[f"one_cpu_{small}"] = {**one, "ratio": one["ours"]["rows_per_second"] /
                                          one["anchor"]["rows_per_second"]}  # fmt: skip
            print(f"  ours / anchor on one CPU: {result[f'one_cpu_{small}']['ratio']:.2f}")
            data.unlink()
        if args.big_mib:
            big = Path(tmp) / "big.csv"
            rows = args.big_mib * MIB // BYTES_PER_ROW
            started = time.perf_counter()
            sha = holdout(big, rows)
            size = big.stat().st_size
            took = time.perf_counter() - started
            print(f"large CSV: {size / MIB:,.0f} MiB, {rows:,} rows (written in {took:.0f} s), one run")
            result["large"] = {"csv_mib": size / MIB, "rows": rows}
            large = side_by_side({"ours": ours(stable.path, candidate.path, big, sha)}, 1, rows)
            result["large"]["ours"] = large["ours"]
            result["large"]["peak_over_csv"] = result["large"]["ours"]["peak_rss_mib"] / (size / MIB)
            grown = (result["large"]["ours"]["peak_rss_mib"] - result[f"ours_{small}"]["peak_rss_mib"]) * MIB
            result["large"]["bytes_per_row"] = grown / (rows - small)
            print(f"  ours' peak memory over the CSV's size: {result['large']['peak_over_csv']:.2f}; "
                  f"{result['large']['bytes_per_row']:.1f} bytes per extra row")  # fmt: skip
    result["load_average_at_end"] = os.getloadavg()  # other work on the machine slows both sides, not alike
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
