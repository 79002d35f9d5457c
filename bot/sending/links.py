"""Action links, the sending side: each phone's link at the end of an alert's text, and what opening and using it
does (``bot.domain.links`` says what a link is; ``bot.pages`` serves the page).

- ``ending``: before D7 is called, the send's phones get their links (made once per send and phone, so a send tried
  again carries the same ones), as what ends each phone's text. Firing alerts, escalation steps and summaries carry
  them; RESOLVED texts and WhatsApp templates do not.
- ``view``: what the page shows (``GET``: nothing changes) — the alert's first line as texted, when it came in, its
  state and who acknowledged it — or None for a token that is unknown, expired, or whose alert is resolved.
- ``acknowledge``: the page's form, with the link's own anti-forgery token, acknowledges the alert as that phone
  exactly like a ✅ reaction: its escalation stops, its repeats are held, and its thread names the phone (as the
  policy shows numbers) and the person whose Slack profile has it.
- ``resolve``: where the alert's rule resolves alerts (``resolve``), the form may resolve it instead, like a
  resolving post in its thread: RESOLVED to the phones it reached, once, and the thread names the phone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from bot.domain import keys, links
from bot.domain.clock import Clock, utc_now
from bot.domain.links import ActionLink
from bot.domain.models import AlertResolution, EscalationStep, SendRequest, Surface
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.policy import Policy
from bot.domain.ports import ActionLinkStore, AlertLog, Conversations, Directory, SendQueue
from bot.domain.sends import PreparedSend, SendRecord
from bot.sending.alerts.rendering import leader
from bot.sending.intake import Intake

log = logging.getLogger("bot.sending.links")

NAME_WITHIN = 2.0  # seconds Slack gets to name who acknowledged, for the page (else "someone in Slack")
LINKED = frozenset({Surface.ALERT, Surface.ESCALATION, Surface.SUMMARY})  # the texts that end with a link


class AlertState(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class LinkView:
    """What the page shows for one link."""

    title: str  # the alert's first line, as texted
    posted_at: datetime
    state: AlertState
    acknowledged_by: str | None  # as the page shows it: a Slack name, or the phone as the policy shows numbers
    form_token: str
    phone: str  # the link's phone, as the policy shows numbers
    resolvable: bool = False  # its rule resolves alerts: the page offers Resolve too
    just_now: bool = False  # this request acknowledged (or resolved) it


@dataclass(frozen=True, kw_only=True, eq=False)
class ActionLinks:
    store: ActionLinkStore
    base: str  # PUBLIC_URL, without its trailing slash
    alert_log: AlertLog
    sends: SendQueue  # a repeat's alert read
    conversations: Conversations
    show_numbers: NumberDisplay
    policy: Policy  # which alerts a phone may resolve: those whose rule has ``resolve``
    intake: Intake  # a resolution from a phone is an intent like a resolving post's
    directory: Directory | None = None  # names who acknowledged in Slack, for the page (None: "someone in Slack")
    clock: Clock = utc_now

    @property
    def room(self) -> str:
        """A stand-in of a link for its room in a text (``bot.domain.links.room``)."""
        return links.room(self.base)

    async def ending(self, send: PreparedSend) -> PreparedSend:
        """The send with each phone's link as what ends its text, when it carries links."""
        if send.checked.template is not None or send.request.origin.surface not in LINKED:
            return send
        rule = self.policy.alert_rule(send.alert.rule) if send.alert is not None else None
        if rule is None or not rule.links:  # the rule says no links (texts to people outside, say)
            return send
        phones = [n.e164 for n in send.recipients]
        made = await self.store.of_send(send.send_id)
        acts_on = send.acts_on or _acts_on(send)
        if not made and acts_on is not None and phones:
            now = self.clock()
            made = await self.store.ensure(send.send_id, acts_on, phones, now, now + links.VALID_FOR)
        endings = {phone: links.suffix(self.base, link.token) for phone, link in made.items() if phone in phones}
        return replace(send, endings=endings)

    async def view(self, token: str) -> LinkView | None:
        """What the page shows (nothing changes); None: no such link, or it is no longer valid."""
        found = await self._valid(token)
        return None if found is None else await self._view(*found)

    async def acknowledge(self, token: str, form_token: str) -> LinkView | None:
        """The page's form: the alert acknowledged as the link's phone (once: again changes nothing). None: no such
        link, no longer valid, or not the page's own form (a forged or stale form token)."""
        found = await self._valid(token)
        if found is None or not found[0].form_accepts(form_token):
            return None
        link, alert = found
        if alert.acked_by is not None:
            return await self._view(link, alert)
        acked = await self.alert_log.acknowledge(alert, link.phone)
        if acked is None:  # acknowledged (or resolved) a moment ago by someone else
            again = await self._valid(token)
            return None if again is None else await self._view(*again)
        log.info("alert acknowledged by link send_id=%s", acked.id, extra={"send_id": acked.id})
        phone = PhoneNumber(link.phone).display(self.show_numbers)
        name = acked.checked.names.get(link.phone) if acked.checked else None
        try:
            await self.conversations.open(acked.request.origin).acknowledged_by_phone(phone, name)
        except Exception as exc:  # acknowledged all the same; only the note is missing
            log.warning("could not say that alert send_id=%s was acknowledged (%s)", acked.id, type(exc).__name__)
        return replace(await self._view(link, acked), just_now=True)

    async def resolve(self, token: str, form_token: str) -> LinkView | None:
        """The page's form: the alert resolved from the link's phone, when its rule resolves alerts (``resolve``):
        an intent like a resolving post's in the alert's thread — RESOLVED to the phones it reached, once, told in
        its thread — and a note there naming the phone. None: no such link, no longer valid, not the page's own
        form, or a rule that does not resolve."""
        found = await self._valid(token)
        if found is None or not found[0].form_accepts(form_token):
            return None
        link, alert = found
        rule = self.policy.alert_rule(alert.request.alert.rule) if alert.request.alert else None
        if rule is None or rule.resolve is None:
            return None
        request = SendRequest(
            via=alert.request.via,
            origin=replace(alert.request.origin, surface=Surface.RESOLVED, response_url=None),
            recipients=(),
            text="",
            idempotency_key=keys.link_resolution(link.alert_key),
            sender=alert.request.sender,
            alert=AlertResolution(rule=rule.name, resolves=link.alert_key, rules=(rule.name,)),
        )
        if await self.intake.record(request) is not None:  # the first time: say who
            log.info("alert resolved by link send_id=%s", alert.id, extra={"send_id": alert.id})
            phone = PhoneNumber(link.phone).display(self.show_numbers)
            name = alert.checked.names.get(link.phone) if alert.checked else None
            try:
                await self.conversations.open(alert.request.origin).resolved_by_phone(phone, name)
            except Exception as exc:  # resolved all the same; only the note is missing
                log.warning("could not say that alert send_id=%s was resolved (%s)", alert.id, type(exc).__name__)
        return replace(await self._view(link, alert), state=AlertState.RESOLVED, just_now=True)

    async def _valid(self, token: str) -> tuple[ActionLink, SendRecord] | None:
        if not links.is_token(token):
            return None
        link = await self.store.find(token)
        if link is None or link.expired(self.clock()):
            return None
        alert = await leader(self.sends, await self.alert_log.by_key(link.alert_key))
        if alert is None or alert.resolved_at is not None:
            return None  # valid until the alert is resolved
        return link, alert

    async def _view(self, link: ActionLink, alert: SendRecord) -> LinkView:
        lines = alert.text_as_sent.strip().splitlines()
        rule = self.policy.alert_rule(alert.request.alert.rule) if alert.request.alert else None
        return LinkView(
            title=lines[0] if lines else "Alert",
            posted_at=alert.created_at,
            state=AlertState.ACKNOWLEDGED if alert.acked_by is not None else AlertState.FIRING,
            acknowledged_by=await self._who(alert),
            form_token=link.form_token,
            phone=PhoneNumber(link.phone).display(self.show_numbers),
            resolvable=rule is not None and rule.resolve is not None,
        )

    async def _who(self, alert: SendRecord) -> str | None:
        """Who has the alert, for the page: the Slack name of the person (or of the phone's owner), else the phone."""
        who = alert.acked_by
        if who is None:
            return None
        names = alert.checked.names if alert.checked else {}
        if who.startswith("+"):
            return names.get(who) or PhoneNumber(who).display(self.show_numbers)
        if self.directory is not None:
            try:
                async with asyncio.timeout(NAME_WITHIN):
                    return (await self.directory.person(who)).name
            except Exception as exc:  # the page shows it without the name
                log.warning("no name for %s on an alert's page (%s)", who, type(exc).__name__)
        return "someone in Slack"  # a Slack user ID says nothing on a page


def _acts_on(send: PreparedSend) -> str | None:
    """The alert a send's links act on, as the send itself says: a firing alert's own, an escalation step's alert."""
    if send.request.origin.surface is Surface.ALERT:
        return send.request.idempotency_key
    if isinstance(send.alert, EscalationStep):
        return send.alert.escalates
    return None
