"""An alert as its phones read it: the rule's template filled with the alert's fields and cut to its budget, and
which phones it reaches (recipients resolved; numbers outside the policy's countries and unsafe profile phones left
out, each with the reason its thread gives)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from bot.domain.alerts import fit
from bot.domain.errors import inert
from bot.domain.models import AlertInfo, AlertResolution, AlertSummary, EscalationStep, FiringAlert, RecipientRef, Via
from bot.domain.phone import SAFE_NUMBER_TYPES, PhoneNumber
from bot.domain.policy import AlertRule, Policy, country_refusal
from bot.domain.ports import Directory, MessageReader, SendQueue
from bot.domain.sends import Checked, SendRecord
from bot.domain.templates import TemplateUse, fit_param
from bot.sending.admission import Admission, Refused, Resolution

log = logging.getLogger("bot.sending.alerts")

A = TypeVar("A", FiringAlert, AlertSummary, EscalationStep, AlertResolution)


@dataclass(frozen=True, kw_only=True, eq=False)
class Rendering:
    """Texts and reach, for every kind of alert send."""

    policy: Policy
    admission: Admission
    directory: Directory
    reader: MessageReader | None  # the alert as posted, as text (None: the request's text)
    # With action links (PUBLIC_URL set): a stand-in of the link that will end a text, of its length
    # (``bot.domain.links.room``); the words are fitted with room for it. Empty: no links.
    link_room: str = ""

    def rule_of(self, record: SendRecord) -> AlertRule:
        alert = alert_of(record)
        rule = self.policy.alert_rule(alert.rule)
        if rule is None:
            raise Refused.denied(f"the alert rule '{alert.rule}' is no longer in the policy")
        return rule

    def checked(
        self,
        rule: AlertRule,
        text: str,
        template: TemplateUse | None,
        recipients: Sequence[PhoneNumber],
        names: Mapping[str, str],
        *,
        held: Sequence[PhoneNumber] = (),
        unreached: tuple[str, ...] = (),
        on_call: Mapping[str, str] | None = None,
    ) -> Checked:
        """What an alert send texts, under the rule's sender."""
        return Checked(
            rule=rule.name,
            sender=rule.sender,
            originator=self.policy.senders[rule.sender].originator,
            recipients=tuple(recipients),
            text=text,
            names=names,
            held=tuple(held),
            unreached=unreached,
            template=template,
            on_call=on_call or {},
        )

    async def reach(self, refs: tuple[RecipientRef, ...], at: datetime) -> tuple[Resolution, tuple[str, ...]]:
        """The phones ``refs`` reach (a schedule's: whoever was on call at ``at``), and why each other one is left
        out; ``Refused`` when none is reached."""
        found = await self.admission.resolve(refs, at)
        unreached = self._left_out(found)
        if not found.numbers:
            raise Refused.invalid(*(unreached or ("no recipients",)))
        return found, unreached

    def _left_out(self, found: Resolution) -> tuple[str, ...]:
        """Why each phone that will not get the alert is left out (taken out of ``found.numbers``): recipients that
        could not be resolved, numbers outside ``defaults.countries`` and unsafe profile phones."""
        outside = [(n, r) for n in found.numbers if (r := country_refusal(self.policy, n)) is not None]
        for number, _ in outside:
            found.numbers.remove(number)
        return (
            tuple(str(p) for p in found.problems)
            + tuple(refusal for _, refusal in outside)
            + self._unsafe_profile_phones(found.numbers, found.names)
        )

    def _unsafe_profile_phones(self, numbers: list[PhoneNumber], names: Mapping[str, str]) -> tuple[str, ...]:
        """Phones from Slack profiles (anyone may edit theirs) of a type that costs more or is worth money to
        someone else (premium rate, shared cost, ...): taken out of ``numbers``, and why, for the thread. Numbers
        the policy lists itself are the admin's choice."""
        problems = []
        for number in [n for n in numbers if n.e164 in names and n.number_type not in SAFE_NUMBER_TYPES]:
            numbers.remove(number)
            label = number.number_type.label
            problems.append(
                f"@{inert(names[number.e164])} has {'an' if label[0] in 'aeiou' else 'a'} {label} number in their "
                f"Slack profile ({number.display(self.policy.defaults.show_numbers)}); alerts text profile phones "
                "only when they are mobile, landline, toll-free or VoIP numbers"
            )
        return tuple(problems)

    async def fields(self, record: SendRecord, rule: AlertRule) -> dict[str, str]:
        """The alert's ``{text}``, ``{title}``, ``{channel}`` and ``{link}`` as posted (the channel's name and the
        permalink only when the rule's template uses them)."""
        message = alert_as(record, FiringAlert).message or {}
        if self.reader is not None:
            body, title = await self.reader.read(message)
        else:
            body, title = record.request.text, ""
        channel_id = record.request.channel_id
        fields = {"text": body, "title": title, "channel": f"#{channel_id}", "link": ""}
        wanted = " ".join([rule.template, *rule.params.values()]) if rule.whatsapp_template else rule.template
        if "{channel}" in wanted:
            fields["channel"] = "#" + await self.channel_name(channel_id)
        if "{link}" in wanted and message.get("ts"):
            try:
                fields["link"] = await self.directory.permalink(channel_id, str(message["ts"]))
            except Exception as exc:
                log.warning("no permalink for an alert in %s: %s", channel_id, exc)
        return fields

    def text(
        self, rule: AlertRule, fields: dict[str, str], via: Via, *, linked: bool = False
    ) -> tuple[str, TemplateUse | None]:
        """The text from the rule's template, cut to its budget (``linked``: with room for the action link that
        will end it); for a WhatsApp rule, its approved template with each parameter filled in and made valid (no
        line breaks or tabs, at most 4 spaces, 1,024 characters), and no link."""
        if rule.whatsapp_template is None:
            room = self.link_room if linked and rule.links else ""
            # NUL: no phone shows it, and PostgreSQL refuses it in text (the alert as posted may carry one).
            return fit(rule.template, fields, via, rule.max_segments, room).text.replace("\x00", ""), None
        template = self.policy.senders[rule.sender].templates[rule.whatsapp_template]
        values = tuple(fit_param(rule.params[p.name].format_map(fields).replace("\x00", "")) for p in template.params)
        return template.render(values, rule.whatsapp_template), TemplateUse(rule.whatsapp_template, values)

    def words(
        self, rule: AlertRule, words: str, via: Via, segments: int, *, linked: bool = False, **fields: str
    ) -> tuple[str, TemplateUse | None]:
        """The bot's own words about an alert (ESCALATED, RESOLVED, a summary): plain, cut to ``segments`` (with
        room for an action link when ``linked``); for a WhatsApp rule, in its approved template (``fields`` say
        what goes in it besides ``text``)."""
        if rule.whatsapp_template is not None:
            return self.text(rule, {"text": words, "title": words, "channel": "", "link": ""} | fields, via)
        room = self.link_room if linked and rule.links else ""
        return fit("{text}", {"text": words}, via, segments, room).text, None

    async def channel_name(self, channel_id: str) -> str:
        try:
            return await self.directory.channel_name(channel_id)
        except Exception as exc:
            log.warning("cannot read the name of %s (is channels:read granted?): %s", channel_id, exc)
            return channel_id


async def leader(sends: SendQueue, record: SendRecord | None) -> SendRecord | None:
    """The alert itself when ``record`` is a repeat of it (not texted again), else ``record``."""
    if record is not None and record.duplicate_of is not None:
        return await sends.get(record.duplicate_of) or record
    return record


def alert_of(record: SendRecord) -> AlertInfo:
    if record.request.alert is None:
        raise ValueError(f"send {record.id} is not an alert")
    return record.request.alert


def alert_as(record: SendRecord, kind: type[A]) -> A:
    """The record's alert, which must be of this kind."""
    alert = alert_of(record)
    if not isinstance(alert, kind):
        raise ValueError(f"send {record.id} is a {alert.kind} alert, not a {kind.kind}")
    return alert
