"""Resolution: a resolving post ends its alert (escalations and the hold on repeats end with it) and texts
"RESOLVED: <what it was about>" to exactly the phones the alert and its escalation reached, once per alert. Only an
alert of a rule that takes the post's author's resolutions: another integration in the channel cannot end it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bot.domain import keys
from bot.domain.alerts import without_state
from bot.domain.clock import utc_now
from bot.domain.errors import ServiceUnavailable
from bot.domain.models import AlertResolution, FiringAlert
from bot.domain.phone import PhoneNumber
from bot.domain.policy import AlertRule, country_refusal
from bot.domain.ports import AlertLedger, AlertLog, SendQueue
from bot.domain.sends import SendRecord, SendState
from bot.sending import texts
from bot.sending.admission import Refused
from bot.sending.alerts.rendering import Rendering, alert_as, leader
from bot.sending.alerts.verdicts import Repeat, Text, Verdict

RESOLVES_WITHIN = timedelta(days=7)  # how far back a resolving post looks for the alert it ends


@dataclass(frozen=True, kw_only=True, eq=False)
class Resolving:
    rendering: Rendering
    ledger: AlertLedger
    sends: SendQueue
    alert_log: AlertLog

    async def resolve(self, record: SendRecord, rule: AlertRule) -> Verdict:
        """ "RESOLVED: <what it was about>" to exactly the phones the alert it ends was texted to (not those held
        back or not reached), in one SMS segment; once per alert, however many resolving posts follow."""
        firing = await self._alert_ended_by(record)
        if firing is None:
            raise Refused.denied(f"no alert texted by rule '{rule.name}' matches this resolution, so nobody was told")
        if not firing.state.final:  # still being sent (D7 asked to retry): the resolution waits for it
            raise ServiceUnavailable("the alert it resolves is still being sent")
        await self.alert_log.mark_resolved(firing)  # its escalations and the hold on its repeats end, texted or not
        if firing.state is not SendState.ACCEPTED or firing.checked is None or not firing.checked.recipients:
            raise Refused.denied("the alert it resolves reached no phone, so nobody was told")
        own = self.rendering.policy.alert_rule(firing.request.alert.rule) if firing.request.alert else None
        rule = own or rule  # the alert's own rule: its sender and template
        first = await self.ledger.lead(keys.told_resolved(firing.id), record.id, RESOLVES_WITHIN)
        if first != record.id:
            return Repeat(first)
        words = texts.resolved(without_state(await self._title(firing)))
        channel = f"#{record.request.channel_id}"
        text, use = self.rendering.words(rule, words, record.request.via, 1, channel=channel)  # one segment
        texted = await self._texted(firing, rule)
        if not texted:
            raise Refused.denied("the phones it reached are outside the policy's countries now, so nobody was told")
        texted, opted_out = await self.rendering.admission.without_opted_out(texted)  # STOP since the alert
        if not texted:
            raise Refused.invalid(*opted_out)
        names = {k: v for k, v in firing.checked.names.items() if k in {n.e164 for n in texted}}
        checked = self.rendering.checked(rule, text, use, texted, names, unreached=opted_out)
        alert_thread = firing.request.origin.thread_ts
        # The alert's thread tells its whole life: the outcome goes there; the resolving post's thread points to it.
        return Text(checked, thread=alert_thread if alert_thread != record.request.origin.thread_ts else None)

    async def _alert_ended_by(self, record: SendRecord) -> SendRecord | None:
        alert = alert_as(record, AlertResolution)
        if alert.resolves is not None:  # a reply in the alert's thread, or the alert's own post edited
            firing = await leader(self.sends, await self.alert_log.by_key(alert.resolves))
            if firing is not None and (firing.request.alert is None or firing.request.alert.rule not in alert.ends):
                return None
            return firing
        if alert.identity is not None:
            since = utc_now() - RESOLVES_WITHIN
            return await self.alert_log.latest_alert(record.request.channel_id, alert.identity, since, alert.ends)
        return None

    async def _title(self, firing: SendRecord) -> str:
        alert = firing.request.alert
        message = (alert.message if isinstance(alert, FiringAlert) else None) or {}
        title = firing.request.text.splitlines()[0] if firing.request.text else ""
        if self.rendering.reader is not None and message:
            title = (await self.rendering.reader.read(message))[1] or title
        return title

    async def _texted(self, firing: SendRecord, rule: AlertRule) -> list[PhoneNumber]:
        """The phones the alert and its escalation reached, as far as the policy still lets texts go there (its
        countries may have narrowed since)."""
        policy = self.rendering.policy
        reached = list(firing.checked.recipients) if firing.checked else []
        for i in range(len(rule.escalate)):  # those paged by its escalation hear it is over too
            step = await self.alert_log.by_key(keys.escalation(firing.id, i))
            if step is not None and step.state is SendState.ACCEPTED and step.checked is not None:
                reached += [n for n in step.checked.recipients if n not in reached]
        return [n for n in reached if country_refusal(policy, n) is None]
