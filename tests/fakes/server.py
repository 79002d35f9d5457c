"""A real aiohttp server on 127.0.0.1 in its own thread and event loop, for fakes of external APIs.

Running in its own loop makes a fake usable from sync and async tests alike, and keeps it serving while the
test's own loop is blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self

from aiohttp import web


class LoopbackServer:
    """Subclasses implement ``app()``; ``with Fake() as f: f.url``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.astart(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.astop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def astart(self) -> None:
        """Start serving in the running loop (used directly when the fake runs as its own process)."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Handlers still waiting (a scripted delay, a stalled answer) are cancelled, not left to die with the loop.
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)


def run_as_process(fake: LoopbackServer) -> None:
    """Serve ``fake`` in this process until killed, after printing ``PORT <n>`` for the parent to read."""

    async def serve() -> None:
        await fake.astart()
        print(f"PORT {fake.port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
