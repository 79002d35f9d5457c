"""What a text from a phone does, in two steps the inbox keeps apart: ``decide`` (read the body, say what the text
asks and where it belongs; nothing changes) and ``act`` (change the opt-out list, record the bot's answer,
acknowledge the alert, post the reply). Every step of ``act`` can be done again: the list changes once, the answer
is an outbox intent under the message's own key, an alert is acknowledged once.

- STOP & co.: the phone goes on the opt-out list, and gets one text that says how to opt back in (none when it was
  on the list already). START & co.: off the list, with a confirmation. HELP, INFO: ``inbound.help_text``.
- An ack word: the latest alert texted to the phone in the last 24 hours is acknowledged as that phone, exactly
  like a ✅ reaction (its thread names the phone, and whose Slack profile has it); without one, it is a reply.
- Anything else: posted, made inert, in the thread of the latest send that texted the phone in the last 7 days;
  else in ``inbound.channel``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.inbound import (
    Asks,
    Inbound,
    InboundRecord,
    OptOut,
    OptOutWay,
    Outcome,
    Unanswered,
    Unreadable,
    asks,
    read_inbound,
)
from bot.domain.models import EscalationStep, Origin, Surface
from bot.domain.phone import PhoneNumber
from bot.domain.policy import Policy
from bot.domain.ports import AlertLog, Conversations, OptOutList, PhoneNotes, SendQueue, SendsToPhones, SettingsStore
from bot.domain.sends import SendRecord
from bot.domain.slack_ids import USER_ID
from bot.sending.alerts.rendering import leader
from bot.sending.answers import ANSWER_SURFACE, Where, answer_request, answer_sender
from bot.sending.intake import Intake

log = logging.getLogger("bot.inbound")

REPLY_WINDOW = timedelta(days=7)  # a reply goes in the thread of a send this recent
ACK_WINDOW = timedelta(hours=24)  # an ack word acknowledges an alert texted this recently
SENDER_WINDOW = timedelta(days=30)  # the sender that texted the phone this recently answers it
ACKED_BY_TEXT = "ack"  # ``note_ts`` once an acknowledgement's note is posted
ALERTS = (Surface.ALERT, Surface.ESCALATION)  # what an ack word acknowledges (an escalation step: its alert)
_OUTCOMES = {Asks.STOP: Outcome.OPTED_OUT, Asks.START: Outcome.OPTED_IN, Asks.HELP: Outcome.HELPED}


@dataclass(frozen=True, kw_only=True, eq=False)
class PhoneTexts:
    """Decides and does what each text from a phone asks."""

    policy: Policy
    optouts: OptOutList
    history: SendsToPhones  # where the phone was texted from
    sends: SendQueue  # a send read by id
    alert_log: AlertLog
    intake: Intake  # the bot's answers, recorded in the outbox
    notes: PhoneNotes
    conversations: Conversations  # an alert's thread
    settings: SettingsStore  # unreadable bodies' keys told once
    team_id: str
    bot_user_id: str
    changed: Callable[[str], None] = lambda user_id: None  # a person's send has a new reply (their App Home)

    # ------------------------------------------------------------ deciding

    async def decide(self, record: InboundRecord) -> InboundRecord:
        """What the text asks and where it belongs, from the body and the send log as they are now."""
        fields = self.policy.inbound.fields
        read = read_inbound(record.raw, fields.phone, fields.text)
        if isinstance(read, Unreadable):
            return record.did(Outcome.UNREADABLE)
        phone, at = read.phone.e164, record.received_at
        record = record.read(phone, read.text)
        what = asks(read.text, frozenset(self.policy.inbound.ack_words))
        if what is Asks.ACK:
            alert = await self._alert_for(phone, at)
            if alert is not None:
                return record.did(Outcome.ACKNOWLEDGED, alert.id)
            what = Asks.REPLY  # nothing to acknowledge: a reply like any
        recent = await self.history.latest_to(phone, at - REPLY_WINDOW)
        send_id = recent.id if recent is not None and _thread_of(recent) is not None else None
        if what is Asks.REPLY:
            if send_id is not None:
                return record.did(Outcome.REPLIED, send_id)
            return record.did(Outcome.INBOX if self.policy.inbound_channel else Outcome.KEPT)
        listed = phone in await self.optouts.opted_out([phone])
        # A STOP is confirmed once, a START only when it changes something, HELP never to an opted-out phone.
        unchanged = {Asks.STOP: listed, Asks.START: not listed, Asks.HELP: listed}[what]
        return record.did(Outcome.UNCHANGED if unchanged else _OUTCOMES[what], send_id)

    async def _alert_for(self, phone: str, at: datetime) -> SendRecord | None:
        """The latest alert texted to the phone in the 24 hours before ``at`` (for an escalation step: its alert),
        while nobody has acknowledged or resolved it."""
        texted = await self.history.latest_to(phone, at - ACK_WINDOW, ALERTS)
        if texted is not None and isinstance(texted.alert, EscalationStep):
            escalates = texted.alert.escalates
            texted = await self.alert_log.by_key(escalates) if escalates else None
        alert = await leader(self.sends, texted)
        return alert if alert is not None and alert.acknowledgeable else None

    # ------------------------------------------------------------ doing

    async def act(self, record: InboundRecord) -> InboundRecord:
        """Do what was decided; each step again changes nothing (a note may be posted twice at worst)."""
        outcome, phone = record.outcome, record.phone
        if outcome is Outcome.UNREADABLE:
            await self._tell_admin(record)
        elif phone is None:
            return record
        elif outcome is Outcome.ACKNOWLEDGED:
            return await self._acknowledge(record, phone)
        elif outcome in (Outcome.REPLIED, Outcome.INBOX):
            return await self._post_reply(record, phone)
        elif outcome is Outcome.OPTED_OUT:
            word = _word(record)
            await self.optouts.opt_out(OptOut(phone, record.received_at, OptOutWay.TEXT, word))
            # One confirmation per opt-out: only the message that put the phone on the list is answered (again
            # after a failure), not a second STOP handled at the same moment by another replica.
            entry = (await self.optouts.opted_out([phone])).get(phone)
            if entry is None or entry.way is not OptOutWay.TEXT or entry.at != record.received_at:
                return await self._note(record, phone, Unanswered.ALREADY_OUT)
            return await self._answer(record, phone, Asks.STOP)
        elif outcome is Outcome.OPTED_IN:
            await self.optouts.opt_in(phone)
            return await self._answer(record, phone, Asks.START)
        elif outcome is Outcome.HELPED:
            return await self._answer(record, phone, Asks.HELP)
        elif outcome is Outcome.UNCHANGED:
            return await self._note(record, phone, _unanswered(asks(record.text or "")))
        return record

    async def _where(self, record: InboundRecord) -> Where | None:
        """Where the message is told: the thread of the send it belongs to, else ``inbound.channel``."""
        send = await self.sends.get(record.send_id) if record.send_id is not None else None
        thread = _thread_of(send) if send is not None else None
        if send is not None and thread is not None:
            return Where(send.request.channel_id, thread, send.id)
        channel = self.policy.inbound_channel
        return Where(channel) if channel else None

    def _first_admin(self) -> str:
        """Where an answer's story goes when there is no channel for it: the first admin's DM with the app (posting
        to a user ID posts there); "" when the policy names no admin user (then it is only logged)."""
        return next((a for a in self.policy.admins if USER_ID.match(a)), "")

    def _shown(self, phone: str) -> str:
        return PhoneNumber(phone).display(self.policy.defaults.show_numbers)

    async def _post_reply(self, record: InboundRecord, phone: str) -> InboundRecord:
        where = await self._where(record)
        if record.note_ts is not None or where is None or record.text is None:
            return record
        ts = await self.notes.replied(where.channel_id, where.thread_ts, self._shown(phone), record.text, record.id)
        log.info("reply from a phone posted inbound_id=%s send_id=%s", record.id, where.send_id)
        if where.send_id is not None:
            send = await self.sends.get(where.send_id)
            if send is not None:
                self.changed(send.request.user_id)
        return record.noted(ts)

    async def _note(self, record: InboundRecord, phone: str, why: Unanswered) -> InboundRecord:
        where = await self._where(record)
        if record.note_ts is not None or where is None:
            return record
        ts = await self.notes.keyword(where.channel_id, where.thread_ts, self._shown(phone), _word(record), why)
        return record.noted(ts)

    async def _answer(self, record: InboundRecord, phone: str, what: Asks) -> InboundRecord:
        """The bot's answer, recorded in the outbox under the message's key (again: recorded before, nothing new);
        its story is told where the message belongs."""
        last = await self.history.latest_to(phone, record.received_at - SENDER_WINDOW)
        sender = answer_sender(self.policy, last.sender if last is not None else None)
        if sender is None:
            log.warning("no sender to answer inbound_id=%s with (the policy has no SMS sender)", record.id)
            return await self._note(record, phone, Unanswered.NO_SENDER)
        where = await self._where(record) or Where(self._first_admin())
        origin = Origin(ANSWER_SURFACE, self.team_id, self.bot_user_id, where.channel_id, thread_ts=where.thread_ts)
        request = answer_request(self.policy, record.id, what, _word(record), phone, sender, origin)
        if await self.intake.sends.record(request, self.intake.deadline) is not None:
            self.intake.wake()
            log.info("answer recorded inbound_id=%s asks=%s", record.id, what.value)
        return record

    async def _acknowledge(self, record: InboundRecord, phone: str) -> InboundRecord:
        """As the phone, exactly like a ✅ reaction; the alert's thread names the phone and whose it is."""
        alert = await leader(self.sends, await self.sends.get(record.send_id or ""))
        if alert is None or record.note_ts is not None:
            return record
        again = alert.acked_by == phone  # acknowledged by an earlier try, whose note may have been posted
        acked = alert if again else await self.alert_log.acknowledge(alert, phone)
        if acked is None:  # someone (or something) acknowledged or resolved it first
            log.info("alert send_id=%s was acknowledged before the text inbound_id=%s", alert.id, record.id)
            return record
        log.info("alert acknowledged by text send_id=%s", acked.id, extra={"send_id": acked.id})
        name = acked.names.get(phone)
        conversation = self.conversations.open(acked.request.origin)
        await conversation.acknowledged_by_phone(self._shown(phone), name, careful=again)
        return record.noted(ACKED_BY_TEXT)

    async def _tell_admin(self, record: InboundRecord) -> None:
        """Its keys (never its values) in the log, and once per set of keys to ``defaults.admin_channel``."""
        read = read_inbound(record.raw, self.policy.inbound.fields.phone, self.policy.inbound.fields.text)
        if isinstance(read, Inbound):
            return
        log.warning("inbound message not readable inbound_id=%s: %s; its keys: %s", record.id, read.why, read.keys)
        channel = self.policy.defaults.admin_channel
        if channel is None:
            return
        shape = hashlib.sha256("\n".join([read.why, *read.keys]).encode()).hexdigest()[:40]
        marker = f"inbound-unreadable:{shape}"
        if await self.settings.get(marker) is not None:
            return  # told before: the same shape again
        await self.notes.unreadable(channel, read.why, read.keys)
        await self.settings.put_once(marker, "told")


def _thread_of(send: SendRecord) -> str | None:
    """The thread a send's story is told in, when everyone in its channel can see it."""
    if send.placement.private:
        return None
    return send.placement.thread_ts or send.request.origin.thread_ts


def _word(record: InboundRecord) -> str:
    return (record.text or "").strip().upper()[:16]


def _unanswered(what: Asks) -> Unanswered:
    if what is Asks.STOP:
        return Unanswered.ALREADY_OUT
    if what is Asks.START:
        return Unanswered.NOT_OUT
    return Unanswered.OPTED_OUT
