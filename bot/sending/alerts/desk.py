"""``AlertDesk``: the outbox's one door to the alert work, which the modules beside it do."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.domain.models import AlertResolution, AlertSummary, EscalationStep, FiringAlert, Organisation, Surface
from bot.domain.policy import Policy
from bot.domain.ports import AlertLedger, AlertLog, Directory, MessageReader, SendQueue
from bot.domain.sends import NotSent, NotSentReason, PreparedSend, SendRecord, SendState
from bot.sending.admission import Admission
from bot.sending.alerts.acknowledgement import Acknowledgement
from bot.sending.alerts.escalation import Escalation
from bot.sending.alerts.gate import Gate, quiet_of
from bot.sending.alerts.rendering import Rendering, alert_of
from bot.sending.alerts.resolution import Resolving
from bot.sending.alerts.summaries import Summaries
from bot.sending.alerts.verdicts import Text, Verdict

log = logging.getLogger("bot.sending.alerts")


@dataclass(kw_only=True, eq=False)
class AlertDesk:
    """The outbox's alert work; one per process."""

    policy: Policy
    admission: Admission
    ledger: AlertLedger
    sends: SendQueue  # summaries and escalation steps recorded, a repeat's alert read
    alert_log: AlertLog  # alerts found, acknowledged, resolved
    directory: Directory
    reader: MessageReader | None  # the alert as posted, as text (None: the request's text)
    deadline: timedelta  # of the summaries and escalation steps it schedules
    organisation: Organisation | None = None  # whose people acknowledge alerts (None: nobody's)
    link_room: str = ""  # a stand-in of an action link, for its room in texts (``bot.domain.links.room``); "": none
    rendering: Rendering = field(init=False)
    gate: Gate = field(init=False)
    summaries: Summaries = field(init=False)
    escalation: Escalation = field(init=False)
    resolving: Resolving = field(init=False)
    acknowledgement: Acknowledgement = field(init=False)

    def __post_init__(self) -> None:
        self.rendering = Rendering(
            policy=self.policy,
            admission=self.admission,
            directory=self.directory,
            reader=self.reader,
            link_room=self.link_room,
        )
        self.summaries = Summaries(
            rendering=self.rendering, ledger=self.ledger, sends=self.sends, deadline=self.deadline
        )
        self.gate = Gate(
            rendering=self.rendering, ledger=self.ledger, alert_log=self.alert_log, summaries=self.summaries
        )
        self.escalation = Escalation(
            rendering=self.rendering, sends=self.sends, alert_log=self.alert_log, deadline=self.deadline
        )
        self.resolving = Resolving(
            rendering=self.rendering, ledger=self.ledger, sends=self.sends, alert_log=self.alert_log
        )
        self.acknowledgement = Acknowledgement(
            policy=self.policy,
            alert_log=self.alert_log,
            sends=self.sends,
            directory=self.directory,
            organisation=self.organisation,
        )

    async def take(self, record: SendRecord) -> Verdict:
        """Take one alert intent in: what it texts now (``Text``), or nothing (``Repeat``, ``Bundle``). It writes as
        it decides (the dedup lead, per-phone counts, summaries' and escalation steps' intents); ``Refused`` when
        nobody can be texted."""
        alert, rule = alert_of(record), self.rendering.rule_of(record)
        if isinstance(alert, AlertSummary):
            return await self.summaries.text(record, rule)
        if isinstance(alert, AlertResolution):
            return await self.resolving.resolve(record, rule)
        if isinstance(alert, EscalationStep):
            return await self.escalation.step(record, rule)
        verdict = await self.gate.firing(record, rule)
        if isinstance(verdict, Text):
            await self.escalation.schedule(record, rule)
        return verdict

    def acknowledges(self, channel_id: str, reaction: str | None) -> bool:
        return self.acknowledgement.acknowledges(channel_id, reaction)

    async def acknowledge(self, channel_id: str, ts: str, user_id: str, reaction: str | None) -> SendRecord | None:
        return await self.acknowledgement.acknowledge(channel_id, ts, user_id, reaction)

    async def with_holds(self, send: PreparedSend, created_at: datetime | None = None) -> PreparedSend:
        return await self.gate.with_holds(send, created_at)

    async def release(self, record: SendRecord) -> None:
        """Nothing went out: the next repeat of this alert may be texted."""
        alert = record.request.alert
        if not isinstance(alert, FiringAlert) or alert.fingerprint is None:
            return
        try:
            await self.ledger.release(alert.fingerprint, record.id)
        except Exception:
            log.exception("could not release the dedup entry of send_id=%s", record.id)

    async def give_back(self, record: SendRecord) -> None:
        """Refused before anything was sent: its per-phone counts are given back, and no summary counts it."""
        if record.request.alert is None:
            return
        try:
            await self.ledger.give_back(record.id)
        except Exception as exc:  # at worst a phone's window counts a text it never got
            log.warning("could not give back the per-phone counts of send_id=%s (%s)", record.id, type(exc).__name__)

    async def not_sent(self, record: SendRecord) -> NotSent:
        """Why an alert was not texted on purpose, for its thread."""
        alert = record.request.alert
        rule = self.policy.alert_rule(alert.rule) if alert else None
        if record.state is SendState.DEDUPLICATED:
            first = await self.sends.get(record.duplicate_of) if record.duplicate_of else None
            window = rule.dedupe_window if rule else None
            reason = None
            if alert is not None and alert.kind is Surface.ESCALATION:
                acked = first is not None and first.acked_by is not None
                reason = NotSentReason.STEP_ACKNOWLEDGED if acked else NotSentReason.STEP_RESOLVED
            elif alert is not None and alert.kind is Surface.RESOLVED:
                reason = NotSentReason.RESOLUTION_TOLD
            return NotSent(record.state, window=window, first=first, reason=reason)
        limit = rule.max_per_phone if rule else None
        quiet = quiet_of(record.request, rule, record.created_at) if rule else None
        return NotSent(
            record.state,
            window=limit.per if limit else None,
            limit=limit.count if limit else None,
            quiet_until=quiet[1] if quiet else None,
        )
