"""`mlrollout-gateway`: parse flags, load the first route table, serve, drain on SIGTERM, exit 0."""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import logging
import math
import os
import resource
import sys
from collections.abc import Sequence

from prometheus_client import disable_created_metrics

from ..contract.feedback import MAX_ROWS
from ..contract.process import GATEWAY_COMMAND, GATEWAY_PORT, GatewayEnv
from ..contract.routes import CONFIGMAP_KEY
from ..contract.startup import LOG_FORMAT
from ..signals import drain_on_signal
from .feedback import Feedback, FeedbackConfig
from .feedback_queue import DEFAULT_CAPACITY
from .limits import Limits
from .metrics import GatewayMetrics
from .proxy import Gateway
from .server import FALLBACK_NOTES, HttpServerProtocol, ServerState
from .sources import ConfigMapSource, FileSource
from .upstream import MAX_RESPONSE

__all__ = ["main", "parse_args", "serve"]

log = logging.getLogger("mlrollout.gateway")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog=GATEWAY_COMMAND,
        description="Traffic gateway for one ModelDeployment: weighted/sticky split, shadow mirroring, fallback.",
    )
    p.add_argument("--host", default=env(GatewayEnv.HOST, "0.0.0.0"), help=f"[${GatewayEnv.HOST}]")
    p.add_argument(
        "--port", type=int, default=int(env(GatewayEnv.PORT, str(GATEWAY_PORT))), help=f"[${GatewayEnv.PORT}]"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--routes-file", help="YAML/JSON route table file, polled for changes (wins over the ConfigMap).")
    src.add_argument(
        "--routes-configmap",
        default=env(GatewayEnv.ROUTES_CONFIGMAP) or None,
        help=f"Name of the ConfigMap holding the route table. [${GatewayEnv.ROUTES_CONFIGMAP}]",
    )
    p.add_argument("--routes-configmap-key", default=CONFIGMAP_KEY)
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="Outside a cluster: kubeconfig path.")
    p.add_argument("--poll-interval", type=float, default=0.2, help="Seconds between route-file checks.")
    p.add_argument(
        "--namespace",
        default=env(GatewayEnv.NAMESPACE, ""),
        help=f"Metrics label; ConfigMap ns. [${GatewayEnv.NAMESPACE}]",
    )
    p.add_argument(
        "--model-deployment",
        default=env(GatewayEnv.MODEL_DEPLOYMENT, ""),
        help=f"Metrics label. [${GatewayEnv.MODEL_DEPLOYMENT}]",
    )
    limits = Limits()
    p.add_argument("--max-body-bytes", type=int, default=limits.max_body, help="Larger request bodies get 413.")
    p.add_argument(
        "--max-header-bytes", type=int, default=limits.max_head, help="Request line plus headers; beyond: 431."
    )
    p.add_argument("--max-url-bytes", type=int, default=limits.max_url, help="Request target; beyond: 414.")
    p.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=limits.max_buffered,
        help="Request bodies held at once over all connections; the request crossing it gets 503.",
    )
    p.add_argument("--max-response-bytes", type=int, default=MAX_RESPONSE, help="One upstream response; beyond: 502.")
    p.add_argument(
        "--header-timeout",
        type=float,
        default=limits.header_timeout,
        help="Seconds for a request's line and headers to arrive (408).",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=limits.body_timeout,
        help="Seconds without the next bytes of a request body (408), or without the client taking our answer.",
    )
    p.add_argument(
        "--idle-timeout", type=float, default=limits.idle_timeout, help="Idle keep-alive connections close after it."
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="Open client connections (0: from the open-file limit, see docs/gateway.md).",
    )
    p.add_argument(
        "--feedback-keys",
        default=env(GatewayEnv.FEEDBACK_KEYS) or None,
        help=f"JSON file of feedback keys (the mounted Secret); without it answers carry no feedback id. "
        f"[${GatewayEnv.FEEDBACK_KEYS}]",
    )
    p.add_argument(
        "--pod-ip",
        default=env(GatewayEnv.POD_IP, ""),
        help=f"This replica's IPv4 address, put in feedback ids so labels reach it. [${GatewayEnv.POD_IP}]",
    )
    feedback = FeedbackConfig("")
    p.add_argument("--feedback-max-rows", type=int, default=feedback.max_rows, help="Rows one feedback id carries.")
    p.add_argument(
        "--feedback-max-age", type=float, default=feedback.max_age, help="Seconds a feedback id is accepted."
    )
    p.add_argument(
        "--feedback-pending-seconds",
        type=float,
        default=feedback.pending_ttl,
        help="Seconds a shadow's answer waits for its label.",
    )
    p.add_argument(
        "--feedback-pending-bytes",
        type=int,
        default=feedback.pending_bytes,
        help="Memory for shadow answers waiting for labels; the oldest go first.",
    )
    p.add_argument(
        "--feedback-queue",
        type=int,
        default=DEFAULT_CAPACITY,
        help="Labels waiting to be checked and counted at most; beyond, 503 with retry-after (reason busy).",
    )
    p.add_argument("--drain-seconds", type=float, default=30.0, help="Longest wait for in-flight requests.")
    p.add_argument(
        "--drain-idle-seconds",
        type=float,
        default=3.0,
        help="After SIGTERM, how long idle keep-alive connections stay open for one more request (answered "
        "with connection: close) before they are closed.",
    )
    p.add_argument("--log-level", default=env(GatewayEnv.LOG_LEVEL, "INFO"), help=f"[${GatewayEnv.LOG_LEVEL}]")
    args = p.parse_args(argv)
    for flag in ("max_body_bytes", "max_header_bytes", "max_url_bytes", "max_buffered_bytes", "max_response_bytes"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    for flag in ("header_timeout", "body_timeout", "idle_timeout"):
        if not getattr(args, flag) > 0:
            p.error(f"--{flag.replace('_', '-')} must be above 0")
    if args.max_connections < 0:
        p.error("--max-connections must be 0 (automatic) or more")
    if args.pod_ip:
        try:
            args.replica = int(ipaddress.IPv4Address(args.pod_ip))
        except ValueError:
            p.error(f"--pod-ip must be an IPv4 address, got {args.pod_ip!r}")
    else:
        args.replica = 0
    if not 1 <= args.feedback_max_rows <= MAX_ROWS or not args.feedback_max_age > 0:
        p.error(f"--feedback-max-rows must be 1 to {MAX_ROWS} and --feedback-max-age above 0")
    if args.feedback_queue < 1:
        p.error("--feedback-queue must be at least 1")
    if not args.routes_file and not args.routes_configmap:
        p.error(f"one of --routes-file or --routes-configmap (or ${GatewayEnv.ROUTES_CONFIGMAP}) is required")
    return args


async def _reload_keys(feedback: Feedback, every: float = 10.0) -> None:
    """A rotated (or newly created) Secret reaches the mounted file within a minute; notice it."""
    while True:
        await asyncio.sleep(every)
        feedback.reload_keys()


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, let in-flight requests finish and return."""
    loop = asyncio.get_running_loop()
    metrics = GatewayMetrics(args.namespace, args.model_deployment)
    feedback = None
    if args.feedback_keys:
        feedback = Feedback(
            FeedbackConfig(
                args.feedback_keys, args.replica, args.port, args.feedback_max_rows, args.feedback_max_age,
                pending_ttl=args.feedback_pending_seconds, pending_bytes=args.feedback_pending_bytes,
            )
        )  # fmt: skip
    gateway = Gateway(metrics, args.max_response_bytes, feedback, args.feedback_queue)
    state = ServerState(gateway.handle, limits_from(args))
    gateway.note = functools.partial(state.note, title=FALLBACK_NOTES)
    state.start()
    background: list[asyncio.Task[None]] = []
    if feedback is not None:
        background.append(loop.create_task(_reload_keys(feedback)))
    configmap: ConfigMapSource | None = None
    if args.routes_file:
        source = FileSource(args.routes_file, gateway.apply, gateway.reject, args.poll_interval)
        source.poll()
        background.append(loop.create_task(source.run()))
    else:
        configmap = ConfigMapSource(
            args.routes_configmap, args.namespace or "default", gateway.apply, gateway.reject,
            key=args.routes_configmap_key, kubeconfig=args.kubeconfig,
        )  # fmt: skip
        configmap.start(loop)
    server = await loop.create_server(
        lambda: HttpServerProtocol(state), args.host, args.port, reuse_address=True, backlog=1024
    )
    log.info("mlrollout-gateway listening on %s:%d", args.host, args.port)
    stop = asyncio.Event()

    def start_draining() -> None:  # readiness fails and every further reply says connection: close
        gateway.draining = True
        state.draining = True

    with drain_on_signal(loop, start_draining, stop):
        await stop.wait()  # the signal handler already failed readiness and switched replies to close
        log.info("shutting down: no new connections, finishing %d in-flight", state.busy_connections())
        server.close()
        state.drain()
        if state.busy_connections():
            state.idle_event.clear()  # a reply since the signal may have set it while others were still busy
            try:
                await asyncio.wait_for(state.idle_event.wait(), args.drain_seconds)
            except TimeoutError:
                log.warning("drain timeout: %d connections still busy", state.busy_connections())
        await state.settle(args.drain_idle_seconds)  # idle keep-alive clients come back once and are told
        for conn in list(state.connections):
            conn.close()
        for task in background:
            task.cancel()
        if configmap is not None:
            configmap.stop()
        state.stop()
        state.flush_notes(math.inf)  # the last counts (fallbacks while draining), however recent the last line
        await gateway.mirror.close()
        await gateway.reviews.close()
        gateway.close()
    log.info("stopped")


MAX_AUTO_CONNECTIONS = 4096
FD_RESERVE = 64
"""Descriptors kept for everything but client and upstream connections (listening socket, logs, kube client)."""


def raise_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (as Go programs and nginx's worker_rlimit_nofile do);
    return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def auto_connections(file_limit: int) -> int:
    """The client-connection cap that keeps descriptors for the upstream side: every client connection with
    a request in service holds an upstream connection, and the idle pools of two tracks can hold as many
    again, so a third of what the file limit leaves (at least 16, at most `MAX_AUTO_CONNECTIONS`)."""
    return max(16, min(MAX_AUTO_CONNECTIONS, (file_limit - FD_RESERVE) // 3))


def limits_from(args: argparse.Namespace) -> Limits:
    file_limit = raise_file_limit()
    connections = args.max_connections or auto_connections(file_limit)
    log.info("at most %d client connections (open-file limit %d)", connections, file_limit)
    return Limits(
        max_body=args.max_body_bytes,
        max_head=args.max_header_bytes,
        max_url=args.max_url_bytes,
        max_buffered=args.max_buffered_bytes,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=connections,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the exposition and nobody queries them
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a declared dependency; plain asyncio still works
        log.warning("uvloop not available; using the default event loop")
    asyncio.run(serve(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
