"""SendService: record the intent → (outbox) resolve, validate, policy → announce → send → report.

The service knows nothing of Slack: it tells each request's story through a ``Conversation`` opened from the
request's stored ``Origin``, finds people through a ``Directory``, and keeps every step in the ``SendStore`` so
that a restart resumes where it stopped. Every intent ends in exactly one outcome, told once in Slack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.domain import errors as E
from bot.domain.alerts import fit, summary_template
from bot.domain.delivery import RecipientDelivery
from bot.domain.encoding import SmsInfo, analyze
from bot.domain.errors import D7Error, EmptyMessage, InputError, InvalidPhoneNumber, MessageTooLong
from bot.domain.models import (
    AlertInfo,
    Origin,
    Person,
    RecipientRef,
    RefKind,
    SendRecord,
    SendRequest,
    SendResult,
    SendState,
    SendStatus,
    Via,
)
from bot.domain.phone import NumberDisplay, PhoneNumber, parse_phone
from bot.domain.policy import USERGROUP_ID, AlertRule, Policy, SendRequestFacts, evaluate
from bot.domain.ports import Directory, MessageGateway
from bot.metrics import Metrics
from bot.storage.store import SqlStore, now

log = logging.getLogger("bot.service")

WHATSAPP_MAX_CHARS = 4096
DEFAULT_DEADLINE = timedelta(minutes=15)
SEND_LEASE = timedelta(minutes=5)  # longer than the D7 client's worst case (4 attempts x timeouts + backoff)
RETRY_BASE = 5.0  # seconds; doubled per attempt, capped at RETRY_CAP
RETRY_CAP = 120.0
POST_RETRY_CAP = 300.0
CARD_RETRY = timedelta(minutes=1)


class RefusalKind:
    INVALID = "invalid"  # what was typed cannot be sent
    DENIED = "denied"  # the policy says no


@dataclass(frozen=True)
class Refusal:
    """Why a request was not sent; shown only to the requester."""

    kind: str
    problems: tuple[str, ...]


@dataclass(frozen=True)
class PreparedSend:
    """A request that passed every check and is about to go (or went) to D7."""

    send_id: str
    request: SendRequest
    rule: str
    sender: str
    originator: str
    recipients: tuple[PhoneNumber, ...]
    text: str
    sms: SmsInfo | None  # None for WhatsApp
    show_numbers: NumberDisplay
    names: dict[str, str] = field(default_factory=dict)  # E.164 → Slack name, when it came from a profile
    # alerts
    held: tuple[PhoneNumber, ...] = ()  # held back by the rule's per-phone limit: in the summary instead
    held_until: datetime | None = None  # when the first of those summaries is due
    unreached: tuple[str, ...] = ()  # recipients that could not be resolved, and why

    @property
    def via(self) -> Via:
        return self.request.via

    @property
    def alert(self) -> AlertInfo | None:
        return self.request.alert


@dataclass(frozen=True)
class Placement:
    """Where the story continues after the announcement."""

    thread_ts: str | None
    private: bool = False  # only the requester can be told (the bot cannot post in the channel)


@dataclass(frozen=True)
class Outcome:
    """How the send ended: a D7 verdict (accepted / rejected) or an error."""

    result: SendResult | None = None
    error: D7Error | None = None


@dataclass(frozen=True)
class NotSent:
    """Why an alert was not texted although nothing went wrong: a repeat, or every phone over its limit."""

    state: SendState  # DEDUPLICATED | BUNDLED
    window: timedelta | None = None  # the dedupe window, or the per-phone limit's window
    first: SendRecord | None = None  # deduplicated: the send that texted the alert
    limit: int | None = None  # bundled: texts per phone per window


class MessageReader(Protocol):
    """Reads a stored chat message (an alert as posted) as plain text: (text, title)."""

    async def read(self, message: dict[str, Any]) -> tuple[str, str]: ...


class Conversation(Protocol):
    """Where one request's story is told (for Slack: an ephemeral, a parent message and its thread)."""

    async def refuse(self, refusal: Refusal) -> None: ...

    async def not_sent(self, send: PreparedSend, placement: Placement, why: NotSent) -> None: ...

    async def announce(self, send: PreparedSend) -> Placement: ...

    async def retrying(self, send: PreparedSend, placement: Placement, error: D7Error) -> None: ...

    async def finish(
        self, send: PreparedSend, placement: Placement, outcome: Outcome, statuses: Sequence[RecipientDelivery] = ()
    ) -> str | None:
        """Tell the outcome; the ts of the result message when it can be updated in place later."""
        ...

    async def update_card(
        self, send: PreparedSend, result_ts: str, outcome: Outcome, statuses: Sequence[RecipientDelivery]
    ) -> None: ...

    async def undelivered(
        self, send: PreparedSend, placement: Placement, failures: Sequence[RecipientDelivery]
    ) -> None: ...

    async def still_unknown(self, send: PreparedSend, placement: Placement, created_at: datetime) -> None: ...


class Conversations(Protocol):
    """Opens the conversation of a stored origin (also after a restart)."""

    def open(self, origin: Origin) -> Conversation: ...


class _Denied(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RecipientProblems(InputError):
    """One or more recipients cannot be resolved to a valid phone number."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class SendService:
    """Turns ``SendRequest`` into texts through the store; one instance per process."""

    def __init__(
        self,
        policy: Policy,
        gateway: MessageGateway,
        directory: Directory,
        store: SqlStore,
        conversations: Conversations,
        metrics: Metrics | None = None,
        deadline: timedelta = DEFAULT_DEADLINE,
        reader: MessageReader | None = None,
        report_url: str | None = None,
    ) -> None:
        self.policy = policy
        self.reader = reader
        self.report_url = report_url  # where D7 posts delivery reports (None: no reports)
        self.on_request_id: Callable[[str], None] = lambda request_id: None  # reports may be waiting for it
        self.gateway = gateway
        self.directory = directory
        self.store = store
        self.conversations = conversations
        self.metrics = metrics or Metrics()
        self.deadline = deadline
        self._summaries: set[str] = set()  # summary keys this process recorded already (saves an insert each)
        self._policy_groups = sorted({u for rule in policy.rules for u in rule.users if USERGROUP_ID.match(u)})

    # ------------------------------------------------------------ before the ack

    async def record(self, request: SendRequest) -> SendRecord | None:
        """Record the intent (before Slack is answered); None when this delivery was recorded before."""
        record = await self.store.record(request, self.deadline)
        if record is None:
            log.info("duplicate delivery ignored key=%s", request.idempotency_key)
        return record

    # ------------------------------------------------------------ the outbox worker's step

    async def handle(self, record: SendRecord, worker_id: str) -> None:
        """Move one leased intent as far as it can go. Never raises for anything a user could cause."""
        conversation = self.conversations.open(record.request.origin)
        if record.state is SendState.PENDING:
            record = await self._advance(record, worker_id, conversation)
            if record.state in (SendState.PENDING, SendState.SENDING):
                return  # waiting to retry, or lost the lease
        if record.state.final and record.posted_at is None:
            await self._post_outcome(record, worker_id, conversation)
        elif record.state.final and record.card_due_at is not None:
            await self._update_card(record, worker_id, conversation)

    async def _advance(self, record: SendRecord, worker_id: str, conversation: Conversation) -> SendRecord:
        learnt: dict[str, Any] = {}  # written together with 'sending': one commit instead of three
        if record.sender is None:  # not checked yet
            record, checked = await self._check(record, worker_id)
            if checked is None:
                return record  # denied
            send = checked
            learnt |= _checked_columns(send)
        else:
            send = self.prepared(record)
        if record.thread_ts is None and record.request.alert is not None:
            # Alerts: no announcement, the outcome goes straight into the alert's thread (one reply per alert).
            learnt["thread_ts"] = record.request.origin.thread_ts
            record = replace(record, thread_ts=record.request.origin.thread_ts)
        elif record.thread_ts is None and not record.private:
            # A crash between here and 'sending' means at worst a second announcement, never a second text.
            try:
                placement = await conversation.announce(send)
            except Exception:
                # The text matters more than its announcement: send anyway; the outcome finds another way.
                log.exception("could not announce send_id=%s; sending anyway", record.id)
            else:
                learnt |= {"thread_ts": placement.thread_ts, "private": placement.private}
                record = replace(record, thread_ts=placement.thread_ts, private=placement.private)
        return await self._send(record, send, worker_id, conversation, learnt)

    async def _check(self, record: SendRecord, worker_id: str) -> tuple[SendRecord, PreparedSend | None]:
        """Resolve and check; a refusal is stored at once (it is final), a pass only in memory."""
        try:
            if record.request.alert is not None:
                return await self._check_alert(record, worker_id)
            send = await self.prepare(record.request, record.id)
        except (InputError, _Denied) as exc:
            refusal = _refusal(exc)
            values: dict[str, Any] = {
                "state": SendState.DENIED.value,
                "refusal_kind": refusal.kind,
                "problems": list(refusal.problems),
                "finished_at": now(),
            }
            await self.store.update(record.id, worker_id, **values)
            await self._release_alert(record)
            self.metrics.sends.labels(record.request.via.value, "denied").inc()
            log.info("send denied send_id=%s kind=%s", record.id, refusal.kind, extra={"send_id": record.id})
            denied = replace(record, state=SendState.DENIED, refusal_kind=refusal.kind, problems=list(refusal.problems))
            return denied, None
        return replace(record, **_checked_columns(send)), send

    async def _send(
        self,
        record: SendRecord,
        send: PreparedSend,
        worker_id: str,
        conversation: Conversation,
        learnt: dict[str, Any],
    ) -> SendRecord:
        if not await self.store.start_sending(record.id, worker_id, SEND_LEASE, **learnt):
            log.warning("lost the lease before sending send_id=%s; another worker has it", record.id)
            return replace(record, state=SendState.SENDING)
        placement = Placement(record.thread_ts, record.private)
        told = record.retry_notice_posted

        async def on_retry(error: D7Error, attempt: int, delay: float) -> None:
            nonlocal told
            self.metrics.d7_retries.labels(send.via.value, type(error).__name__).inc()
            if not told:  # say it once, not on every attempt
                told = True
                await _safely(conversation.retrying(send, placement, error), "retrying", record.id)
                await self.store.update(record.id, worker_id, retry_notice_posted=True)

        started = time.perf_counter()
        values: dict[str, Any]
        try:
            result = await self._call_d7(send, on_retry)
        except D7Error as exc:
            self.metrics.d7_latency.labels(send.via.value).observe(time.perf_counter() - started)
            retry_at = _retry_time(exc, record.attempts + 1)
            deadline = record.deadline_at or record.created_at + self.deadline
            if exc.retryable and retry_at < deadline:
                # Nothing was sent: back to pending, to be tried again later by whichever worker is free.
                await on_retry(exc, record.attempts + 1, (retry_at - now()).total_seconds())
                await self.store.update(
                    record.id,
                    worker_id,
                    state=SendState.PENDING.value,
                    next_attempt_at=retry_at,
                    claimed_by=None,
                    lease_until=None,
                    **_error_columns(exc),
                )
                log.warning(
                    "D7 unavailable send_id=%s attempt=%d retry_at=%s",
                    record.id,
                    record.attempts + 1,
                    retry_at.isoformat(),
                    extra={"send_id": record.id},
                )
                return replace(record, state=SendState.PENDING)
            state = SendState.UNKNOWN if isinstance(exc, E.D7OutcomeUnknownError) else SendState.FAILED
            if exc.retryable:
                exc = E.D7UnavailableError(
                    f"D7 stayed unavailable until the {self.deadline.total_seconds() / 60:.0f}-minute deadline",
                    http_status=exc.http_status,
                    code=exc.code,
                )
            values = {"state": state.value, **_error_columns(exc)}
            log.warning(
                "send %s send_id=%s via=%s error=%s http_status=%s code=%s",
                state.value,
                record.id,
                send.via.value,
                type(exc).__name__,
                exc.http_status,
                exc.code,
                extra={"send_id": record.id},
            )
        except Exception:
            log.exception("send crashed send_id=%s", record.id)
            values = {
                "state": SendState.UNKNOWN.value,
                "error_kind": "D7OutcomeUnknownError",
                "error_message": "an internal error interrupted the send; it may or may not have gone out",
            }
        else:
            self.metrics.d7_latency.labels(send.via.value).observe(time.perf_counter() - started)
            state = SendState.ACCEPTED if result.status is SendStatus.ACCEPTED else SendState.REJECTED
            values = {"state": state.value, "request_id": result.request_id, "d7_created_at": result.created_at}
            log.info(
                "send %s send_id=%s via=%s sender=%s recipients=%d request_id=%s elapsed_ms=%d",
                state.value,
                record.id,
                send.via.value,
                send.sender,
                len(send.recipients),
                result.request_id,
                (time.perf_counter() - started) * 1000,
                extra={"send_id": record.id, "request_id": result.request_id},
            )
        values["finished_at"] = now()
        await self.store.update(record.id, worker_id, **values)
        if values["state"] in (SendState.FAILED.value, SendState.REJECTED.value):
            await self._release_alert(record)  # nothing went out: the next repeat of this alert may be texted
        if values.get("request_id"):
            self.on_request_id(values["request_id"])
        self.metrics.sends.labels(send.via.value, values["state"]).inc()
        return replace(
            record,
            state=SendState(values["state"]),
            attempts=record.attempts + 1,
            request_id=values.get("request_id"),
            d7_created_at=values.get("d7_created_at"),
            http_status=values.get("http_status"),
            error_code=values.get("error_code"),
            error_message=values.get("error_message"),
            error_kind=values.get("error_kind"),
            finished_at=values["finished_at"],
        )

    async def _call_d7(self, send: PreparedSend, on_retry: Any) -> SendResult:
        numbers = [n.e164 for n in send.recipients]
        schedule = send.request.schedule_time
        if send.via is Via.SMS:
            return await self.gateway.send_sms(
                numbers,
                send.text,
                originator=send.originator,
                report_url=self.report_url,
                schedule_time=schedule,
                on_retry=on_retry,
            )
        return await self.gateway.send_whatsapp(
            numbers,
            send.text,
            originator=send.originator,
            cust_ref=send.send_id,
            report_url=self.report_url,
            schedule_time=schedule,
            on_retry=on_retry,
        )

    async def _post_outcome(self, record: SendRecord, worker_id: str, conversation: Conversation) -> None:
        result_ts: str | None = None
        try:
            placement = Placement(record.thread_ts, record.private)
            if record.state is SendState.DENIED:
                await conversation.refuse(Refusal(record.refusal_kind or RefusalKind.INVALID, tuple(record.problems)))
            elif record.state in (SendState.DEDUPLICATED, SendState.BUNDLED):
                send = await self._with_holds(self.prepared(record))
                await conversation.not_sent(send, placement, await self._not_sent(record))
            else:
                send = await self._with_holds(self.prepared(record))
                statuses = await self.store.statuses(record.id) if record.request_id else []
                result_ts = await conversation.finish(send, placement, outcome_of(record), statuses)
        except Exception as exc:
            age = now() - record.created_at
            if age > timedelta(hours=24):
                log.error("gave up telling Slack the outcome of send_id=%s after 24 h: %s", record.id, exc)
                await self.store.update(record.id, worker_id, posted_at=now(), claimed_by=None, lease_until=None)
                return
            delay = min(POST_RETRY_CAP, 2.0 ** min(record.attempts + 2, 10))
            log.warning("could not tell Slack the outcome of send_id=%s (%s); retrying in %.0fs", record.id, exc, delay)
            await self.store.update(
                record.id,
                worker_id,
                attempts=record.attempts + 1,
                next_attempt_at=now() + timedelta(seconds=delay),
                claimed_by=None,
                lease_until=None,
            )
            return
        await self.store.update(
            record.id, worker_id, posted_at=now(), result_ts=result_ts, claimed_by=None, lease_until=None
        )

    async def _update_card(self, record: SendRecord, worker_id: str, conversation: Conversation) -> None:
        """New delivery statuses: rewrite the result message, and say so in the thread when a phone was not reached."""
        due = record.card_due_at
        statuses = await self.store.statuses(record.id)
        send = await self._with_holds(self.prepared(record))
        try:
            if record.result_ts is not None:
                await conversation.update_card(send, record.result_ts, outcome_of(record), statuses)
            failures = [s for s in statuses if s.delivery.failed and not s.notified]
            if failures:
                await conversation.undelivered(send, Placement(record.thread_ts, record.private), failures)
                await self.store.mark_notified(record.id, [f.recipient for f in failures])
        except Exception as exc:
            log.warning("could not show new delivery statuses of send_id=%s (%s); retrying in a minute", record.id, exc)
            await self.store.update(
                record.id, worker_id, card_due_at=now() + CARD_RETRY, claimed_by=None, lease_until=None
            )
            return
        if due is not None:
            await self.store.card_done(record.id, worker_id, due)
        await self.store.release(record.id, worker_id)

    async def note_unknown(self, record: SendRecord) -> None:
        """Reconciliation of an ``unknown`` outcome: D7 has no look-up without a request_id; a person decides."""
        conversation = self.conversations.open(record.request.origin)
        placement = Placement(record.thread_ts, record.private)
        await conversation.still_unknown(self.prepared(record), placement, record.created_at)

    # ------------------------------------------------------------ alerts

    async def _check_alert(self, record: SendRecord, worker_id: str) -> tuple[SendRecord, PreparedSend | None]:
        """Dedup, render, resolve, per-phone limits. Raises ``InputError``/``_Denied`` like ``prepare``."""
        alert = _alert_of(record)
        rule = self.policy.alert_rule(alert.rule)
        if rule is None:
            raise _Denied(f"the alert rule '{alert.rule}' is no longer in the policy")
        if alert.is_summary:
            return record, await self._prepare_summary(record, rule)
        if alert.fingerprint is not None:
            leader = await self.store.lead_alert(alert.fingerprint, record.id, rule.dedupe_window)
            if leader != record.id:
                values: dict[str, Any] = {
                    "state": SendState.DEDUPLICATED.value,
                    "rule": rule.name,
                    "sender": rule.sender,
                    "duplicate_of": leader,
                    "finished_at": now(),
                }
                await self.store.update(record.id, worker_id, **values)
                self.metrics.sends.labels(record.request.via.value, "deduplicated").inc()
                log.info("alert deduplicated send_id=%s first=%s", record.id, leader, extra={"send_id": record.id})
                return replace(record, state=SendState.DEDUPLICATED, rule=rule.name, duplicate_of=leader), None
        text = await self._alert_text(record, rule)
        numbers, names, unreached = await self._resolve(record.request.recipients)
        if not numbers:
            raise RecipientProblems(unreached or ["no recipients"])
        held: list[PhoneNumber] = []
        if rule.max_per_phone is not None:
            limit = rule.max_per_phone
            taken = await self.store.take_quota(record.id, rule.name, [n.e164 for n in numbers], limit.count, limit.per)
            for number in numbers:
                is_held, window_start = taken[number.e164]
                if is_held:
                    held.append(number)
                    await self._schedule_summary(record, rule.name, number.e164, window_start, window_start + limit.per)
        send = self._alert_send(
            record,
            rule,
            tuple(n for n in numbers if n not in held),
            text,
            names,
            held=tuple(held),
            unreached=tuple(unreached),
        )
        if send.recipients:
            return replace(record, **_checked_columns(send)), send
        # Every phone is over its limit: nothing to send now; the summaries will say it.
        values = {**_checked_columns(send), "state": SendState.BUNDLED.value, "finished_at": now()}
        await self.store.update(record.id, worker_id, **values)
        self.metrics.sends.labels(record.request.via.value, "bundled").inc()
        log.info("alert bundled send_id=%s held=%d", record.id, len(held), extra={"send_id": record.id})
        return replace(record, state=SendState.BUNDLED, **_checked_columns(send)), None

    async def _alert_text(self, record: SendRecord, rule: AlertRule) -> str:
        """The rule's template filled in from the alert as posted, cut to the rule's budget."""
        message = _alert_of(record).message or {}
        if self.reader is not None:
            body, title = await self.reader.read(message)
        else:
            body, title = record.request.text, ""
        channel_id = record.request.channel_id
        fields = {"text": body, "title": title, "channel": f"#{channel_id}", "link": ""}
        if "{channel}" in rule.template:
            fields["channel"] = "#" + await self._channel_name(channel_id)
        if "{link}" in rule.template and message.get("ts"):
            try:
                fields["link"] = await self.directory.permalink(channel_id, str(message["ts"]))
            except Exception as exc:
                log.warning("no permalink for an alert in %s: %s", channel_id, exc)
        fitted = fit(rule.template, fields, record.request.via, rule.max_segments)
        return fitted.text

    async def _channel_name(self, channel_id: str) -> str:
        try:
            return await self.directory.channel_name(channel_id)
        except Exception as exc:
            log.warning("cannot read the name of %s (is channels:read granted?): %s", channel_id, exc)
            return channel_id

    async def _schedule_summary(
        self, record: SendRecord, rule: str, phone: str, window_start: datetime, window_end: datetime
    ) -> None:
        """The summary text for ``phone``'s window, recorded once (the first held alert) and due at its end."""
        key = f"summary:{rule}:{phone}:{window_start.isoformat()}"[:255]
        if key in self._summaries:
            return  # recorded (by this process) for an earlier held alert; the database would say the same
        request = SendRequest(
            via=record.request.via,
            origin=replace(record.request.origin, surface="summary", response_url=None),
            recipients=(RecipientRef(RefKind.NUMBER, phone),),
            text="",
            idempotency_key=key,
            sender=record.request.sender,
            alert=AlertInfo(rule=rule, kind="summary", phone=phone, window_start=window_start),
        )
        if await self.store.record(request, self.deadline, not_before=window_end) is not None:
            log.info("summary scheduled rule=%s at=%s", rule, window_end.isoformat(), extra={"send_id": record.id})
        if len(self._summaries) > 10_000:
            self._summaries.clear()
        self._summaries.add(key)

    async def _prepare_summary(self, record: SendRecord, rule: AlertRule) -> PreparedSend:
        alert = _alert_of(record)
        if alert.phone is None or alert.window_start is None:
            raise _Denied("this summary lost its phone number or window; nothing to sum up")
        held = await self.store.held_alerts(rule.name, alert.phone, alert.window_start)
        if not held:
            raise _Denied("no alerts were held back in this window, so there is nothing to sum up")
        channels = [f"#{await self._channel_name(c)}" for c in dict.fromkeys(r.request.channel_id for r in held)]
        latest = held[-1]
        template = summary_template(len(held), channels, held[0].created_at)
        text = fit(template, {"text": latest.text_as_sent.strip()}, record.request.via, rule.max_segments).text
        number = PhoneNumber(alert.phone)
        names = {k: v for k, v in latest.names.items() if k == number.e164}
        return self._alert_send(record, rule, (number,), text, names)

    def _alert_send(
        self,
        record: SendRecord,
        rule: AlertRule,
        recipients: tuple[PhoneNumber, ...],
        text: str,
        names: dict[str, str],
        held: tuple[PhoneNumber, ...] = (),
        unreached: tuple[str, ...] = (),
    ) -> PreparedSend:
        """An alert or summary about to go out through its rule's sender."""
        sender = self.policy.senders[rule.sender]
        return PreparedSend(
            send_id=record.id,
            request=record.request,
            rule=rule.name,
            sender=rule.sender,
            originator=sender.originator,
            recipients=recipients,
            text=text,
            sms=analyze(text) if sender.via is Via.SMS else None,
            show_numbers=self.policy.defaults.show_numbers,
            names=names,
            held=held,
            unreached=unreached,
        )

    async def _release_alert(self, record: SendRecord) -> None:
        alert = record.request.alert
        if alert is not None and alert.fingerprint is not None:
            try:
                await self.store.release_alert(alert.fingerprint, record.id)
            except Exception:
                log.exception("could not release the dedup entry of send_id=%s", record.id)

    async def _with_holds(self, send: PreparedSend) -> PreparedSend:
        """The send with when its held-back phones get their summary (for the thread reply)."""
        alert = send.alert
        if not send.held or alert is None:
            return send
        rule = self.policy.alert_rule(alert.rule)
        if rule is None or rule.max_per_phone is None:
            return send
        starts = await self.store.alert_windows_of(send.send_id)
        ends = [starts[n.e164] + rule.max_per_phone.per for n in send.held if n.e164 in starts]
        return replace(send, held_until=min(ends)) if ends else send

    async def _not_sent(self, record: SendRecord) -> NotSent:
        rule = self.policy.alert_rule(record.request.alert.rule) if record.request.alert else None
        if record.state is SendState.DEDUPLICATED:
            first = await self.store.get(record.duplicate_of) if record.duplicate_of else None
            return NotSent(record.state, window=rule.dedupe_window if rule else None, first=first)
        limit = rule.max_per_phone if rule else None
        return NotSent(record.state, window=limit.per if limit else None, limit=limit.count if limit else None)

    # ------------------------------------------------------------ checking

    def prepared(self, record: SendRecord) -> PreparedSend:
        """The checked send, rebuilt from what the store kept."""
        text = record.text_as_sent.strip()
        held = set(record.held)
        return PreparedSend(
            send_id=record.id,
            request=record.request,
            rule=record.rule or "",
            sender=record.sender or "",
            originator=record.originator or "",
            recipients=tuple(PhoneNumber(n) for n in record.recipients or [] if n not in held),
            text=text,
            sms=analyze(text) if record.request.via is Via.SMS and text else None,
            show_numbers=self.policy.defaults.show_numbers,
            names=record.names,
            held=tuple(PhoneNumber(n) for n in record.held),
            unreached=tuple(record.problems) if record.request.alert is not None else (),
        )

    async def prepare(self, request: SendRequest, send_id: str) -> PreparedSend:
        """Resolve and check everything; raises ``InputError`` or ``_Denied``."""
        text = request.text.strip()
        if not text:
            raise EmptyMessage()
        sms = check_length(request.via, text, self.policy.defaults.max_segments)
        recipients, names = await self.resolve(request.recipients)
        groups = await self.user_groups(request.user_id)
        decision = evaluate(
            self.policy,
            SendRequestFacts(
                user_id=request.user_id,
                channel_id=request.channel_id,
                via=request.via,
                recipients=recipients,
                sender=request.sender,
                user_groups=groups,
                channel_label=f"<#{request.channel_id}>",
                user_label=f"<@{request.user_id}>",
            ),
        )
        if not decision.allowed or decision.sender is None or decision.rule is None:
            raise _Denied(decision.reason)
        return PreparedSend(
            send_id=send_id,
            request=request,
            rule=decision.rule,
            sender=decision.sender,
            originator=self.policy.senders[decision.sender].originator,
            recipients=tuple(recipients),
            text=text,
            sms=sms,
            show_numbers=self.policy.defaults.show_numbers,
            names=names,
        )

    async def resolve(self, refs: Sequence[RecipientRef]) -> tuple[list[PhoneNumber], dict[str, str]]:
        """Phone numbers for every reference, in order, without duplicates; every problem reported at once."""
        numbers, names, problems = await self._resolve(refs)
        if not refs:
            problems.append("no recipients")
        if problems:
            raise RecipientProblems(problems)
        return numbers, names

    async def _resolve(self, refs: Sequence[RecipientRef]) -> tuple[list[PhoneNumber], dict[str, str], list[str]]:
        """The numbers that could be resolved, their names, and a problem for each that could not."""
        region = self.policy.defaults.region
        problems: list[str] = []
        numbers: list[PhoneNumber] = []
        names: dict[str, str] = {}

        async def people(user_ids: Sequence[str]) -> list[Person | InputError]:
            results = await asyncio.gather(*(self.directory.person(u) for u in user_ids), return_exceptions=True)
            out: list[Person | InputError] = []
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, InputError):
                    raise result
                out.append(result)
            return out

        def add_person(person: Person | InputError) -> None:
            if isinstance(person, InputError):
                problems.append(str(person))
                return
            try:
                number = phone_of(person, region)
            except InputError as exc:
                problems.append(str(exc))
                return
            numbers.append(number)
            names.setdefault(number.e164, person.name)

        for ref in refs:
            if ref.kind is RefKind.NUMBER:
                try:
                    numbers.append(parse_phone(ref.value, region))
                except InvalidPhoneNumber as exc:
                    problems.append(str(exc))
            elif ref.kind is RefKind.CONTACTS:
                if ref.value not in self.policy.contacts:
                    problems.append(f"there is no contact group '{ref.value}' in the policy")
                else:
                    numbers += self.policy.contact_numbers(ref.value)
            elif ref.kind is RefKind.USER:
                for person in await people([ref.value]):
                    add_person(person)
            else:
                try:
                    members = await self.directory.group_members(ref.value)
                except InputError as exc:
                    problems.append(str(exc))
                    continue
                if not members:
                    problems.append(f"the user group {ref} has no members")
                for person in await people(members):
                    add_person(person)
        return list(dict.fromkeys(numbers)), names, problems

    async def user_groups(self, user_id: str) -> frozenset[str]:
        """The policy's user groups (S…) this user is in."""
        groups = set()
        for group in self._policy_groups:
            try:
                if user_id in await self.directory.group_members(group):
                    groups.add(group)
            except InputError as exc:
                log.warning("user group %s named in the policy cannot be read: %s", group, exc)
        return frozenset(groups)


def outcome_of(record: SendRecord) -> Outcome:
    """The outcome as it was recorded (so it can be told after a restart)."""
    if record.state in (SendState.ACCEPTED, SendState.REJECTED) and record.request_id is not None:
        status = SendStatus.ACCEPTED if record.state is SendState.ACCEPTED else SendStatus.REJECTED
        dry_run = record.request_id.startswith("dry-run-")
        return Outcome(result=SendResult(record.request_id, status, record.d7_created_at, dry_run=dry_run))
    message = record.error_message or "no details"
    found = getattr(E, record.error_kind or "", None)
    error: D7Error
    if found is E.D7ValidationError:
        error = E.D7ValidationError(message, errors=[], http_status=record.http_status, code=record.error_code)
    elif isinstance(found, type) and issubclass(found, D7Error):
        error = found(message, http_status=record.http_status, code=record.error_code)
    elif record.state is SendState.UNKNOWN:
        error = E.D7OutcomeUnknownError(message, http_status=record.http_status, code=record.error_code)
    else:
        error = D7Error(message, http_status=record.http_status, code=record.error_code)
    return Outcome(error=error)


def _alert_of(record: SendRecord) -> AlertInfo:
    if record.request.alert is None:
        raise ValueError(f"send {record.id} is not an alert")
    return record.request.alert


def _checked_columns(send: PreparedSend) -> dict[str, Any]:
    """What checking decided, as both the row's columns and ``SendRecord`` fields (same names)."""
    columns: dict[str, Any] = {
        "rule": send.rule,
        "sender": send.sender,
        "originator": send.originator,
        "recipients": [n.e164 for n in (*send.recipients, *send.held)],
        "names": send.names,
        "encoding": send.sms.encoding.value if send.sms else None,
        "segments": send.sms.segments if send.sms else None,
    }
    if send.alert is not None:  # the text came from the rule's template; who was held back or not reached
        columns |= {"sent_text": send.text, "held": [n.e164 for n in send.held], "problems": list(send.unreached)}
    return columns


def _error_columns(exc: D7Error) -> dict[str, Any]:
    return {
        "error_kind": type(exc).__name__,
        "http_status": exc.http_status,
        "error_code": exc.code,
        "error_message": str(exc)[:2000],
    }


def _retry_time(exc: D7Error, attempt: int) -> datetime:
    delay = exc.retry_after if exc.retry_after is not None else min(RETRY_CAP, RETRY_BASE * 2.0 ** (attempt - 1))
    return now() + timedelta(seconds=delay)


def _refusal(exc: InputError | _Denied) -> Refusal:
    if isinstance(exc, _Denied):
        return Refusal(RefusalKind.DENIED, (exc.reason,))
    if isinstance(exc, RecipientProblems):
        return Refusal(RefusalKind.INVALID, tuple(exc.problems))
    return Refusal(RefusalKind.INVALID, (str(exc),))


def phone_of(person: Person, region: str) -> PhoneNumber:
    """The person's profile phone as a valid number, or an ``InputError`` that names them."""
    who = f"@{person.name}"
    if person.deleted:
        raise InputError(f"{who} is deactivated")
    if person.is_bot:
        raise InputError(f"{who} is a bot and has no phone")
    if not person.phone or not person.phone.strip():
        raise InputError(f"{who} has no phone number in their Slack profile")
    try:
        return parse_phone(person.phone, region)
    except InvalidPhoneNumber as exc:
        raise InputError(f"{who} has an unusable phone number in their Slack profile: {exc}") from None


def check_length(via: Via, text: str, max_segments: int) -> SmsInfo | None:
    """The SMS encoding of ``text``, or ``InputError`` when it is too long for ``via``."""
    if via is Via.WHATSAPP:
        if len(text) > WHATSAPP_MAX_CHARS:
            raise InputError(f"the message has {len(text)} characters; WhatsApp allows at most {WHATSAPP_MAX_CHARS}")
        return None
    info = analyze(text)
    if info.segments > max_segments:
        raise MessageTooLong(info.segments, max_segments, info.encoding.label)
    return info


async def _safely(call: Awaitable[None], what: str, send_id: str) -> None:
    """A progress note that cannot be posted must not stop the send."""
    try:
        await call
    except Exception:
        log.exception("could not post %s for send_id=%s", what, send_id)
