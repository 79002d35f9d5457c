"""The gate a firing alert passes: not a repeat (of one texted within the dedupe window, or of one a person
acknowledged), not in quiet hours, each phone within its per-phone limit. It decides what to text now and holds
the rest for their summaries, and so it writes: the dedup lead, the per-phone counts, the summaries' intents."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.domain.clock import utc_now
from bot.domain.models import FiringAlert, SendRequest, Surface
from bot.domain.phone import PhoneNumber
from bot.domain.policy import AlertRule
from bot.domain.ports import AlertLedger, AlertLog
from bot.domain.sends import PreparedSend, SendRecord
from bot.sending.alerts.rendering import Rendering, alert_as
from bot.sending.alerts.summaries import Summaries
from bot.sending.alerts.verdicts import Bundle, Repeat, Text, Verdict

ACKED_HOLDS = timedelta(days=1)  # an acknowledged alert's repeats are held back this long at most (unless resolved)


@dataclass(frozen=True, kw_only=True, eq=False)
class Gate:
    """Dedup, acknowledgement hold, quiet hours and per-phone limits, for one firing alert at a time."""

    rendering: Rendering
    ledger: AlertLedger
    alert_log: AlertLog
    summaries: Summaries

    async def firing(self, record: SendRecord, rule: AlertRule) -> Verdict:
        """What a firing alert does: ``Repeat``, ``Bundle`` (nobody now: held for the summaries) or ``Text``."""
        if (repeat := await self._repeat_of(record, rule)) is not None:
            return Repeat(repeat)
        fields = await self.rendering.fields(record, rule)
        text, template = self.rendering.text(rule, fields, record.request.via, linked=True)
        found, unreached = await self.rendering.reach(record.request.recipients, record.created_at)
        quiet = quiet_of(record.request, rule, record.created_at)
        if quiet is not None:  # quiet hours: every phone gets it in one summary when they end
            start, end = quiet
            await self.ledger.hold(record.id, rule.name, [n.e164 for n in found.numbers], start)
            for number in found.numbers:
                await self.summaries.schedule(record, rule.name, number.e164, start, end)
            held = found.numbers
            checked = self.rendering.checked(
                rule, text, template, (), found.names, held=held, unreached=unreached, on_call=found.on_call
            )
            return Bundle(checked)
        held = await self._over_limit(record, rule, found.numbers)
        reached = [n for n in found.numbers if n not in held]
        checked = self.rendering.checked(
            rule, text, template, reached, found.names, held=held, unreached=unreached, on_call=found.on_call
        )
        if not checked.recipients:
            return Bundle(checked)  # held for the summaries: nobody is paged, so nobody is escalated to
        return Text(checked, acts_on=record.request.idempotency_key)

    async def _repeat_of(self, record: SendRecord, rule: AlertRule) -> str | None:
        """The alert this one repeats, when it is not to be texted again; None when it is to be."""
        alert = alert_as(record, FiringAlert)
        if alert.fingerprint is None:
            return None
        # A person has it: its repeats are not texted until it is resolved (a day at most).
        acked = await self.alert_log.acked_repeat(rule.name, alert.fingerprint, utc_now() - ACKED_HOLDS)
        if acked is not None and acked.id != record.id:
            return acked.id
        leader = await self.ledger.lead(alert.fingerprint, record.id, rule.dedupe_window)
        return leader if leader != record.id else None

    async def _over_limit(self, record: SendRecord, rule: AlertRule, numbers: list[PhoneNumber]) -> list[PhoneNumber]:
        """The phones over the rule's per-phone limit; each gets a summary at the end of its window."""
        limit = rule.max_per_phone
        if limit is None:
            return []
        taken = await self.ledger.take_quota(record.id, rule.name, [n.e164 for n in numbers], limit.count, limit.per)
        held = []
        for number in numbers:
            is_held, window_start = taken[number.e164]
            if is_held:
                held.append(number)
                await self.summaries.schedule(record, rule.name, number.e164, window_start, window_start + limit.per)
        return held

    async def with_holds(self, send: PreparedSend, created_at: datetime | None = None) -> PreparedSend:
        """The send with when its held-back phones get their summary (for the thread reply); ``created_at``: when
        the alert came in (quiet hours are decided by it)."""
        alert = send.alert
        if not send.held or alert is None:
            return send
        rule = self.rendering.policy.alert_rule(alert.rule)
        if rule is None:
            return send
        if (quiet := quiet_of(send.request, rule, created_at)) is not None:
            return replace(send, held_until=quiet[1])
        if rule.max_per_phone is None:
            return send
        starts = await self.ledger.held_windows(send.send_id)
        ends = [starts[n.e164] + rule.max_per_phone.per for n in send.held if n.e164 in starts]
        return replace(send, held_until=min(ends)) if ends else send


def quiet_of(request: SendRequest, rule: AlertRule, created_at: datetime | None) -> tuple[datetime, datetime] | None:
    """The quiet time an alert came in (start, end), when it is held for it: none for a critical one (the rule's
    ``except``), for summaries and other alert-like sends, or outside quiet hours."""
    alert, quiet = request.alert, rule.quiet_hours
    if alert is None or alert.kind is not Surface.ALERT or quiet is None or created_at is None:
        return None
    return None if quiet.critical(request.text) else quiet.window(created_at)
