"""What time it is, as a value that can be passed in: components take a ``Clock`` so tests can move time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The system clock, in UTC (aware)."""
    return datetime.now(UTC)
