"""Database engine from ``DATABASE_URL``: the plain URLs people write, turned into async drivers."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("bot.storage")

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}


def async_url(url: str) -> str:
    """``sqlite:///bot.db`` → ``sqlite+aiosqlite:///bot.db``; ``postgresql://…`` → ``postgresql+asyncpg://…``."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def create_engine(url: str) -> AsyncEngine:
    return create_async_engine(async_url(url), pool_pre_ping=True)


async def ping(engine: AsyncEngine, seconds: float = 2.0) -> bool:
    """True when the database answers ``SELECT 1`` within ``seconds``."""
    try:
        async with asyncio.timeout(seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "unreachable" to a health check
        log.warning("database unreachable: %s", type(exc).__name__)
        return False
    return True
