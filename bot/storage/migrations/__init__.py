"""Alembic migrations; run by ``bot.storage.migrate`` at startup."""
