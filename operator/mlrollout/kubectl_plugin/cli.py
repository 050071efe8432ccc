"""`kubectl mlrollout`: argument parsing and the few steps each subcommand takes.

Exit codes: 0 done (or accepted by the operator), 1 refused by the operator or an API error,
2 usage error, 3 timed out waiting for the operator's answer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import urllib3
from pydantic import ValidationError

from mlrollout.api import commands
from mlrollout.api.modeldeployment import CommandStatus, ModelDeployment
from mlrollout.api.rolloutpolicy import Step
from mlrollout.kubectl_plugin import render
from mlrollout.kubectl_plugin.kube import Cluster, KubeError, Obj

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3
CLEAR_SCREEN = "\x1b[H\x1b[2J"

DESCRIPTION = """Watch and steer mlrollout ModelDeployments.

Commands act only by setting the mlrollout.io/command annotation on the ModelDeployment (so RBAC on
`patch modeldeployments` governs who may), then wait for the operator's answer in status.lastCommand."""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the context's, else default)")
    common.add_argument("--context", help="kubeconfig context to use")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    return common


def _waiting(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the operator's answer")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the operator's answer (default 60)"
    )


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    top = argparse.ArgumentParser(
        prog="kubectl mlrollout", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()
    status = sub.add_parser("status", parents=[common], help="show a rollout: steps, weights, verdict, history")
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="redraw on every change")
    status.add_argument("--timeout", type=float, default=600.0, help="stop watching after this many seconds")
    promote = sub.add_parser("promote", parents=[common], help="pass the current step now (--full: all steps)")
    promote.add_argument("name")
    promote.add_argument(
        "--full",
        action="store_true",
        help="skip the remaining steps and promote (with spec.autoscaling, once the candidate runs the stable's pods)",
    )
    _waiting(promote)
    for verb, text in (
        ("abort", "roll the candidate back now; the spec's revision is held back"),
        ("pause", "freeze the rollout where it is"),
        ("resume", "continue a paused rollout (or a pause step without duration)"),
        ("retry", "roll out the held-back revision again"),
    ):
        cmd = sub.add_parser(verb, parents=[common], help=text)
        cmd.add_argument("name")
        _waiting(cmd)
    undo = sub.add_parser("undo", parents=[common], help="roll back to the previous (or a given) revision")
    undo.add_argument("name")
    undo.add_argument("--to-revision", type=int, metavar="N", help="revision number (see `history`)")
    _waiting(undo)
    history = sub.add_parser("history", parents=[common], help="past rollouts and revisions")
    history.add_argument("name")
    dashboard = sub.add_parser(
        "dashboard",
        parents=[common],
        help="a local web UI: every rollout live, plots of the evidence, commands",
        description="A local web UI on your kubeconfig and RBAC (docs/kubectl-plugin.md, Dashboard). Lists the "
        "ModelDeployments of all namespaces unless -n names one.",
    )
    dashboard.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=3100, help="port (default 3100; 0: any free port)")
    lint = sub.add_parser("lint", help="validate manifests offline (all mlrollout kinds)")
    lint.add_argument("files", nargs="+", metavar="FILE")
    from mlrollout.validate import traffic_options  # the same options as `mlrollout validate`

    traffic_options(lint)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kubectl-mlrollout` console script."""
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command == "lint":
        from mlrollout.validate import main as validate  # lazy: only lint needs the validator

        traffic = ["--rps", str(args.rps), "--base-error-rate", str(args.base_error_rate),
                   "--latency-p99", str(args.latency_p99)] if args.rps is not None else []  # fmt: skip
        return validate([*args.files, *traffic])
    try:
        cluster = Cluster(args.kubeconfig, args.context)
    except KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.command == "dashboard":  # all namespaces unless -n names one
            from mlrollout.kubectl_plugin.dashboard import serve

            return serve(cluster, args.namespace, args.address, args.port)
        namespace = args.namespace or cluster.default_namespace
        if args.command == "status":
            return show_status(cluster, namespace, args.name, args.watch, args.timeout, sys.stdout)
        if args.command == "history":
            print(render.render_history(typed(cluster.get(namespace, args.name)), datetime.now(UTC)))
            return EXIT_OK
        verb: commands.Verb = "promoteFull" if args.command == "promote" and args.full else args.command
        if args.command == "undo" and args.to_revision is not None and args.to_revision < 1:
            print("error: --to-revision takes a revision number, 1 or more (see `history`)", file=sys.stderr)
            return EXIT_USAGE
        command = commands.Command.new(verb, args.to_revision if args.command == "undo" else None)
        return send(cluster, namespace, args.name, command, None if args.no_wait else args.timeout, sys.stdout)
    except KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except urllib3.exceptions.HTTPError as exc:
        print(f"error: cannot reach the API server: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        cluster.close()


def typed(obj: Obj) -> ModelDeployment:
    """The object as this plugin's API models read it; a status it cannot read is an error to show."""
    try:
        return ModelDeployment.model_validate(obj)
    except ValidationError as exc:
        detail = str(exc).splitlines()
        raise KubeError(
            f"cannot read modeldeployment {obj.get('metadata', {}).get('name', '?')} "
            f"(written by another mlrollout version?): {'; '.join(detail[:3])}"
        ) from exc


def _answer(obj: Obj, command_id: str) -> CommandStatus | None:
    return commands.answer_to(typed(obj).status, command_id)


def send(cluster: Cluster, namespace: str, name: str, command: commands.Command, timeout: float | None,
         out: TextIO) -> int:  # fmt: skip
    """Write the command annotation; with a timeout, wait for the operator's answer and report it."""
    cluster.merge_patch(namespace, name, command.merge_patch())
    print(f"{command.verb} requested for {namespace}/{name} (command {command.id})", file=out)
    if timeout is None:
        return EXIT_OK
    answered = cluster.wait_for(namespace, name, timeout, lambda md: _answer(md, command.id) is not None)
    if answered is None:
        print(
            f"error: no answer from the operator within {timeout:g}s; is it running? "
            f"(the request stays on the object and is carried out once, when the operator sees it)",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    answer = _answer(answered, command.id)
    assert answer is not None
    print(describe(answer, namespace, name), file=out)
    return EXIT_OK if answer.result == "accepted" else EXIT_FAILED


def describe(answer: CommandStatus, namespace: str, name: str) -> str:
    """The operator's answer, one line for the terminal."""
    what = "accepted" if answer.result == "accepted" else "REFUSED"
    tail = f": {answer.message}" if answer.message else ""
    return f"{answer.verb} {what} by the operator for {namespace}/{name}{tail}"


def effective_steps(cluster: Cluster, md: ModelDeployment) -> list[Step] | None:
    """The steps the operator walks for this ModelDeployment, resolved exactly as it does, when the user
    may read the policies; otherwise the spec's own override steps, if any; otherwise unknown."""
    from mlrollout.api import RolloutPolicy
    from mlrollout.policy import PolicyError, resolve_rollout_policy

    override = md.spec.strategy.steps if md.spec.strategy is not None else None
    try:
        policies = [RolloutPolicy.model_validate(_without_status(p)) for p in cluster.rollout_policies()]
        labels = cluster.namespace_labels(str(md.metadata.get("namespace", "")))
        resolved = resolve_rollout_policy(md, labels, policies)
    except (KubeError, PolicyError, ValueError):
        return override
    return list(resolved.spec.strategy.steps)


def _without_status(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k != "status"}


def show_status(cluster: Cluster, namespace: str, name: str, follow: bool, timeout: float, out: TextIO) -> int:
    """Print the status view once, or (follow) again at every change until `timeout`."""
    md = typed(cluster.get(namespace, name))
    steps = effective_steps(cluster, md)
    if not follow:
        out.write(render.render_status(md, steps, datetime.now(UTC)))
        return EXIT_OK
    tty = out.isatty()
    last_version: Any = None
    for obj in cluster.changes(namespace, name, timeout):
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version == last_version:
            continue
        last_version = version
        text = render.render_status(typed(obj), steps, datetime.now(UTC))
        out.write((CLEAR_SCREEN if tty else "---\n") + text)
        out.flush()
    return EXIT_OK
