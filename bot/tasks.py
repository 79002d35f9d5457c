"""Background work that must not be lost on shutdown: every task is tracked until it ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

log = logging.getLogger("bot")

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
