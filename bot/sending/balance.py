"""The D7 account's balance: read every few minutes (and soon after sends), shown in ``/healthz`` and
``/metrics``, and a warning in the policy's ``defaults.admin_channel`` once each time it drops below
``defaults.low_balance``. The balance endpoint is optional: when D7 does not offer it, nothing else changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Self

from bot.domain.clock import Clock, utc_now
from bot.domain.policy import Policy
from bot.domain.ports import Balance, MessageGateway, SendMetrics, SettingsStore
from bot.domain.retry import RetryPolicy
from bot.tasks import BackgroundLoop

log = logging.getLogger("bot.balance")

READ_EVERY = 300.0  # seconds between two reads when nothing is sent
AFTER_SENDS = 30.0  # a read this long after a send: a burst of sends costs one read
NOT_OFFERED_EVERY = 3600.0  # D7 answered "no such endpoint": look again now and then, in case it comes back
CALL_WITHIN = 15.0  # the deadline of one D7 read and of one Slack post
WARNED, YES, NO = "d7_low_balance_warned", "yes", "no"  # the settings key, and its values
CLAIMED = "posting:"  # + Unix time: a replica is posting the warning
CLAIM_STALE = 2 * CALL_WITHIN  # seconds after which a claim whose post never finished is taken over
# D7 failing to answer: 30 s doubling to 30 minutes.
READ_RETRY = RetryPolicy(base_delay=30.0, max_delay=1800.0, max_attempts=None, max_retry_after=None, jitter=True)

# Warns ``channel`` that the balance dropped below the level (the composition root wires Slack and its words).
Post = Callable[[str, Balance, float], Awaitable[None]]


def named_channels(policy: Policy) -> frozenset[str]:
    """The channel IDs the policy names (rules and alerts): the metrics' channel label takes no others, so the
    number of series stays as small as the policy."""
    named = {c for rule in policy.rules for c in rule.slack_channels}
    named |= {c for alert in policy.alerts for c in alert.slack_channels}
    return frozenset(named - {"*"})


class BalanceWatcher(BackgroundLoop):
    """Reads the balance in the background; ``soon()`` after a send. ``async with`` runs it; leaving stops it."""

    def __init__(
        self,
        gateway: MessageGateway,
        metrics: SendMetrics,
        *,
        post: Post,
        low: float | None = None,
        admin_channel: str | None = None,
        every: float = READ_EVERY,
        after_sends: float = AFTER_SENDS,
        within: float = CALL_WITHIN,
        retry: RetryPolicy = READ_RETRY,
        clock: Clock = utc_now,
        settings: SettingsStore | None = None,
    ) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.post = post
        self.low = low
        self.admin_channel = admin_channel
        self.every = every
        self.after_sends = after_sends
        self.within = within
        self.retry = retry
        self.clock = clock
        self.last: Balance | None = None  # the last balance D7 told
        self.read_at: datetime | None = None  # when it told it
        self.offered: bool | None = None  # None: not asked yet
        self.failure: str | None = None  # why the last read failed (None: it worked)
        self.settings = settings  # where "warned" is kept for restarts and replicas (None: in memory only)
        self._state: str | None = None  # without settings: the state kept in memory
        self._poked = asyncio.Event()

    # ------------------------------------------------------------ what others call

    def soon(self) -> None:
        """D7 accepted a send: read the balance within ``after_sends`` seconds (several sends, one read)."""
        self._poked.set()

    def health(self) -> dict[str, Any] | None:
        """``/healthz``'s ``d7_balance``: the last balance D7 told and when; None when it never told one."""
        if self.last is None or self.read_at is None:
            return None
        return {
            "amount": self.last.amount,
            "currency": self.last.currency,
            "read_at": self.read_at.isoformat(timespec="seconds"),
            "below_warning_level": None if self.low is None else self.last.amount < self.low,
            "last_read_failed": self.failure,
        }

    async def check(self) -> Balance | None:
        """Read the balance once (within ``within`` seconds) and act on it; raises when D7 did not answer."""
        self._poked.clear()
        try:
            async with asyncio.timeout(self.within):
                balance = await self.gateway.balance()
        except TimeoutError:
            self.failure = f"D7 did not answer within {self.within:g}s"
            raise
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            raise
        self.failure = None
        if balance is None:
            if self.offered is not False and not self.gateway.dry_run:
                log.info("D7 does not offer the account balance (GET /messages/v1/balance); not shown")
            self.offered, self.last, self.read_at = False, None, None
            self.metrics.balance_read(None, None, self.clock().timestamp())
            return None
        self.offered, self.last, self.read_at = True, balance, self.clock()
        self.metrics.balance_read(balance.amount, balance.currency, self.read_at.timestamp())
        await self._judge(balance)
        return balance

    async def _judge(self, balance: Balance) -> None:
        """Warn once per crossing below ``low``, across restarts and replicas (the state is kept in the database
        when there is one); going back up to it re-arms the warning.

        The replica that claims the crossing posts, and marks it told only once Slack took the post: a replica that
        died between its claim and its post leaves a claim that goes stale after ``CLAIM_STALE`` seconds, and the
        next read warns."""
        if self.low is None:
            return
        try:
            state = await self._warned()
            if balance.amount >= self.low:
                if state not in (None, NO) and await self._mark(state, NO):
                    currency = balance.currency or ""
                    log.info("D7 balance %.2f %s is back above the warning level", balance.amount, currency)
                return
            if state == YES or self._claimed(state):
                return  # told before (by this process, an earlier one, or another replica), or being told
            claim = f"{CLAIMED}{self.clock().timestamp():.0f}"
            if not await self._mark(state, claim):
                return  # another replica claimed it first
        except Exception as exc:  # judged again at the next read
            log.warning("could not keep whether the low balance was told (%s)", type(exc).__name__)
            return
        if self.admin_channel is None:
            log.warning(
                "D7 balance low (no defaults.admin_channel to tell): %.2f %s, below %.2f",
                balance.amount,
                balance.currency or "",
                self.low,
            )
        else:
            try:
                async with asyncio.timeout(self.within):
                    await self.post(self.admin_channel, balance, self.low)
            except Exception as exc:  # told at the next read
                log.warning("could not post the low-balance warning in %s (%s)", self.admin_channel, type(exc).__name__)
                with contextlib.suppress(Exception):  # else the claim goes stale
                    await self._mark(claim, NO)
                return
            log.warning("D7 balance low: warned in %s", self.admin_channel)
        with contextlib.suppress(Exception):  # else the claim goes stale and the warning is posted once more
            await self._mark(claim, YES)

    def _claimed(self, state: str | None) -> bool:
        """A replica is posting the warning now (its claim is fresh)."""
        if state is None or not state.startswith(CLAIMED):
            return False
        try:
            at = float(state.removeprefix(CLAIMED))
        except ValueError:
            return False
        return self.clock().timestamp() - at < CLAIM_STALE

    async def _warned(self) -> str | None:
        if self.settings is None:
            return self._state
        return await self.settings.get(WARNED)

    async def _mark(self, old: str | None, new: str) -> bool:
        """Move the "warned" state on from what this process saw; False when another replica moved it first."""
        if self.settings is not None and not await self.settings.swap(WARNED, old, new):
            return False
        self._state = new
        return True

    # ------------------------------------------------------------ the background loop

    async def __aenter__(self) -> Self:
        self.start(self._run(), "balance")
        return self

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self.check()
            except Exception:
                failures += 1
                wait = self.retry.wait(failures)
                if failures == 1:  # once per outage, not once per try
                    log.warning("could not read the D7 balance (%s); trying again in %.0fs", self.failure, wait)
                await asyncio.sleep(wait)
                continue
            if failures:
                log.info("read the D7 balance again after %d failure(s)", failures)
            failures = 0
            await self._pause(self.every if self.offered else NOT_OFFERED_EVERY, sends_count=bool(self.offered))

    async def _pause(self, seconds: float, *, sends_count: bool) -> None:
        """``seconds``, or ``after_sends`` after the first send that came in meanwhile."""
        if not sends_count:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._poked.wait()
            await asyncio.sleep(self.after_sends)
