"""Persistence: SQLAlchemy 2 (async) on a SQLite file by default, PostgreSQL via DATABASE_URL."""
