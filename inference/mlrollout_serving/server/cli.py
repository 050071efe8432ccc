"""Process lifecycle of ``mlrollout-serve``: listen, load with integrity, serve, drain on SIGTERM.

The port opens first so liveness answers while a large model downloads; readiness turns 200 only after
the digest matched, onnxruntime loaded the model and a warm-up run succeeded. Any load failure is logged
as one line and the process exits non-zero without ever becoming ready.

Exit codes (``contract.process.ExitCode``): 0 after a graceful shutdown, 1 when the model or profile cannot
be loaded (or the port is taken), 2 for invalid flags, 3 when the model's sha256 is not the expected one.
A failed start also writes its reason, one line, to ``--termination-log`` (the operator sets Kubernetes'
termination message path, so the reason reaches the pod's status and from there the ModelDeployment's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlrollout_serving import profile as profiles
from mlrollout_serving.contract import startup
from mlrollout_serving.contract.process import ExitCode, registry_header
from mlrollout_serving.contract.profile import Profile, ProfileError
from mlrollout_serving.server import config, download, fds, loading, memory
from mlrollout_serving.server.app import App
from mlrollout_serving.server.http import HttpServer
from mlrollout_serving.server.metrics import ServerMetrics
from mlrollout_serving.signals import drain_on_signal

log = logging.getLogger("mlrollout_serving.server")


def _failed(s: config.Settings, code: ExitCode, reason: str) -> int:
    """Log why the server cannot start, leave the reason where Kubernetes reads it, return the exit code."""
    log.error("%s", reason)
    if s.termination_log:
        try:
            with open(s.termination_log, "w", encoding="utf-8") as handle:
                handle.write(" ".join(reason.split())[:4000])
        except OSError as e:
            log.warning("cannot write the termination message to %s: %s", s.termination_log, e.strerror or e)
    return int(code)


def _load(s: config.Settings, app: App) -> tuple[loading.LoadedModel, Profile | None]:
    """Blocking: fetch (streamed to disk), verify, load, warm up; then read the reference profile."""

    def progress(text: str) -> None:
        app.loading = text

    progress(f"downloading {s.model_uri}")
    try:
        fetched = download.fetch(
            s.model_uri,
            timeout=s.download_timeout,
            max_bytes=s.download_max_bytes,
            attempts=s.download_retries,
            directory=Path(s.download_dir),
            on_progress=progress,
            # a file the registry resolved to, on that tracking server: its MLflow credentials, if any
            authorization=registry_header(s.model_uri, s.registry_uri, os.environ),
        )
    except download.DownloadError as e:
        raise loading.LoadError(str(e)) from None
    try:
        digest = loading.verify(fetched.sha256, s.sha256, s.model_uri)
        if s.sha256 is None:
            log.warning("no --sha256 given: serving %s unverified (sha256 %s)", s.model_uri, digest)
        progress(text := startup.loading(s.model_uri, digest))
        log.info("%s", text)
        model = loading.load(fetched.path, digest, s.intra_op_threads, s.inter_op_threads, s.max_batch_size)
    finally:
        fetched.discard()  # onnxruntime holds the model in memory now; the disk copy is not needed
    profile = None
    if s.reference_profile:
        try:
            profile = profiles.read(s.reference_profile, timeout=s.download_timeout)
        except (OSError, ProfileError) as e:
            raise loading.LoadError(f"cannot read reference profile {s.reference_profile}: {e}") from None
    return model, profile


async def serve(s: config.Settings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    metrics = ServerMetrics(s.identity, s.model_name, s.model_version)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx") as executor:
        app = App(s, metrics, executor)
        http = HttpServer(app.handle, app.too_large, s.max_body_bytes, fds.fit_connections(s.limits))

        def start_draining() -> None:  # readiness fails and every further reply says connection: close
            http.closing = True
            app.draining = True

        with drain_on_signal(loop, start_draining, stop):
            try:
                await http.start(s.host, s.port)
            except OSError as e:
                return _failed(s, ExitCode.LOAD_FAILED, f"cannot listen on {s.host}:{s.port}: {e.strerror or e}")
            log.info("listening on %s:%d; loading %s", s.host, http.port, s.model_uri)
            load_task = asyncio.ensure_future(loop.run_in_executor(None, _load, s, app))
            stop_task: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            await asyncio.wait([load_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
            if not load_task.done():
                log.info("signal received while loading; exiting")
                await http.shutdown(0)
                return ExitCode.OK
            stop_task.cancel()
            try:
                model, profile = load_task.result()
            except loading.IntegrityError as e:
                await http.shutdown(0)
                return _failed(s, ExitCode.INTEGRITY, str(e))
            except loading.LoadError as e:
                await http.shutdown(0)
                return _failed(s, ExitCode.LOAD_FAILED, str(e))
            app.set_model(model, profile)
            # Everything alive now (modules, the session, numpy) lives as long as the process: move it out of
            # the collector's generations so collections on the hot path only look at request garbage.
            gc.collect()
            gc.freeze()
            sig_ = model.signature
            log.info(
                "ready: model %s version %s sha256 %s, inputs %s, outputs %s, batching %s",
                s.model_name,
                s.model_version,
                model.sha256,
                [(t.name, t.datatype, t.oip_shape) for t in sig_.inputs],
                [(t.name, t.datatype, t.oip_shape) for t in sig_.outputs],
                "on" if app.batcher is not None and app.batcher.settings.enabled else "off",
            )
            await stop.wait()  # the signal handler already set app.draining and http.closing
            log.info("SIGTERM: not ready, draining for up to %.1fs", s.shutdown_grace)
            drained = await http.shutdown(s.shutdown_grace)
            log.info("shut down (%s)", "drained" if drained else "grace period over")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    settings = config.parse(argv)
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=startup.LOG_FORMAT,
    )
    import uvloop

    memory.keep_freed_memory()
    code: int = uvloop.run(serve(settings))
    return code
