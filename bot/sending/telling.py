"""Telling: each intent's outcome told in Slack exactly once, and its result message kept up to date.

A post that fails is tried again later (``RetryPolicy``) for 24 hours, then given up with an error in the log; one
that Slack refuses for a reason that will not change (``CannotTell``) is given up at once, with an error in the log.
New statuses Slack does not take for now are shown again later (a minute, up to 10 minutes apart; for 3 days,
as long as reports come). New delivery failures always get a reply of their own, whether or not the card could be
rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from bot.domain.clock import Clock, utc_now
from bot.domain.delivery import RecipientDelivery
from bot.domain.events import Bus, Events, SendChanged
from bot.domain.models import Via
from bot.domain.phone import NumberDisplay
from bot.domain.policy import rule_templates
from bot.domain.ports import CannotTell, Conversation, Conversations, DeliveryLog, NotNow, SendQueue, Steps
from bot.domain.retry import RetryPolicy
from bot.domain.sends import (
    Checked,
    LeaseLost,
    Outcome,
    PreparedSend,
    SendRecord,
    SendState,
    prepared,
)
from bot.domain.templates import window_closed
from bot.sending import texts
from bot.sending.alerts import AlertDesk
from bot.sending.texts import step_words as step_words  # where it was first defined: still importable here

log = logging.getLogger("bot.sending")

# Telling an outcome: 4 s, doubling to at most 30 s (told within 30 s of Slack coming back), for 24 hours.
TELL_RETRY = RetryPolicy(base_delay=4.0, max_delay=30.0, max_attempts=None, max_retry_after=None, jitter=False)
TELL_GIVE_UP = timedelta(hours=24)
# Showing new statuses (the card, a "not delivered" reply) while Slack fails: a minute, then as long as the send
# has been over, at most 10 minutes, for as long as D7 reports (a report can come up to 72 hours after the send).
CARD_RETRY = RetryPolicy(base_delay=60.0, max_delay=600.0, max_attempts=None, max_retry_after=None, jitter=False)
CARD_GIVE_UP = timedelta(hours=72)


@dataclass(frozen=True, kw_only=True, eq=False)
class Teller:
    """Tells outcomes through the request's ``Conversation`` and records that they were told."""

    sends: SendQueue
    deliveries: DeliveryLog
    alerts: AlertDesk
    conversations: Conversations
    show_numbers: NumberDisplay
    retry: RetryPolicy = TELL_RETRY
    card_retry: RetryPolicy = CARD_RETRY
    clock: Clock = utc_now
    events: Events = field(default_factory=Bus)  # a person's send changed (its outcome told, statuses shown)
    steps: Steps | None = None  # workflow steps, completed with their send's outcome

    def prepared(self, record: SendRecord) -> PreparedSend:
        """The checked send, as the record keeps it (an alert repeat keeps only its rule and text)."""
        checked = record.checked or Checked(
            rule=record.rule or "",
            sender=record.sender or "",
            originator="",
            recipients=(),
            text=record.text_as_sent.strip(),
        )
        return prepared(record.id, record.request, checked, self.show_numbers)

    def _failing_for(self, record: SendRecord) -> timedelta:
        """How long telling has been due: counted from the outcome, not the request (a summary goes out a whole
        window after it was recorded)."""
        return self.clock() - (record.finished_at or record.created_at)

    async def tell(
        self, record: SendRecord, conversation: Conversation, send: PreparedSend | None = None, careful: bool = True
    ) -> None:
        """Tell the final state once; ``send``: as checked just now (else rebuilt from the record). ``careful``
        (unless the outcome was reached just now, in this worker): an earlier try may have posted the result (its
        answer lost, or the process stopped), so it is looked for before it is posted."""
        result_ts: str | None = None
        try:
            if record.request.step is not None and self.steps is not None:
                # First: the workflow goes on at once. Completing again after a retry is refused by Slack, harmlessly.
                await self._finish_step(record.request.step, record, send or self.prepared(record))
            if record.state is SendState.DENIED:
                await conversation.refuse(record.why_refused, careful=careful)
            elif record.state in (SendState.DEDUPLICATED, SendState.BUNDLED):
                shown = await self.alerts.with_holds(send or self.prepared(record), record.created_at)
                not_sent = await self.alerts.not_sent(record)
                await conversation.not_sent(shown, record.placement, not_sent, careful=careful)
            else:
                shown = await self.alerts.with_holds(send or self.prepared(record), record.created_at)
                if record.unannounced:  # Slack did not take the announcement in time: first it, then the result
                    # Its earlier try may have been carried out with the answer lost: looked for before posting.
                    record = await self.sends.place(record, await conversation.announce(shown, careful=True))
                statuses = await self.deliveries.statuses(record.id) if record.request_id else []
                outcome = record.outcome or Outcome()
                result_ts = await conversation.finish(shown, record.placement, outcome, statuses, careful=careful)
        except LeaseLost:
            raise
        except CannotTell as exc:
            log.error("cannot tell Slack the outcome of send_id=%s, and never will: %s", record.id, exc)
            await self.sends.told(record, None)
            self.events.publish(SendChanged(record.request.user_id))  # the home tab is then the one place that shows it
            return
        except Exception as exc:
            failing_for = self._failing_for(record)
            if failing_for > TELL_GIVE_UP:
                log.error("gave up telling Slack the outcome of send_id=%s after 24 h: %s", record.id, exc)
                await self.sends.told(record, None)
                self.events.publish(SendChanged(record.request.user_id))
                return
            # By time since the outcome: the attempt counter also counts D7 calls and look-ups. A channel's queue
            # says when its turn comes instead.
            delay = max(1.0, exc.after) if isinstance(exc, NotNow) else self.retry.since(failing_for.total_seconds())
            why = str(exc) or type(exc).__name__  # a timeout says nothing of itself
            log.warning("could not tell Slack the outcome of send_id=%s (%s); retrying in %.0fs", record.id, why, delay)
            await self.sends.later(record, self.clock() + timedelta(seconds=delay))
            return
        await self.sends.told(record, result_ts)
        self.events.publish(SendChanged(record.request.user_id))

    async def _finish_step(self, execution_id: str, record: SendRecord, send: PreparedSend) -> None:
        """Complete the workflow step with the send's outcome: outputs when D7 took it (or may have: unknown, or it
        said rejected), a failure in plain words when it was refused or D7 failed it."""
        assert self.steps is not None  # noqa: S101 - asked only with steps
        if record.state is SendState.DENIED:
            await self.steps.fail(execution_id, texts.step_refused(record.why_refused.problems))
            return
        if record.state is SendState.FAILED:
            error = record.outcome.error if record.outcome is not None else None
            await self.steps.fail(execution_id, texts.step_failed(error))
            return
        await self.steps.complete(
            execution_id,
            {
                "request_id": record.request_id or "",
                "status": record.state.value,  # accepted, rejected or unknown
                "recipients_count": len(send.recipients),
                "segments": send.sms.segments if send.sms is not None else 1,
            },
        )

    def _instead(self, send: PreparedSend, failures: Sequence[RecipientDelivery]) -> list[str]:
        """Free WhatsApp text that failed for a closed 24-hour window: the templates its sender has that its rule
        allows (they reach people outside the window)."""
        if send.via is not Via.WHATSAPP or send.checked.template is not None:
            return []
        if not any(window_closed(f.reason) for f in failures):
            return []
        policy = self.alerts.policy
        sender, rule = policy.senders.get(send.sender), policy.rule(send.rule)
        if sender is None or rule is None:
            return []
        allowed = rule_templates(policy, rule)
        return [alias for alias in sender.templates if alias in allowed]

    async def show_statuses(self, record: SendRecord, conversation: Conversation) -> None:
        """New delivery statuses: rewrite the result message, and say so in the thread when a phone was not
        reached. The reply does not wait for the card: a card Slack refuses never hides a failure."""
        due = record.card_due_at
        statuses = await self.deliveries.statuses(record.id)
        send = await self.alerts.with_holds(self.prepared(record), record.created_at)
        again: Exception | None = None
        if record.result_ts is not None:
            try:
                await conversation.update_card(send, record.result_ts, record.outcome or Outcome(), statuses)
            except LeaseLost:
                raise
            except CannotTell as exc:
                log.error("cannot show delivery statuses on the result of send_id=%s: %s", record.id, exc)
            except Exception as exc:
                again = exc
        # The home tab shows statuses too, whatever Slack says here.
        self.events.publish(SendChanged(record.request.user_id))
        failures = [s for s in statuses if s.delivery.failed and not s.notified]
        if failures:
            try:
                # Looked for first: an earlier try, here or in another process, may have posted it and then failed
                # to write that it did (its statuses are written as told only after the post).
                instead = self._instead(send, failures)
                await conversation.undelivered(send, record.placement, failures, instead, careful=True)
            except LeaseLost:
                raise
            except CannotTell as exc:
                log.error("cannot tell that send_id=%s was not delivered to some: %s", record.id, exc)
                await self.deliveries.mark_notified(record.id, [f.recipient for f in failures])
            except Exception as exc:
                again = again or exc
            else:
                await self.deliveries.mark_notified(record.id, [f.recipient for f in failures])
        if again is not None:
            failing_for = self._failing_for(record)
            if failing_for <= CARD_GIVE_UP:
                delay = self.card_retry.since(failing_for.total_seconds())
                log.warning(
                    "could not show new delivery statuses of send_id=%s (%s); retrying in %.0fs",
                    record.id,
                    again,
                    delay,
                )
                await self.sends.card_later(record, self.clock() + timedelta(seconds=delay))
                return
            log.error("gave up showing delivery statuses of send_id=%s: %s", record.id, again)
        if due is not None:
            await self.sends.card_shown(record, due)
        await self.sends.release(record)

    async def still_unknown(self, record: SendRecord) -> None:
        """An ``unknown`` outcome, reconciled: D7 has no look-up without a request_id; a person decides."""
        conversation = self.conversations.open(record.request.origin, record.created_at)
        await conversation.still_unknown(self.prepared(record), record.placement, record.created_at)
