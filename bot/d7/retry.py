"""When a failed D7 call may be tried again, and after how long.

Only failures where the send provably did not happen are retried: no connection, 429, 502, 503, 504. The client's
``RetryPolicy`` (capped exponential backoff with jitter, a few attempts) says how long; a ``Retry-After`` from D7
wins when it is not absurdly long (a longer one is handed back to the caller: the outbox can wait, a request
should not).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from bot.domain.errors import D7Error
from bot.domain.retry import RetryPolicy

# 4 attempts, 0.5 s doubling to at most 8 s with jitter; a Retry-After up to 30 s is honoured.
CLIENT_RETRY = RetryPolicy(base_delay=0.5, max_delay=8.0, max_attempts=4, max_retry_after=30.0, jitter=True)


def retry_delay(policy: RetryPolicy, attempt: int, error: D7Error) -> float | None:
    """Seconds before attempt ``attempt + 1`` of a call that failed with ``error``; None: raise it."""
    return policy.delay(attempt, error.retry_after) if error.retryable else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date. Unparseable → None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
