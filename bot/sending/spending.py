"""What sends cost: counted against the policy's budgets before they go (refused when one would overrun), given
back when nothing went out, and counted as billed when D7 accepts them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

from bot.domain.budgets import billed_messages, charges, cost_in_words, overrun_reason, refill_words
from bot.domain.clock import Clock
from bot.domain.events import Billed, Events
from bot.domain.policy import Policy
from bot.domain.ports import BudgetLedger, SendMetrics
from bot.domain.sends import PreparedSend, Refusal, RefusalKind, SendRecord
from bot.sending.admission import Refused, conversation_label
from bot.sending.balance import named_channels

log = logging.getLogger("bot.sending")


@dataclass(frozen=True, eq=False)
class Spending:
    """The pipeline's spending: budgets and the billed count."""

    policy: Policy
    budgets: BudgetLedger | None  # the policy's budgets (None: not counted)
    metrics: SendMetrics
    events: Events
    clock: Clock

    async def charge(self, send: PreparedSend) -> None:
        """Count the send against the policy's budgets (a send counted before a restart is not counted again);
        ``Refused`` naming the budget, what is left and when it refills when it would overrun one."""
        if self.budgets is None:
            return
        budgets = charges(self.policy, send, conversation_label(send.request.channel_id))
        if not budgets:
            return
        overrun = await self.budgets.charge(send.send_id, budgets, billed_messages(send))
        if overrun is None:
            return
        self.metrics.refused_over_budget(overrun.charge.scope)
        log.info("over budget send_id=%s budget=%s", send.send_id, overrun.charge.key, extra={"send_id": send.send_id})
        refill = refill_words(overrun.refills_at, self.clock()) if overrun.refills_at is not None else ""
        reason = overrun_reason(overrun, cost_in_words(send), refill, alert=send.alert is not None)
        raise Refused(Refusal(RefusalKind.OVER_BUDGET, (reason,)))

    async def refund(self, record: SendRecord) -> None:
        """Nothing went out: what the send counted against budgets is given back (a failure only logged: at worst a
        budget counts a send that cost nothing until its window ends)."""
        if self.budgets is None:
            return
        try:
            await self.budgets.refund(record.id)
        except Exception as exc:
            log.warning("could not give back the budget of send_id=%s (%s)", record.id, type(exc).__name__)

    @cached_property
    def _channels(self) -> frozenset[str]:
        return named_channels(self.policy)

    def bill(self, send: PreparedSend) -> None:
        """Count what D7 will charge for, by rule and channel (a channel the policy does not name is "other")."""
        channel = send.request.origin.channel_id
        label = channel if channel in self._channels else "other"
        self.metrics.count_billed(send.via.value, send.rule, label, billed_messages(send))
        self.events.publish(Billed())
