"""How long to wait before trying again: one capped exponential backoff for every retry the bot makes.

The D7 client between its attempts (with jitter, a few attempts), the outbox when D7 stayed unavailable (until the
send's deadline), and Slack posts of a result that could not be told: each is a ``RetryPolicy`` with its own
numbers, never a formula of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt ``n`` (1-based) failed: wait ``base_delay · 2^(n-1)``, at most ``max_delay``.

    ``jitter``: "equal jitter", between half of that and all of it, so that clients never retry in lock-step and
    never wait zero. ``max_attempts``: after that many attempts, no more (None: no limit; a deadline bounds it).
    A server's ``Retry-After`` wins, unless it is longer than ``max_retry_after`` (then: no more attempts).
    """

    base_delay: float = 0.5
    max_delay: float = 8.0
    max_attempts: int | None = 4
    max_retry_after: float | None = 30.0
    jitter: bool = True

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float | None:
        """Seconds to wait after attempt ``attempt`` failed, or None when there must be no further attempt."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            return retry_after if self.max_retry_after is None or retry_after <= self.max_retry_after else None
        cap = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 62))
        return cap / 2 + (rng or _RNG).uniform(0, cap / 2) if self.jitter else cap

    def since(self, failing_for: float) -> float:
        """Backoff counted by time instead of attempts: wait as long as it has been failing, from ``base_delay`` to
        ``max_delay`` (the same doubling, for a step that shares no attempt counter of its own)."""
        return min(self.max_delay, max(self.base_delay, failing_for))

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Like ``delay`` for a policy without an attempt limit: always a number of seconds."""
        delay = self.delay(attempt, retry_after)
        return self.max_delay if delay is None else delay
