"""When a failed D7 call may be tried again, and after how long.

Only failures where the send provably did not happen are retried: no connection, 429, 502, 503, 504. The client's
``RetryPolicy`` (capped exponential backoff with jitter, a few attempts) says how long; a ``Retry-After`` from D7
wins when it is not absurdly long (a longer one is handed back to the caller: the outbox can wait, a request
should not). What is handed back is always a finite number of seconds, at most ``MAX_RETRY_AFTER``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from bot.domain.errors import D7Error
from bot.domain.retry import RetryPolicy

# 4 attempts, 0.5 s doubling to at most 8 s with jitter; a Retry-After up to 30 s is honoured.
CLIENT_RETRY = RetryPolicy(base_delay=0.5, max_delay=8.0, max_attempts=4, max_retry_after=30.0, jitter=True)

# The longest Retry-After believed. "inf" or 1e400 used to travel to the outbox, whose ``timedelta`` overflowed;
# nothing D7 could mean needs more than a day, and any send's deadline is far shorter, so it then ends at once.
MAX_RETRY_AFTER = 24 * 3600.0


def retry_delay(policy: RetryPolicy, attempt: int, error: D7Error) -> float | None:
    """Seconds before attempt ``attempt + 1`` of a call that failed with ``error``; None: raise it."""
    return policy.delay(attempt, error.retry_after) if error.retryable else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds, at most ``MAX_RETRY_AFTER``: either delta-seconds or an HTTP date (one already
    past is 0). Unparseable, NaN or negative → None: the caller's own backoff applies."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    if math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)
