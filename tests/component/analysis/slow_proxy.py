"""A TCP proxy that delays every upstream response chunk: latency injected in front of a real model server.

Fault injection, not a mock: the model server behind it is real and answers every request; the proxy
only holds each answer back for ``delay`` seconds, like a slow network path or a slower model would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.support.procs import free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while chunk := await reader.read(65536):
            if delay:
                await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.contextmanager
def slow_proxy(upstream_port: int, delay: float) -> Iterator[int]:
    """Listen on a free loopback port (yielded) and forward to ``upstream_port`` with delayed answers."""
    loop = asyncio.new_event_loop()
    port = free_port()
    started = threading.Event()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w, 0.0), _pipe(up_r, client_w, delay))

    async def main() -> asyncio.base_events.Server:
        return await asyncio.start_server(handle, "127.0.0.1", port)

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(main())
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, name="slow-proxy", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("slow proxy did not start")
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
