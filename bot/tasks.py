"""Background work that must not be lost on shutdown (every task is tracked until it ends), that steps aside
while Slack waits for an answer (``RightOfWay``), and the loops that run while ``async with`` lasts
(``BackgroundLoop``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

log = logging.getLogger("bot")

_T = TypeVar("_T")


async def at_most(seconds: float, work: Awaitable[_T]) -> _T:
    """``work``'s result within ``seconds``, else ``TimeoutError`` at once. Unlike ``asyncio.timeout``, the work is
    cancelled without waiting for it to stop: its cleanup (a database connection rolled back, or its query cancelled,
    over a network that drops packets) may take much longer than the deadline it was given."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_quietly)
        raise TimeoutError(f"not done within {seconds:.2f}s")
    return task.result()


def _quietly(task: asyncio.Future[Any]) -> None:
    """A task let go: its outcome is nobody's (retrieved so that it is not logged as never retrieved)."""
    if not task.cancelled():
        task.exception()


DEFAULT_DRAIN_SECONDS = 25.0


class BackgroundTasks:
    """Runs coroutines after the Slack ack; leaving ``async with`` waits for them (bounded) when the bot stops."""

    def __init__(self, drain: float = DEFAULT_DRAIN_SECONDS) -> None:
        self.drain = drain
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _guard(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except Exception:
            log.exception("background task %s failed", name)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.wait(self.drain)

    async def wait(self, seconds: float) -> int:
        """Wait up to ``seconds`` for the tasks in flight; return how many did not finish."""
        if not self._tasks:
            return 0
        log.info("waiting up to %.0fs for %d send(s) in flight", seconds, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
        if pending:
            log.error("%d task(s) still running at shutdown; their outcome was not reported", len(pending))
        return len(pending)


class BackgroundLoop:
    """A part that runs one loop in the background: its ``__aenter__`` calls ``start``; leaving ``async with``
    cancels the loop and waits until it stopped (what it had in flight is let go)."""

    _task: asyncio.Task[None] | None = None

    def start(self, loop: Coroutine[Any, Any, None], name: str) -> None:
        self._task = asyncio.create_task(loop, name=name)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class RightOfWay:
    """Slack's requests go before background work.

    Slack gives a request 3 seconds and the person who typed it is watching; a send already recorded can wait a few
    milliseconds more. While any request waits for its answer (``arrived`` until the callable it returns is called),
    ``give_way`` holds background steps (the outbox's claims and its sends between two steps), letting one through
    every ``trickle`` seconds so that none is starved under a steady stream of requests. The way opens (all of them
    go) once no request has waited for ``quiet`` seconds: a burst's answers often leave none waiting for a moment
    before the next requests come, and opening at each such moment let the held work take the loop from them. A
    request holds the way for ``hold_at_most`` seconds at most (a listener that waits on Slack, a client that
    stalls). With the way open ``give_way`` returns at once.
    """

    def __init__(self, trickle: float = 0.02, quiet: float = 0.005, hold_at_most: float = 1.0) -> None:
        self.trickle = trickle
        self.quiet = quiet
        self.hold_at_most = hold_at_most
        self._requests = 0
        self._held: deque[asyncio.Future[None]] = deque()
        self._pacer: asyncio.Task[None] | None = None
        self._opening: asyncio.TimerHandle | None = None

    @property
    def requests(self) -> int:
        return self._requests

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def open(self) -> bool:
        return not self._requests and self._opening is None

    def arrived(self) -> Callable[[], None]:
        """A request waits for its answer; call what this returns when it is answered (once is enough)."""
        self._requests += 1
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        waiting = True

        def answered() -> None:
            nonlocal waiting
            if waiting:
                waiting = False
                expiry.cancel()
                self._answered()

        expiry = asyncio.get_running_loop().call_later(self.hold_at_most, answered)
        return answered

    def _answered(self) -> None:
        self._requests -= 1
        if not self._requests and self._opening is None:
            self._opening = asyncio.get_running_loop().call_later(self.quiet, self._open)

    async def give_way(self) -> None:
        if self.open:
            return
        held = asyncio.get_running_loop().create_future()
        self._held.append(held)
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.create_task(self._pace(), name="right-of-way")
        await held  # cancelled with its task: the pacer skips it

    def _open(self) -> None:
        self._opening = None
        while self._release():
            pass

    def _release(self) -> bool:
        while self._held:
            held = self._held.popleft()
            if not held.done():
                held.set_result(None)
                return True
        return False

    async def _pace(self) -> None:
        while self._held:
            await asyncio.sleep(self.trickle)
            self._release()
