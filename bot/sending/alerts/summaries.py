"""End-of-window summaries: the alerts a per-phone limit or quiet hours held back, in one text per phone when the
window ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from bot.domain import keys
from bot.domain.alerts import fit, summary_template
from bot.domain.models import AlertSummary, RecipientRef, RefKind, SendRequest, Surface
from bot.domain.phone import PhoneNumber
from bot.domain.policy import AlertRule, country_refusal
from bot.domain.ports import AlertLedger, SendQueue
from bot.domain.sends import SendRecord
from bot.sending.admission import Refused
from bot.sending.alerts.rendering import Rendering, alert_as
from bot.sending.alerts.verdicts import Text

log = logging.getLogger("bot.sending.alerts")

SUMMARIES_REMEMBERED = 10_000


@dataclass(kw_only=True, eq=False)
class Summaries:
    """Schedules each phone's summary once, and writes it when it is due."""

    rendering: Rendering
    ledger: AlertLedger
    sends: SendQueue
    deadline: timedelta  # of the summaries it schedules
    # Summary keys this process recorded already (saves an insert each).
    _recorded: set[str] = field(default_factory=set, init=False)

    async def schedule(
        self, record: SendRecord, rule: str, phone: str, window_start: datetime, window_end: datetime
    ) -> None:
        """The summary text for ``phone``'s window, recorded once (the first held alert) and due at its end."""
        key = keys.summary(rule, phone, window_start)
        if key in self._recorded:
            return  # recorded (by this process) for an earlier held alert; the database would say the same
        request = SendRequest(
            via=record.request.via,
            origin=replace(record.request.origin, surface=Surface.SUMMARY, response_url=None),
            recipients=(RecipientRef(RefKind.NUMBER, phone),),
            text="",
            idempotency_key=key,
            sender=record.request.sender,
            alert=AlertSummary(rule=rule, phone=phone, window_start=window_start),
        )
        if await self.sends.record(request, self.deadline, not_before=window_end) is not None:
            log.info("summary scheduled rule=%s at=%s", rule, window_end.isoformat(), extra={"send_id": record.id})
        if len(self._recorded) > SUMMARIES_REMEMBERED:
            self._recorded.clear()
        self._recorded.add(key)

    async def text(self, record: SendRecord, rule: AlertRule) -> Text:
        """One text for the phone: how many alerts were held back, where, since when, and the latest (its action
        link acts on the latest)."""
        alert = alert_as(record, AlertSummary)
        if alert.phone is None or alert.window_start is None:
            raise Refused.denied("this summary lost its phone number or window; nothing to sum up")
        held = await self.ledger.held_alerts(rule.name, alert.phone, alert.window_start)
        if not held:
            raise Refused.denied("no alerts were held back in this window, so there is nothing to sum up")
        names = dict.fromkeys(r.request.channel_id for r in held)
        channels = [f"#{await self.rendering.channel_name(c)}" for c in names]
        latest = held[-1]
        template = summary_template(len(held), channels, held[0].created_at)
        via = record.request.via
        latest_text = latest.text_as_sent
        if latest.checked is not None and latest.checked.template is not None:
            latest_text = _alert_value(rule, latest.checked.template.values) or latest_text
        room = self.rendering.link_room if rule.links else ""
        text = fit(template, {"text": latest_text.strip()}, via, rule.max_segments, room).text
        use = None
        if rule.whatsapp_template is not None:  # the same approved template as the alerts, the summary in it
            title = f"+{len(held)} more alert{'s' if len(held) != 1 else ''}"
            fields = {"text": text, "title": title, "channel": ", ".join(channels), "link": ""}
            text, use = self.rendering.text(rule, fields, via)
        number = PhoneNumber(alert.phone)
        if (refusal := country_refusal(self.rendering.policy, number)) is not None:  # held before they narrowed
            raise Refused.invalid(refusal)
        kept, opted_out = await self.rendering.admission.without_opted_out([number])  # it wrote STOP since
        if not kept:
            raise Refused.invalid(*opted_out)
        names_of = {k: v for k, v in latest.names.items() if k == number.e164}
        return Text(
            self.rendering.checked(rule, text, use, (number,), names_of), acts_on=latest.request.idempotency_key
        )


def _alert_value(rule: AlertRule, values: tuple[str, ...]) -> str | None:
    """Of a template alert's values, the one holding the alert itself (filled from ``{text}``, else ``{title}``)."""
    names = list(rule.params)
    for field_name in ("{text}", "{title}"):
        for i, name in enumerate(names):
            if field_name in rule.params[name] and i < len(values):
                return values[i]
    return None
