"""``mlrollout evaluate`` and ``mlrollout-evaluate`` (the Job's command): one program, two ways in.

A data scientist passes flags; the operator's Job passes the whole request as JSON in
``MLROLLOUT_EVALUATION_REQUEST`` (:class:`~mlrollout_serving.contract.evaluation.EvaluationRequest`). Either
way the report goes to stdout (a table, or ``--json``), to ``--termination-log`` when given (compact JSON
within the kubelet's 4096 bytes: how the operator reads it), and the exit code says the verdict: 0 pass,
1 fail or inconclusive, 2 bad input, 3 the evaluation itself broke.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlrollout_serving.contract.evaluation import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    EvaluateEnv,
    EvaluationReport,
    EvaluationRequest,
)
from mlrollout_serving.contract.process import REGISTRY_URI_FLAG, REGISTRY_URI_HELP, registry_header
from mlrollout_serving.contract.startup import LOG_FORMAT
from mlrollout_serving.evaluation.dataset import whole_file_budget
from mlrollout_serving.evaluation.run import capped, evaluate
from mlrollout_serving.evaluation.table import render

log = logging.getLogger("mlrollout_serving.evaluation")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlrollout evaluate",
        description="Score stable and candidate ONNX models on a labelled holdout and compare them with paired "
        "tests: is the candidate no worse than stable (within the margin) and better than a trivial baseline?",
    )
    p.add_argument(
        "--stable", help="the stable model: a path, file://, http(s)://, s3://, gs:// (any URI the model server reads)"
    )
    p.add_argument("--candidate", help="the candidate model, the same way")
    p.add_argument("--data", help="the labelled holdout (CSV with a header row, or .npz)")
    p.add_argument("--label", help="the label column (CSV) or array (.npz)")
    p.add_argument("--metric", default="accuracy", choices=(*CLASSIFICATION_METRICS, *REGRESSION_METRICS))
    p.add_argument("--margin", type=float, help="how much worse than stable still passes, relative (0.01 = 1%%)")
    p.add_argument("--absolute-margin", type=float, help="the margin in the metric's unit instead (e.g. 0.005)")
    p.add_argument("--margin-floor", type=float, help="with --margin: the smallest margin, in the metric's unit")
    p.add_argument("--baseline", choices=("majority", "mean", "none"), help="the trivial model to beat (default: "
                   "majority for classification metrics, mean for mae and rmse)")  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.05, help="1 - the confidence of every interval (default 0.05)")
    p.add_argument("--slice", action="append", default=[], dest="slices", metavar="COLUMN",
                   help="compare per value of this column too (repeatable; Bonferroni-corrected)")  # fmt: skip
    p.add_argument("--format", choices=("csv", "npz"), help="the holdout's format (default: from its name)")
    p.add_argument("--stable-sha256", help="expected sha256 of the stable model")
    p.add_argument("--candidate-sha256", help="expected sha256 of the candidate model")
    p.add_argument("--data-sha256", help="expected sha256 of the holdout")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument(
        "--termination-log", type=Path, help=f"also write the compact report here [${EvaluateEnv.TERMINATION_LOG}]"
    )
    p.add_argument(
        REGISTRY_URI_FLAG, dest="registry_uri",
        help=f"{REGISTRY_URI_HELP}: only URLs under it (a models:/ version's resolved file) get them, as in the "
        f"model server [${EvaluateEnv.REGISTRY_URI}]",
    )  # fmt: skip
    p.add_argument(
        "--work-dir",
        type=Path,
        help=f"where downloads go (models until loaded; a remote holdout is kept) [${EvaluateEnv.WORK_DIR}]",
    )
    return p


def request_from(ns: argparse.Namespace, env: Mapping[str, str]) -> EvaluationRequest:
    """The request from the environment (the Job), else from the flags; ValueError says what is wrong (an
    ``EvaluationFormatError`` names the field)."""
    text = env.get(EvaluateEnv.REQUEST)
    if text and ns.stable is None:
        return EvaluationRequest.from_json(text)
    missing = [flag for flag, value in (("--stable", ns.stable), ("--candidate", ns.candidate),
                                        ("--data", ns.data), ("--label", ns.label)) if not value]  # fmt: skip
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if ns.margin is not None and ns.absolute_margin is not None:
        raise ValueError("give --margin or --absolute-margin, not both")
    margin: dict[str, float] = {"relative": 0.01}
    if ns.absolute_margin is not None:
        margin = {"absolute": ns.absolute_margin}
    elif ns.margin is not None:
        margin = {"relative": ns.margin}
    if ns.margin_floor is not None:
        margin["floor"] = ns.margin_floor
    fmt = ns.format or ("npz" if str(ns.data).endswith(".npz") else "csv")
    return EvaluationRequest.from_wire({
        "stable": {"uri": ns.stable, "sha256": ns.stable_sha256},
        "candidate": {"uri": ns.candidate, "sha256": ns.candidate_sha256},
        "dataset": {"uri": ns.data, "sha256": ns.data_sha256, "label": ns.label, "format": fmt},
        "metric": ns.metric, "margin": margin, "baseline": ns.baseline, "alpha": ns.alpha,
        "slices": tuple(ns.slices), "resamples": ns.resamples, "seed": ns.seed,
    })  # fmt: skip


def _problem(error: Exception) -> str:
    """One line: the first lines of the error's message (a bad request's names the field)."""
    first = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(first[:4])


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(
        level=env.get(EvaluateEnv.LOG_LEVEL, "INFO").upper(), stream=sys.stderr,
        format=LOG_FORMAT,
    )  # fmt: skip
    ns = parser().parse_args(argv)
    termination = ns.termination_log or (
        Path(env[EvaluateEnv.TERMINATION_LOG]) if env.get(EvaluateEnv.TERMINATION_LOG) else None
    )
    work_dir = ns.work_dir or (Path(env[EvaluateEnv.WORK_DIR]) if env.get(EvaluateEnv.WORK_DIR) else None)
    registry_uri = ns.registry_uri or env.get(EvaluateEnv.REGISTRY_URI) or None
    try:
        request = request_from(ns, env)
    except ValueError as e:
        reason = capped(f"bad input: {_problem(e)}")
        report = EvaluationReport(verdict="inconclusive", problem="badInput", reason=reason)
    else:
        try:
            report = evaluate(request, work_dir, authorize=lambda url: registry_header(url, registry_uri, env),
                              whole_file_max_bytes=whole_file_budget())  # fmt: skip
        except Exception as e:  # a bug: say where, and never let the operator read a promotion into it
            log.exception("the evaluation broke")
            reason = capped(f"the evaluation broke: {type(e).__name__}: {_problem(e)}")  # a message may be long
            report = EvaluationReport(verdict="inconclusive", problem="error", metric=request.metric, reason=reason)
    print(report.to_json() if ns.json else render(report), flush=True)
    if termination is not None:
        try:
            termination.write_text(report.to_message())
        except OSError as e:
            log.error("cannot write the report to %s: %s", termination, e)
    return int(report.exit_code)


def entry() -> None:
    sys.exit(main())
