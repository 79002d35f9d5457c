"""When a failed D7 call may be tried again, and after how long.

Only failures where the send provably did not happen are retried: no connection, 429, 502, 503, 504.
Backoff is capped exponential with jitter; a ``Retry-After`` from D7 wins when it is not absurdly long.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from bot.domain.errors import D7Error

DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BASE_DELAY = 0.5
DEFAULT_MAX_DELAY = 8.0
# A longer Retry-After is handed back to the caller (the outbox can wait; a request should not).
DEFAULT_MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a call gets and how long to wait between them."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER

    def delay(self, attempt: int, error: D7Error, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when ``error`` must be raised."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_retry_after else None
        cap = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        # "Equal jitter": never zero (no hammering), never in lock-step with other clients.
        return cap / 2 + (rng or _RNG).uniform(0, cap / 2)


_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


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
