"""The send pipeline: one leased intent moved as far as it can go, each step kept before the next.

    pending ──check──▶ denied | deduplicated | bundled                      (told, nothing sent)
       │
       └──announce──▶ sending ──D7──▶ accepted | rejected | failed | unknown  (told in the thread)
                         │
                         └── D7 provably did not send (503, 429…): pending again, retried until the deadline

``sending`` is kept before D7 is called, so a crash from then on ends in ``unknown``, never in a second text. The
D7 call is split in three: the call, ``_on_error`` (defer or fail) and ``_on_result``. A send to more phones than
one D7 request takes (``per_request``) goes in several requests, one after the other (``broadcasts``): only the
first can be deferred and tried again, since once it is accepted some phones have their text.

Any other failure before D7 is called (a Slack look-up, the database) is not the requester's: the intent waits
(``CHECK_RETRY``, counted as attempts, logged once) and is refused in plain words at its deadline. After D7 has
answered, its answer is kept in memory until the database takes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cached_property

from bot.domain.clock import Clock, utc_now
from bot.domain.errors import D7Error, D7OutcomeUnknownError, D7UnavailableError, ServiceUnavailable
from bot.domain.events import Bus, Events, RequestIdKnown
from bot.domain.models import OutgoingText, Via
from bot.domain.ports import (
    Abandonments,
    AnswerJournal,
    BudgetLedger,
    Conversation,
    Conversations,
    MessageGateway,
    RetryHook,
    RightOfWay,
    SendMetrics,
    SendQueue,
)
from bot.domain.retry import RetryPolicy
from bot.domain.sends import (
    LeaseLost,
    Outcome,
    PreparedSend,
    Refusal,
    RefusalKind,
    SendRecord,
    SendState,
    prepared,
)
from bot.domain.templates import OutgoingTemplate
from bot.sending import texts
from bot.sending.admission import Admission, Refused
from bot.sending.alerts import AlertDesk, Bundle, Repeat
from bot.sending.announcing import ANNOUNCE_WITHIN, ANNOUNCED_WITHIN, Announcer, tried_before
from bot.sending.broadcasts import the_rest
from bot.sending.keeping import Journaled, Waits, keep
from bot.sending.links import ActionLinks
from bot.sending.spending import Spending
from bot.sending.telling import Teller

log = logging.getLogger("bot.sending")

# Short, and renewed by the outbox's heartbeat while the send is in flight: a dead replica's sends are taken
# over within a lease and a heartbeat.
SEND_LEASE = timedelta(seconds=30)
# After the D7 client gave up on a safe failure: 5 s, doubling to at most 2 minutes (or D7's Retry-After),
# until the send's deadline.
SEND_RETRY = RetryPolicy(base_delay=5.0, max_delay=120.0, max_attempts=None, max_retry_after=None, jitter=False)
# A step before D7 failed (Slack, the database): 2 s doubling to 30 s, so the send goes within 30 s of recovery.
CHECK_RETRY = RetryPolicy(base_delay=2.0, max_delay=30.0, max_attempts=None, max_retry_after=None, jitter=True)
CRASHED = "an internal error interrupted the send; it may or may not have gone out"


@dataclass(frozen=True, kw_only=True, eq=False)
class Pipeline:
    """Moves intents through their states; the outbox worker calls ``handle`` for each one it leases."""

    sends: SendQueue
    admission: Admission
    alerts: AlertDesk
    teller: Teller
    gateway: MessageGateway
    conversations: Conversations
    metrics: SendMetrics
    deadline: timedelta  # safe failures are retried until this long after the request
    report_url: str | None = None  # where D7 posts delivery reports (None: no reports)
    events: Events = field(default_factory=Bus)  # request_ids known, sends billed (nobody listens by default)
    intake: Abandonments | None = None  # intents whose sender was told they were not recorded (None: none are)
    budgets: BudgetLedger | None = None  # the policy's budgets (None: not counted)
    right_of_way: RightOfWay | None = None  # Slack's requests first (None: the outbox never waits for them)
    links: ActionLinks | None = None  # each phone's action link at the end of alert texts (None: no PUBLIC_URL)
    journal: AnswerJournal | None = None  # D7's answers on disk while the database does not take them (None: memory)
    per_request: int | None = None  # recipients in one D7 request (None: all); a larger send goes in several
    retry: RetryPolicy = SEND_RETRY
    check_retry: RetryPolicy = CHECK_RETRY
    lease: timedelta = SEND_LEASE
    announce_within: float = ANNOUNCE_WITHIN
    announced_within: float = ANNOUNCED_WITHIN
    clock: Clock = utc_now
    waits: Waits = field(default_factory=Waits)  # sends between two D7 attempts
    announcer: Announcer = field(default_factory=Announcer)  # announcements slower than the text's budget

    async def handle(self, record: SendRecord) -> None:
        """Move one leased intent as far as it can go. Never raises for anything a user could cause."""
        conversation = self.conversations.open(record.request.origin, record.created_at)
        send: PreparedSend | None = None
        try:
            fresh = False  # the outcome reached here, now: nothing of its story was tried before
            if record.state is SendState.PENDING:
                await self.give_way()
                record, send = await self._advance(record, conversation)
                if not record.state.final:
                    return  # waiting to retry, or lost the lease
                placement = await self.announcer.announced(record, self.announced_within)
                record = record if placement is None else await self.sends.place(record, placement)
                fresh = True
            await self.give_way()
            if record.state.final and record.posted_at is None:
                await self.teller.tell(record, conversation, send, careful=not fresh)
            elif record.state.final and record.card_due_at is not None:
                await self.teller.show_statuses(record, conversation)
        except LeaseLost:
            # This worker was presumed stopped and another took the intent over: its verdict is the one told.
            log.warning("send_id=%s was taken over by another worker; leaving it", record.id, extra=_ids(record))

    @cached_property
    def spending(self) -> Spending:
        return Spending(self.admission.policy, self.budgets, self.metrics, self.events, self.clock)

    async def give_way(self) -> None:
        """Wait while Slack's requests wait for their answer (the outbox asks too, before it claims)."""
        if self.right_of_way is not None:
            await self.right_of_way.give_way()

    async def _advance(self, record: SendRecord, conversation: Conversation) -> tuple[SendRecord, PreparedSend | None]:
        try:
            if record.checked is None:  # not checked yet
                checked = await self._check(record)
                if isinstance(checked, SendRecord):
                    return checked, None  # refused, or an alert not texted on purpose
                send = checked
            else:  # checked before D7 was unavailable: as it was
                send = self.teller.prepared(record)
            template = self._template(send)  # as the policy has it now (it may have changed while the send waited)
            if self.links is not None and not send.endings:  # checked before D7 was unavailable: its links again
                send = await self.links.ending(send)
            await self.give_way()
            careful = tried_before(record, self.clock())
            placement = await self.announcer.place(record, send, conversation, self.announce_within, careful)
            started = await self.sends.start(record, send.checked, placement, self.lease)
            self.announcer.placed(record.id)
        except (LeaseLost, asyncio.CancelledError):
            raise
        except Refused as refused:  # the policy changed under a waiting send
            return await self._deny(record, refused.refusal), None
        except Exception as exc:  # before D7: nothing was sent, so it can wait and be tried again
            return await self._not_now(record, exc), None
        if started is None:
            log.warning("lost the lease before sending send_id=%s; another worker has it", record.id)
            return replace(record, state=SendState.SENDING), None
        return await self._send(started, send, conversation, template), send

    async def _not_now(self, record: SendRecord, error: Exception) -> SendRecord:
        """A step before D7 failed for a reason that may pass: try again later, or refuse at the deadline."""
        delay = self.check_retry.wait(record.attempts + 1)
        until = self.clock() + timedelta(seconds=delay)
        why = str(error) if isinstance(error, ServiceUnavailable) else f"an internal error ({type(error).__name__})"
        if until >= record.deadline_at:
            log.error("send_id=%s not sent: %s until its deadline", record.id, why, extra=_ids(record))
            return await self._deny(record, Refusal(RefusalKind.UNAVAILABLE, (why,)))
        if record.attempts == 0:  # once per send, not once per try; an unexpected error with its traceback
            trace = None if isinstance(error, ServiceUnavailable) else error
            log.warning(
                "send_id=%s waits: %s; trying again in %.0fs", record.id, why, delay, extra=_ids(record), exc_info=trace
            )
        return await self.sends.later(record, until)

    async def _check(self, record: SendRecord) -> PreparedSend | SendRecord:
        """The send as checked and counted against its budgets, or the record in its final state (a refusal is
        kept at once: it is final)."""
        via = record.request.via.value
        try:
            if self.intake is not None and (why := self.intake.abandoned(record)) is not None:
                raise Refused(Refusal(RefusalKind.UNRECORDED, (why,)))
            if record.request.alert is None:
                send = await self.admission.admit(record.id, record.request, record.created_at)
            else:
                verdict = await self.alerts.take(record)
                if isinstance(verdict, Repeat):
                    record = await self.sends.deduplicate(record, verdict.first_id)
                    await self.spending.refund(record)  # charged by an earlier try that the database cut short
                    self.metrics.send_ended(via, "deduplicated")
                    log.info("alert deduplicated send_id=%s first=%s", record.id, verdict.first_id, extra=_ids(record))
                    return record
                if isinstance(verdict, Bundle):
                    record = await self.sends.bundle(record, verdict.checked)
                    await self.spending.refund(record)
                    self.metrics.send_ended(via, "bundled")
                    log.info(
                        "alert bundled send_id=%s held=%d", record.id, len(verdict.checked.held), extra=_ids(record)
                    )
                    return record
                show = self.admission.policy.defaults.show_numbers
                send = prepared(
                    record.id, record.request, verdict.checked, show, in_thread=verdict.thread, acts_on=verdict.acts_on
                )
                if self.links is not None:  # before it is charged: a link's characters are billed too
                    send = await self.links.ending(send)
            await self.spending.charge(send)
        except Refused as refused:
            return await self._deny(record, refused.refusal)
        return send

    async def _deny(self, record: SendRecord, refusal: Refusal) -> SendRecord:
        """Refused before D7 was called: kept at once (it is final), and whatever the send counted is given back:
        its budgets, an alert's per-phone counts, and its dedup entry (the next repeat may be texted)."""
        record = await self.sends.deny(record, refusal)
        await self.alerts.release(record)
        await self.alerts.give_back(record)
        await self.spending.refund(record)
        self.metrics.send_ended(record.request.via.value, "denied")
        log.info("send denied send_id=%s kind=%s", record.id, refusal.kind, extra=_ids(record))
        return record

    async def _send(
        self, record: SendRecord, send: PreparedSend, conversation: Conversation, template: OutgoingTemplate | None
    ) -> SendRecord:
        on_retry = self._retry_hook(record, send, conversation)
        began = time.perf_counter()
        batches = self._texts(send, template)
        try:
            result = await self.gateway.send(batches[0], on_retry)
        except asyncio.CancelledError:
            wait = self.waits.end(record.id)
            if wait is not None and wait.asleep():  # stopped between two attempts: nothing is at D7
                until = self.clock() + timedelta(seconds=wait.left)
                await asyncio.shield(keep("its deferral", record, lambda: self.sends.defer(record, until, wait.error)))
            raise
        except D7Error as exc:
            self.metrics.d7_answered(send.via.value, time.perf_counter() - began)
            return await self._on_error(record, send, exc, on_retry)
        except Exception:
            log.exception("send crashed send_id=%s", record.id)
            return await self._finish(record, send, Outcome(error=D7OutcomeUnknownError(CRASHED)))
        self.metrics.d7_answered(send.via.value, time.perf_counter() - began)
        self.waits.end(record.id)  # answered; a send whose first request was accepted never goes back to pending
        outcome = await the_rest(self.gateway, self.metrics, self.journal, record, send.via, batches, result)
        return await self._on_result(record, send, outcome, time.perf_counter() - began)

    def _retry_hook(self, record: SendRecord, send: PreparedSend, conversation: Conversation) -> RetryHook:
        """Called before each retry: count it, and say "retrying" in the thread once per send."""
        told = record.retry_noticed

        async def on_retry(error: D7Error, attempt: int, delay: float) -> None:
            nonlocal told
            self.waits.start(record.id, delay, error)
            self.metrics.d7_retried(send.via.value, type(error).__name__)
            if told:
                return
            told = True
            try:
                await conversation.retrying(send, record.placement, error)
            except Exception:
                log.exception("could not post retrying for send_id=%s", record.id)
            try:
                await self.sends.notice_retry(record)
            except Exception as exc:  # only a note; the send goes on
                log.warning("could not note the retry of send_id=%s (%s)", record.id, type(exc).__name__)

        return on_retry

    def _texts(self, send: PreparedSend, template: OutgoingTemplate | None) -> list[OutgoingText]:
        text = OutgoingText(
            via=send.via,
            recipients=tuple(n.e164 for n in send.recipients),
            text=send.text,
            originator=send.originator,
            report_url=self.report_url,
            schedule_time=send.request.schedule_time,
            cust_ref=send.send_id if send.via is Via.WHATSAPP else None,
            template=template,
            suffixes=send.endings,
        )
        return text.batches(self.per_request)

    def _template(self, send: PreparedSend) -> OutgoingTemplate | None:
        """What D7 needs of the approved template the send names (None: free text); ``Refused`` when the policy
        no longer has it."""
        use = send.checked.template
        if use is None:
            return None
        sender = self.admission.policy.senders.get(send.sender)
        template = sender.templates.get(use.alias) if sender is not None else None
        if template is None:
            raise Refused.denied(texts.no_such_template(send.sender, use.alias))
        if len(template.params) != len(use.values):
            raise Refused.denied(texts.template_changed(use.alias, len(template.params), len(use.values)))
        return OutgoingTemplate(template.template_id, template.language, use.values)

    async def _on_error(
        self, record: SendRecord, send: PreparedSend, error: D7Error, on_retry: RetryHook
    ) -> SendRecord:
        """A safe failure is retried later (by whichever worker is free) until the deadline; others are final."""
        delay = self.retry.wait(record.attempts, error.retry_after)
        retry_at = self.clock() + timedelta(seconds=delay)
        if error.retryable and retry_at < record.deadline_at:
            await on_retry(error, record.attempts, delay)
            self.waits.end(record.id)
            deferred = record
            record = await keep("its deferral", record, lambda: self.sends.defer(deferred, retry_at, error))
            log.warning(
                "D7 unavailable send_id=%s attempt=%d retry_at=%s",
                record.id,
                record.attempts,
                retry_at.isoformat(),
                extra=_ids(record),
            )
            return record
        if error.retryable:
            error = D7UnavailableError(
                f"D7 stayed unavailable until the {self.deadline.total_seconds() / 60:.0f}-minute deadline",
                http_status=error.http_status,
                code=error.code,
            )
        self.metrics.d7_failed(send.via.value, type(error).__name__)
        log.warning(
            "send %s send_id=%s via=%s error=%s http_status=%s code=%s",
            Outcome(error=error).state.value,
            record.id,
            send.via.value,
            type(error).__name__,
            error.http_status,
            error.code,
            extra=_ids(record),
        )
        return await self._finish(record, send, Outcome(error=error))

    async def _on_result(self, record: SendRecord, send: PreparedSend, outcome: Outcome, elapsed: float) -> SendRecord:
        log.info(
            "send %s send_id=%s via=%s sender=%s recipients=%d request_id=%s requests=%d elapsed_ms=%d",
            outcome.state.value,
            record.id,
            send.via.value,
            send.sender,
            len(send.recipients),
            outcome.request_id,
            max(1, len(outcome.parts)),
            elapsed * 1000,
            extra={"send_id": record.id, "request_id": outcome.request_id},
        )
        if outcome.result is not None and outcome.result.accepted and not outcome.result.dry_run:
            self.spending.bill(send)
        return await self._finish(record, send, outcome)

    async def settle(self, record: SendRecord, outcome: Outcome) -> SendRecord:
        """D7's answer to a send a stopped process left ``sending`` (the journal kept it): kept and counted as if
        it had just come (``keeping.replay``)."""
        send = self.teller.prepared(record)
        if outcome.result is not None:
            return await self._on_result(record, send, outcome, 0.0)
        return await self._finish(record, send, outcome)

    async def _finish(self, record: SendRecord, send: PreparedSend, outcome: Outcome) -> SendRecord:
        self.waits.end(record.id)
        answered = record
        journaled = Journaled(self.journal, record, outcome) if self.journal is not None else None
        record = await keep("D7's answer", record, lambda: self.sends.finish(answered, outcome), journaled)
        if record.state.nothing_went_out:
            await self.alerts.release(record)  # the next repeat of this alert may be texted
            await self.spending.refund(record)
        for request_id in outcome.request_ids:
            self.events.publish(RequestIdKnown(request_id))
        self.metrics.send_ended(send.via.value, record.state.value)
        return record


def _ids(record: SendRecord) -> dict[str, str]:
    """The log record's fields that tie a line to its send."""
    return {"send_id": record.id}
