"""``GET /healthz``: what a load balancer and an operator ask of the running bot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot import __version__
from bot.config import Settings
from bot.domain.ports import MessageGateway, SendQueue
from bot.metrics import Metrics
from bot.sending.balance import BalanceWatcher
from bot.sending.outbox import Outbox
from bot.storage.database import Database
from bot.storage.engine import ping


@dataclass(frozen=True)
class HealthCheck:
    """``GET /healthz``: does the database answer, how much is waiting, how much is in flight; the D7 balance as
    last read (never a reason to be unhealthy: D7 may not offer it). ``GET /metrics`` asks it first: what it finds
    is exported too."""

    settings: Settings
    database: Database
    sends: SendQueue  # how much is waiting, how much is stuck
    gateway: MessageGateway
    outbox: Outbox
    metrics: Metrics
    balance: BalanceWatcher

    async def __call__(self) -> tuple[bool, dict[str, Any]]:
        db = self.database
        database = await ping(db.engine)
        backlog: int | None = None
        stuck: int | None = None
        if database:
            try:
                backlog = await self.outbox.measure()
                stuck = await self.sends.stuck()
            except Exception:
                database = False
        # Reads can work while writes do not (a read-only or full disk, a lock held by another process).
        writes = "failing" if db.writes.failing else "ok" if database and await db.can_write() else "locked"
        healthy = database and writes == "ok"
        self.metrics.observe_health(
            stuck=stuck,
            in_flight=self.outbox.in_flight,
            writes_ok=healthy,
            write_failures=db.writes.failures,
            low_balance=self.balance.low,
        )
        return healthy, {
            "status": "ok" if healthy else "degraded",
            "version": __version__,
            "mode": "socket" if self.settings.socket_mode else "http",
            "dry_run": self.gateway.dry_run,
            "database": "ok" if database else "unreachable",
            "database_writes": writes if database else "unknown",
            "last_write_error": db.writes.failure if db.writes.failing else None,
            "outbox_backlog": backlog,
            "sends_stuck_sending": stuck,
            "sends_in_flight": self.outbox.in_flight,
            "d7_balance": self.balance.health(),
        }
