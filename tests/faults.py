"""Fault injection for tests: a TCP proxy that can drop or refuse traffic, and a second process locking SQLite.

``with TcpProxy("127.0.0.1", 5432) as proxy:`` point the client at ``proxy.port``, then ``proxy.blackhole()``,
``proxy.refuse()`` and ``proxy.forward()`` at any moment. ``with lock_sqlite(path, 5):`` another process holds
the write lock. Both work the same from sync and async tests: the proxy runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

Mode = Literal["forward", "blackhole", "refuse"]

# Bytes the proxy reads ahead per connection and direction while blackholed. Past about twice this, it stops
# reading and the kernel's socket buffers fill, then the sender's writes block: a stalled network, bounded.
BUFFER_LIMIT = 64 * 1024
_CHUNK = 16 * 1024
_CONTROL_TIMEOUT = 10.0

T = TypeVar("T")


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with RST, not FIN: the peer sees "connection reset", as when a host or firewall drops it."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    """One client connection and, once the network lets it through, its connection to the target."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)


@dataclass
class _Stats:
    accepted: int = 0
    live: int = 0
    to_target: int = 0
    to_client: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)


class TcpProxy:
    """A TCP proxy on 127.0.0.1 (a free port) in front of ``(host, port)``; see ``forward``, ``blackhole``, ``refuse``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self._mode: Mode = "forward"
        self._stats = _Stats()
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None

    # -- lifecycle (test thread) ---------------------------------------------------------------------------------

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="TcpProxy", daemon=True)
        self._thread.start()
        self._call(self._astart())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._astop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=_CONTROL_TIMEOUT)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control (any thread but the proxy's own) ---------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def forward(self) -> None:
        """Normal network: bytes flow both ways; anything held during a blackhole is delivered now, in order."""
        self._call(self._set_mode("forward"))

    def blackhole(self) -> None:
        """Packets dropped: connections, old and new, stay open but no byte (nor close) crosses until ``forward``."""
        self._call(self._set_mode("blackhole"))

    def refuse(self) -> None:
        """Nothing listens: open connections are reset, new ones are accepted and reset at once, until ``forward``."""
        self._call(self._set_mode("refuse"))

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        """Block until at least ``count`` client connections are open; ``TimeoutError`` after ``timeout`` seconds."""
        with self._stats.lock:
            if not self._stats.lock.wait_for(lambda: self._stats.live >= count, timeout=timeout):
                raise TimeoutError(f"{self._stats.live} client connections open after {timeout}s, wanted {count}")

    # A bound of its own, like the sync twin's: a forgotten ``asyncio.timeout`` would hang CI, not fail it.
    async def wait_for_connections_async(self, count: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """``wait_for_connections`` without blocking the caller's event loop (polls; cancellable)."""
        deadline = time.monotonic() + timeout
        while self.open_connections < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.open_connections} client connections open after {timeout}s, wanted {count}")
            await asyncio.sleep(0.01)

    @property
    def open_connections(self) -> int:
        """Client connections open now (including ones held by a blackhole before reaching the target)."""
        with self._stats.lock:
            return self._stats.live

    @property
    def accepted(self) -> int:
        """Client connections accepted since start, including those reset by ``refuse``."""
        with self._stats.lock:
            return self._stats.accepted

    @property
    def bytes_to_target(self) -> int:
        """Bytes delivered from clients to the target (held bytes count once delivered)."""
        with self._stats.lock:
            return self._stats.to_target

    @property
    def bytes_to_client(self) -> int:
        """Bytes delivered from the target to clients."""
        with self._stats.lock:
            return self._stats.to_client

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy is not running")
        # Waiting for the loop makes a mode change effective when the method returns.
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=_CONTROL_TIMEOUT)

    # -- the proxy's own loop ----------------------------------------------------------------------------------

    async def _astart(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, self.host, 0, limit=BUFFER_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _astop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        if self._server is not None:
            await self._server.wait_closed()
        # Connection handlers end right after their relay; let them, rather than leave them to die with the loop.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), _CONTROL_TIMEOUT / 2)

    async def _set_mode(self, mode: Mode) -> None:
        assert self._flowing is not None
        self._mode = mode
        if mode == "forward":
            self._flowing.set()
        else:
            self._flowing.clear()
        if mode == "refuse":
            await self._reset_all()

    async def _reset_all(self) -> None:
        tasks = []
        for link in list(self._links):
            link.reset()
            if link.task is not None:
                link.task.cancel()
                tasks.append(link.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _count(self, *, accepted: int = 0, live: int = 0, to_target: int = 0, to_client: int = 0) -> None:
        with self._stats.lock:
            self._stats.accepted += accepted
            self._stats.live += live
            self._stats.to_target += to_target
            self._stats.to_client += to_client
            self._stats.lock.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._count(accepted=1)
        if self._mode == "refuse":
            _reset(writer)
            return
        # The relay runs in a task of its own so that ``refuse`` can cancel it: asyncio logs an error when a
        # ``start_server`` callback itself ends cancelled.
        link = _Link(writer)
        link.task = asyncio.create_task(self._relay(link, reader))
        self._links.add(link)
        self._count(live=1)
        try:
            await asyncio.wait([link.task])
        finally:
            self._links.discard(link)
            self._count(live=-1)

    async def _relay(self, link: _Link, reader: asyncio.StreamReader) -> None:
        assert self._flowing is not None
        # A new connection during a blackhole: the client's SYN got through to us, nothing more.
        await self._flowing.wait()
        try:
            up_reader, upstream = await asyncio.open_connection(self.target_host, self.target_port, limit=BUFFER_LIMIT)
        except OSError:
            link.reset()
            return
        link.upstream = upstream
        await asyncio.gather(
            self._pump(reader, upstream, link, to_target=True),
            self._pump(up_reader, link.client, link, to_target=False),
        )
        link.client.close()
        upstream.close()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link, *, to_target: bool
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                data = await src.read(_CHUNK)
                # Read first, then wait: what arrives during a blackhole is held here (then in the bounded
                # StreamReader buffer, then in the kernel) and delivered in order by ``forward``.
                await self._flowing.wait()
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                # Counted before the write, so a peer that has read the bytes always finds them counted.
                if to_target:
                    self._count(to_target=len(data))
                else:
                    self._count(to_client=len(data))
                dst.write(data)
                await dst.drain()
        except OSError:
            # One side broke: break the other too, so neither peer waits on a half-dead link.
            link.reset()


# -- SQLite locker ----------------------------------------------------------------------------------------------

_LOCKED = "LOCKED"
# The child: take the lock, say so, hold it until stdin closes (the parent left the context or died) or
# ``seconds`` pass, then roll back and exit: it holds the lock for ``seconds`` at most, whatever the parent does.
_LOCKER = f"""
import os, select, sqlite3, sys
path, seconds, exclusive, busy = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
conn = sqlite3.connect(path, timeout=busy, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE" if exclusive else "BEGIN IMMEDIATE")
if exclusive:
    conn.execute(f"CREATE TABLE _fault_lock_{{os.getpid()}} (x)")
print("{_LOCKED}", flush=True)
select.select([sys.stdin], [], [], seconds)
conn.rollback()
conn.close()
"""


@dataclass
class SqliteLock:
    """The process holding the lock (``lock_sqlite`` yields it)."""

    process: subprocess.Popen[str]

    @property
    def held(self) -> bool:
        """True while the locking process runs (it releases the lock just before it exits)."""
        return self.process.poll() is None

    def release(self, timeout: float = 5.0) -> None:
        """Release now (before the context exits); idempotent."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def lock_sqlite(
    path: str | Path, seconds: float, *, exclusive: bool = False, acquire_timeout: float = 5.0
) -> Iterator[SqliteLock]:
    """Another process holds the write lock on the SQLite file ``path`` for ``seconds`` or until the context exits.

    ``BEGIN IMMEDIATE``: other writers get "database is locked" once their busy timeout passes; readers go on.
    ``exclusive=True``: ``BEGIN EXCLUSIVE`` and a write (rolled back), which in rollback-journal mode blocks readers
    too. In WAL mode (the bot's, see ``bot/storage/engine.py``) readers are never blocked, by either kind.
    Returns once the lock is held; ``TimeoutError`` if it cannot be taken within ``acquire_timeout`` seconds.
    """
    args = [str(path), str(seconds), "1" if exclusive else "0", str(acquire_timeout)]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _LOCKER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = SqliteLock(process)
    try:
        _wait_locked(process, deadline=time.monotonic() + acquire_timeout + 5.0)  # + interpreter start-up
        yield lock
    finally:
        lock.release()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _wait_locked(process: subprocess.Popen[str], deadline: float) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        raise TimeoutError("the SQLite locking process did not take the lock in time")
    line = process.stdout.readline().strip()
    if line != _LOCKED:
        process.wait(timeout=5.0)
        stderr = process.stderr.read() if process.stderr is not None else ""
        raise RuntimeError(f"the SQLite locking process failed (exit {process.returncode}): {stderr.strip()}")
