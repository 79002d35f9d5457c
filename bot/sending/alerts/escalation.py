"""Escalation: when nobody acknowledged an alert in time, the next step of its rule's ``escalate`` is texted. Each
step is recorded as an intent when the alert is texted, due ``after`` it came in, and checked when due."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta

from bot.domain import keys
from bot.domain.alerts import describe_window, targets_as_refs
from bot.domain.models import EscalationStep, SendRequest, Surface
from bot.domain.policy import AlertRule
from bot.domain.ports import AlertLog, SendQueue
from bot.domain.sends import SendRecord
from bot.sending import texts
from bot.sending.admission import Refused
from bot.sending.alerts.rendering import Rendering, alert_as
from bot.sending.alerts.verdicts import Repeat, Text, Verdict

log = logging.getLogger("bot.sending.alerts")


@dataclass(frozen=True, kw_only=True, eq=False)
class Escalation:
    rendering: Rendering
    sends: SendQueue
    alert_log: AlertLog
    deadline: timedelta  # of the steps it schedules

    async def schedule(self, record: SendRecord, rule: AlertRule) -> None:
        """One intent per step of the rule's escalation, due ``after`` the alert came in; recorded once (a
        restart records none again) and checked when due: acknowledged or resolved by then, it texts nobody."""
        for i, step in enumerate(rule.escalate):
            request = SendRequest(
                via=record.request.via,
                origin=replace(record.request.origin, surface=Surface.ESCALATION, response_url=None),
                recipients=targets_as_refs(step.to),
                text="",
                idempotency_key=keys.escalation(record.id, i),
                sender=record.request.sender,
                alert=EscalationStep(rule=rule.name, escalates=record.request.idempotency_key, step=i),
            )
            due = record.created_at + step.after
            if await self.sends.record(request, self.deadline, not_before=due) is not None:
                log.info("escalation %d scheduled rule=%s at=%s", i + 1, rule.name, due.isoformat())

    async def step(self, record: SendRecord, rule: AlertRule) -> Verdict:
        """A step of the escalation, now due: nothing when a person acknowledged the alert or it was resolved
        (the thread says so), else the alert's text, marked escalated, to the step's recipients."""
        alert = alert_as(record, EscalationStep)
        firing = await self.alert_log.by_key(alert.escalates) if alert.escalates else None
        if firing is None:
            raise Refused.denied("the alert this escalation is for is no longer in the log")
        if firing.acked_by is not None or firing.resolved_at is not None:
            return Repeat(firing.id)
        step = alert.step if alert.step is not None else -1
        if not 0 <= step < len(rule.escalate):
            raise Refused.denied(f"rule '{rule.name}' has no escalation step {step + 1} any more")
        # A schedule's person is whoever is on call when the step is due: counted from the alert's own recording
        # time, so a restart, a retry or a late worker decide the same person.
        due = firing.created_at + rule.escalate[step].after
        found, unreached = await self.rendering.reach(record.request.recipients, due)
        body = firing.text_as_sent.strip()
        words = texts.escalated(describe_window(rule.escalate[step].after), body)
        via, title = record.request.via, texts.escalated_title(body)
        text, use = self.rendering.words(rule, words, via, rule.max_segments, linked=True, title=title)
        checked = self.rendering.checked(
            rule, text, use, found.numbers, found.names, unreached=unreached, on_call=found.on_call
        )
        return Text(checked, acts_on=alert.escalates)
