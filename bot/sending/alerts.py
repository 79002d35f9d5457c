"""Alerts in the outbox: dedup, the text from the rule's template, per-phone limits and end-of-window summaries.

``check`` decides what one alert (or summary) intent does: text these phones now (``Text``), nothing because the
same alert was texted within the dedupe window (``Repeat``), or nothing now because every phone is over its limit
(``Bundle``); phones over their limit get one summary intent each, due at the end of their window.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from bot.domain.alerts import describe_window, fit, summary_template, targets_as_refs, without_state
from bot.domain.clock import utc_now
from bot.domain.errors import InputError, ServiceUnavailable, inert
from bot.domain.models import AlertInfo, Organisation, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.phone import SAFE_NUMBER_TYPES, PhoneNumber
from bot.domain.policy import USERGROUP_ID, AlertRule, Policy, country_refusal
from bot.domain.ports import AlertLedger, AlertLog, Directory, MessageReader, SendQueue
from bot.domain.sends import Checked, NotSent, PreparedSend, SendRecord, SendState
from bot.domain.templates import TemplateUse, fit_param
from bot.sending import texts
from bot.sending.admission import Admission, Refused, Resolution

log = logging.getLogger("bot.sending.alerts")

SUMMARIES_REMEMBERED = 10_000
RESOLVES_WITHIN = timedelta(days=7)  # how far back a resolving post looks for the alert it ends
ACKED_HOLDS = timedelta(days=1)  # an acknowledged alert's repeats are held back this long at most (unless resolved)


@dataclass(frozen=True)
class Text:
    """Text these phones now (``checked.held``: the others, over their limit, get the summary)."""

    checked: Checked


@dataclass(frozen=True)
class Repeat:
    """The same alert was texted within the rule's dedupe window, by ``first_id``."""

    first_id: str


@dataclass(frozen=True)
class Bundle:
    """Every phone is over its limit: nothing now, the summaries will say it."""

    checked: Checked


Verdict = Text | Repeat | Bundle


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
    deadline: timedelta  # of the summaries it schedules
    organisation: Organisation | None = None  # whose people acknowledge alerts (None: nobody's)
    # Summary keys this process recorded already (saves an insert each).
    _summaries: set[str] = field(default_factory=set, init=False)

    def rule_of(self, record: SendRecord) -> AlertRule:
        alert = _alert_of(record)
        rule = self.policy.alert_rule(alert.rule)
        if rule is None:
            raise Refused.denied(f"the alert rule '{alert.rule}' is no longer in the policy")
        return rule

    async def check(self, record: SendRecord) -> Verdict:
        """Dedup, render, resolve, per-phone limits; ``Refused`` when nobody can be texted."""
        alert, rule = _alert_of(record), self.rule_of(record)
        if alert.is_summary:
            return Text(await self._summary(record, rule))
        if alert.is_resolution:
            return await self._resolution(record, rule)
        if alert.is_escalation:
            return await self._escalation(record, rule)
        if alert.fingerprint is not None:
            # A person has it: its repeats are not texted until it is resolved (a day at most).
            acked = await self.alert_log.acked_repeat(rule.name, alert.fingerprint, utc_now() - ACKED_HOLDS)
            if acked is not None and acked.id != record.id:
                return Repeat(acked.id)
            leader = await self.ledger.lead(alert.fingerprint, record.id, rule.dedupe_window)
            if leader != record.id:
                return Repeat(leader)
        text, template = self._text(rule, await self._fields(record, rule), record.request.via)
        found = await self.admission.resolve(record.request.recipients)
        unreached = self._left_out(found)
        if not found.numbers:
            raise Refused.invalid(*(unreached or ("no recipients",)))
        quiet = self._quiet_of(record.request, rule, record.created_at)
        if quiet is not None:  # quiet hours: every phone gets it in one summary when they end
            start, end = quiet
            await self.ledger.hold(record.id, rule.name, [n.e164 for n in found.numbers], start)
            for number in found.numbers:
                await self._schedule_summary(record, rule.name, number.e164, start, end)
            held_all = Checked(
                rule=rule.name,
                sender=rule.sender,
                originator=self.policy.senders[rule.sender].originator,
                recipients=(),
                text=text,
                names=found.names,
                held=tuple(found.numbers),
                unreached=unreached,
                template=template,
            )
            return Bundle(held_all)
        held = await self._over_limit(record, rule, found.numbers)
        checked = Checked(
            rule=rule.name,
            sender=rule.sender,
            originator=self.policy.senders[rule.sender].originator,
            recipients=tuple(n for n in found.numbers if n not in held),
            text=text,
            names=found.names,
            held=tuple(held),
            unreached=unreached,
            template=template,
        )
        if not checked.recipients:
            return Bundle(checked)  # held for the summaries: nobody is paged, so nobody is escalated to
        await self._schedule_escalations(record, rule)
        return Text(checked)

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
                await self._schedule_summary(record, rule.name, number.e164, window_start, window_start + limit.per)
        return held

    async def _fields(self, record: SendRecord, rule: AlertRule) -> dict[str, str]:
        """The alert's ``{text}``, ``{title}``, ``{channel}`` and ``{link}`` as posted (the channel's name and the
        permalink only when the rule's template uses them)."""
        message = _alert_of(record).message or {}
        if self.reader is not None:
            body, title = await self.reader.read(message)
        else:
            body, title = record.request.text, ""
        channel_id = record.request.channel_id
        fields = {"text": body, "title": title, "channel": f"#{channel_id}", "link": ""}
        wanted = " ".join([rule.template, *rule.params.values()]) if rule.whatsapp_template else rule.template
        if "{channel}" in wanted:
            fields["channel"] = "#" + await self._channel_name(channel_id)
        if "{link}" in wanted and message.get("ts"):
            try:
                fields["link"] = await self.directory.permalink(channel_id, str(message["ts"]))
            except Exception as exc:
                log.warning("no permalink for an alert in %s: %s", channel_id, exc)
        return fields

    def _text(self, rule: AlertRule, fields: dict[str, str], via: Via) -> tuple[str, TemplateUse | None]:
        """The text from the rule's template, cut to its budget; for a WhatsApp rule, its approved template with
        each parameter filled in and made valid (no line breaks or tabs, at most 4 spaces, 1,024 characters)."""
        if rule.whatsapp_template is None:
            # NUL: no phone shows it, and PostgreSQL refuses it in text (the alert as posted may carry one).
            return fit(rule.template, fields, via, rule.max_segments).text.replace("\x00", ""), None
        template = self.policy.senders[rule.sender].templates[rule.whatsapp_template]
        values = tuple(fit_param(rule.params[p.name].format_map(fields).replace("\x00", "")) for p in template.params)
        return template.render(values, rule.whatsapp_template), TemplateUse(rule.whatsapp_template, values)

    async def _channel_name(self, channel_id: str) -> str:
        try:
            return await self.directory.channel_name(channel_id)
        except Exception as exc:
            log.warning("cannot read the name of %s (is channels:read granted?): %s", channel_id, exc)
            return channel_id

    # ------------------------------------------------------------ acknowledgement

    def acknowledges(self, channel_id: str, reaction: str | None) -> bool:
        """Whether a reaction (None: a person's reply in the thread) in this channel may acknowledge an alert; asked
        before anything is looked up."""
        rules = [r for r in self.policy.alerts if channel_id in r.slack_channels]
        if reaction is None:
            return bool(rules)  # the alert's own people's replies acknowledge whatever ``ack_by`` says
        return any("reactions" in r.ack_by and reaction in r.ack_reactions for r in rules)

    async def acknowledge(self, channel_id: str, ts: str, user_id: str, reaction: str | None) -> SendRecord | None:
        """A person has the alert posted at ``ts`` (or the alert a repeat posted there repeats), by ``reaction`` or
        (None) by replying in its thread: the alert when this acknowledged it (the first time).

        Only a person of this organisation acknowledges (Slack's ``users.info`` says), and by replying only when the
        alert's rule has ``replies`` in ``ack_by`` or they are among the alert's own people: a bystander asking "is
        anyone looking at this?" must not stop the escalation. The database is asked first, Slack last."""
        posted = await self._leader(await self.alert_log.by_key(f"alert:{channel_id}:{ts}"))
        if posted is None or posted.acked_by is not None or posted.resolved_at is not None:
            return None  # not a forwarded alert, or acknowledged (or resolved) before
        rule = self.policy.alert_rule(posted.request.alert.rule) if posted.request.alert else None
        if rule is None:
            return None
        if reaction is not None and not ("reactions" in rule.ack_by and reaction in rule.ack_reactions):
            return None
        if reaction is None and "replies" not in rule.ack_by and not await self._among_its_people(rule, user_id):
            return None
        if not await self._of_this_organisation(user_id):
            return None
        return await self.alert_log.acknowledge(posted, user_id)

    async def _among_its_people(self, rule: AlertRule, user_id: str) -> bool:
        """Whether the user is in a Slack user group the rule's alerts or escalation steps go to, as Slack says now
        (cached briefly): the people on call. Numbers listed in the policy belong to nobody, and a profile phone
        (anyone may edit theirs) says nothing about who someone is."""
        targets = [*rule.to, *(t for step in rule.escalate for t in step.to)]
        for group in dict.fromkeys(t for t in targets if USERGROUP_ID.match(t)):
            try:
                if user_id in await self.directory.group_members(group):
                    return True
            except InputError:  # the group is gone: nobody is in it
                continue
        return False

    async def _of_this_organisation(self, user_id: str) -> bool:
        """Whether the user is a person of the workspace (or Grid org) the bot is installed in: not a bot, not a
        deactivated account, not someone of another organisation in a Slack Connect channel."""
        if self.organisation is None:
            return False
        try:
            person = await self.directory.person(user_id)
        except InputError:  # Slack shows this workspace no such user
            return False
        return self.organisation.includes(person)

    async def _leader(self, record: SendRecord | None) -> SendRecord | None:
        """The alert itself when ``record`` is a repeat of it (not texted again), else ``record``."""
        if record is not None and record.duplicate_of is not None:
            return await self.sends.get(record.duplicate_of) or record
        return record

    # ------------------------------------------------------------ escalation

    async def _schedule_escalations(self, record: SendRecord, rule: AlertRule) -> None:
        """One intent per step of the rule's escalation, due ``after`` the alert came in; recorded once (a
        restart records none again) and checked when due: acknowledged or resolved by then, it texts nobody."""
        for i, step in enumerate(rule.escalate):
            request = SendRequest(
                via=record.request.via,
                origin=replace(record.request.origin, surface=Surface.ESCALATION, response_url=None),
                recipients=targets_as_refs(step.to),
                text="",
                idempotency_key=f"escalate:{record.id}:{i}",
                sender=record.request.sender,
                alert=AlertInfo(
                    rule=rule.name, kind=Surface.ESCALATION, escalates=record.request.idempotency_key, step=i
                ),
            )
            due = record.created_at + step.after
            if await self.sends.record(request, self.deadline, not_before=due) is not None:
                log.info("escalation %d scheduled rule=%s at=%s", i + 1, rule.name, due.isoformat())

    async def _escalation(self, record: SendRecord, rule: AlertRule) -> Verdict:
        """A step of the escalation, now due: nothing when a person acknowledged the alert or it was resolved
        (the thread says so), else the alert's text, marked escalated, to the step's recipients."""
        alert = _alert_of(record)
        firing = await self.alert_log.by_key(alert.escalates) if alert.escalates else None
        if firing is None:
            raise Refused.denied("the alert this escalation is for is no longer in the log")
        if firing.acked_by is not None or firing.resolved_at is not None:
            return Repeat(firing.id)
        step = alert.step if alert.step is not None else -1
        if not 0 <= step < len(rule.escalate):
            raise Refused.denied(f"rule '{rule.name}' has no escalation step {step + 1} any more")
        found = await self.admission.resolve(record.request.recipients)
        unreached = self._left_out(found)
        if not found.numbers:
            raise Refused.invalid(*(unreached or ("no recipients",)))
        after = describe_window(rule.escalate[step].after)
        body = firing.text_as_sent.strip()
        words = texts.escalated(after, body)
        if rule.whatsapp_template is not None:
            fields = {
                "text": words,
                "title": texts.escalated_title(body),
                "channel": "",
                "link": "",
            }
            text, use = self._text(rule, fields, record.request.via)
        else:
            text, use = fit("{text}", {"text": words}, record.request.via, rule.max_segments).text, None
        return Text(
            Checked(
                rule=rule.name,
                sender=rule.sender,
                originator=self.policy.senders[rule.sender].originator,
                recipients=tuple(found.numbers),
                text=text,
                names=found.names,
                unreached=unreached,
                template=use,
            )
        )

    # ------------------------------------------------------------ resolutions

    async def _resolution(self, record: SendRecord, rule: AlertRule) -> Verdict:
        """ "RESOLVED: <what it was about>" to exactly the phones the alert it ends was texted to (not those held
        back or not reached), in one SMS segment; once per alert, however many resolving posts follow."""
        alert = _alert_of(record)
        # Only an alert of a rule that takes this post's author's resolutions: another integration in the channel
        # (under a rule of its own) cannot end it.
        if alert.resolves is not None:  # a reply in the alert's thread, or the alert's own post edited
            firing = await self._leader(await self.alert_log.by_key(alert.resolves))
            if firing is not None and (firing.request.alert is None or firing.request.alert.rule not in alert.ends):
                firing = None
        elif alert.identity is not None:
            since = utc_now() - RESOLVES_WITHIN
            firing = await self.alert_log.latest_alert(record.request.channel_id, alert.identity, since, alert.ends)
        else:
            firing = None
        if firing is None:
            raise Refused.denied(f"no alert texted by rule '{rule.name}' matches this resolution, so nobody was told")
        if not firing.state.final:  # still being sent (D7 asked to retry): the resolution waits for it
            raise ServiceUnavailable("the alert it resolves is still being sent")
        await self.alert_log.mark_resolved(firing)  # its escalations and the hold on its repeats end, texted or not
        if firing.state is not SendState.ACCEPTED or firing.checked is None or not firing.checked.recipients:
            raise Refused.denied("the alert it resolves reached no phone, so nobody was told")
        own = self.policy.alert_rule(firing.request.alert.rule) if firing.request.alert else None
        rule = own or rule  # the alert's own rule: its sender and template
        key = hashlib.sha256(f"resolved:{firing.id}".encode()).hexdigest()[:40]
        leader = await self.ledger.lead(key, record.id, RESOLVES_WITHIN)
        if leader != record.id:
            return Repeat(leader)
        message = (firing.request.alert.message if firing.request.alert else None) or {}
        title = firing.request.text.splitlines()[0] if firing.request.text else ""
        if self.reader is not None and message:
            title = (await self.reader.read(message))[1] or title
        words = texts.resolved(without_state(title))
        via = record.request.via
        if rule.whatsapp_template is not None:
            fields = {"text": words, "title": words, "channel": f"#{record.request.channel_id}", "link": ""}
            text, use = self._text(rule, fields, via)
        else:
            text, use = fit("{text}", {"text": words}, via, 1).text, None  # one segment, whatever the rule says
        # The phones that got it, as far as the policy still lets texts go there (its countries may have narrowed).
        texted = [n for n in firing.checked.recipients if country_refusal(self.policy, n) is None]
        for i in range(len(rule.escalate)):  # those paged by its escalation hear it is over too
            step = await self.alert_log.by_key(f"escalate:{firing.id}:{i}")
            if step is not None and step.state is SendState.ACCEPTED and step.checked is not None:
                texted += [
                    n for n in step.checked.recipients if n not in texted and country_refusal(self.policy, n) is None
                ]
        if not texted:
            raise Refused.denied("the phones it reached are outside the policy's countries now, so nobody was told")
        return Text(
            Checked(
                rule=rule.name,
                sender=rule.sender,
                originator=self.policy.senders[rule.sender].originator,
                recipients=tuple(texted),
                text=text,
                names={k: v for k, v in firing.checked.names.items() if k in {n.e164 for n in texted}},
                template=use,
            )
        )

    # ------------------------------------------------------------ summaries

    async def _schedule_summary(
        self, record: SendRecord, rule: str, phone: str, window_start: datetime, window_end: datetime
    ) -> None:
        """The summary text for ``phone``'s window, recorded once (the first held alert) and due at its end."""
        key = f"summary:{rule}:{phone}:{window_start.isoformat()}"[:255]
        if key in self._summaries:
            return  # recorded (by this process) for an earlier held alert; the database would say the same
        request = SendRequest(
            via=record.request.via,
            origin=replace(record.request.origin, surface=Surface.SUMMARY, response_url=None),
            recipients=(RecipientRef(RefKind.NUMBER, phone),),
            text="",
            idempotency_key=key,
            sender=record.request.sender,
            alert=AlertInfo(rule=rule, kind=Surface.SUMMARY, phone=phone, window_start=window_start),
        )
        if await self.sends.record(request, self.deadline, not_before=window_end) is not None:
            log.info("summary scheduled rule=%s at=%s", rule, window_end.isoformat(), extra={"send_id": record.id})
        if len(self._summaries) > SUMMARIES_REMEMBERED:
            self._summaries.clear()
        self._summaries.add(key)

    async def _summary(self, record: SendRecord, rule: AlertRule) -> Checked:
        """One text for the phone: how many alerts were held back, where, since when, and the latest."""
        alert = _alert_of(record)
        if alert.phone is None or alert.window_start is None:
            raise Refused.denied("this summary lost its phone number or window; nothing to sum up")
        held = await self.ledger.held_alerts(rule.name, alert.phone, alert.window_start)
        if not held:
            raise Refused.denied("no alerts were held back in this window, so there is nothing to sum up")
        channels = [f"#{await self._channel_name(c)}" for c in dict.fromkeys(r.request.channel_id for r in held)]
        latest = held[-1]
        template = summary_template(len(held), channels, held[0].created_at)
        via = record.request.via
        latest_text = latest.text_as_sent
        if latest.checked is not None and latest.checked.template is not None:
            latest_text = _alert_value(rule, latest.checked.template.values) or latest_text
        text = fit(template, {"text": latest_text.strip()}, via, rule.max_segments).text
        use = None
        if rule.whatsapp_template is not None:  # the same approved template as the alerts, the summary in it
            title = f"+{len(held)} more alert{'s' if len(held) != 1 else ''}"
            fields = {"text": text, "title": title, "channel": ", ".join(channels), "link": ""}
            text, use = self._text(rule, fields, via)
        number = PhoneNumber(alert.phone)
        if (refusal := country_refusal(self.policy, number)) is not None:  # held before the countries narrowed
            raise Refused.invalid(refusal)
        return Checked(
            rule=rule.name,
            sender=rule.sender,
            originator=self.policy.senders[rule.sender].originator,
            recipients=(number,),
            text=text,
            names={k: v for k, v in latest.names.items() if k == number.e164},
            template=use,
        )

    # ------------------------------------------------------------ after the fact

    async def release(self, record: SendRecord) -> None:
        """Nothing went out: the next repeat of this alert may be texted."""
        alert = record.request.alert
        if alert is None or alert.fingerprint is None:
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

    async def with_holds(self, send: PreparedSend, created_at: datetime | None = None) -> PreparedSend:
        """The send with when its held-back phones get their summary (for the thread reply); ``created_at``: when
        the alert came in (quiet hours are decided by it)."""
        alert = send.alert
        if not send.held or alert is None:
            return send
        rule = self.policy.alert_rule(alert.rule)
        if rule is None:
            return send
        if (quiet := self._quiet_of(send.request, rule, created_at)) is not None:
            return replace(send, held_until=quiet[1])
        if rule.max_per_phone is None:
            return send
        starts = await self.ledger.held_windows(send.send_id)
        ends = [starts[n.e164] + rule.max_per_phone.per for n in send.held if n.e164 in starts]
        return replace(send, held_until=min(ends)) if ends else send

    @staticmethod
    def _quiet_of(
        request: SendRequest, rule: AlertRule, created_at: datetime | None
    ) -> tuple[datetime, datetime] | None:
        """The quiet time an alert came in (start, end), when it is held for it: none for a critical one (the rule's
        ``except``), for summaries and other alert-like sends, or outside quiet hours."""
        alert, quiet = request.alert, rule.quiet_hours
        if alert is None or alert.kind is not Surface.ALERT or quiet is None or created_at is None:
            return None
        return None if quiet.critical(request.text) else quiet.window(created_at)

    async def not_sent(self, record: SendRecord) -> NotSent:
        """Why an alert was not texted on purpose, for its thread."""
        rule = self.policy.alert_rule(record.request.alert.rule) if record.request.alert else None
        if record.state is SendState.DEDUPLICATED:
            first = await self.sends.get(record.duplicate_of) if record.duplicate_of else None
            return NotSent(record.state, window=rule.dedupe_window if rule else None, first=first)
        limit = rule.max_per_phone if rule else None
        quiet = self._quiet_of(record.request, rule, record.created_at) if rule else None
        return NotSent(
            record.state,
            window=limit.per if limit else None,
            limit=limit.count if limit else None,
            quiet_until=quiet[1] if quiet else None,
        )


def _alert_value(rule: AlertRule, values: tuple[str, ...]) -> str | None:
    """Of a template alert's values, the one holding the alert itself (filled from ``{text}``, else ``{title}``)."""
    names = list(rule.params)
    for field_name in ("{text}", "{title}"):
        for i, name in enumerate(names):
            if field_name in rule.params[name] and i < len(values):
                return values[i]
    return None


def _alert_of(record: SendRecord) -> AlertInfo:
    if record.request.alert is None:
        raise ValueError(f"send {record.id} is not an alert")
    return record.request.alert
