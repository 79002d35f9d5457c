"""SendService: resolve recipients → validate → policy → announce → send → report.

The service knows nothing of Slack: it talks to its caller through a ``Conversation`` (where the story of one
send is told) and finds people through a ``Directory``. Every request ends in exactly one report to its
conversation: a refusal, or an announcement followed by an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.domain.encoding import SmsInfo, analyze
from bot.domain.errors import D7Error, EmptyMessage, InputError, InvalidPhoneNumber, MessageTooLong
from bot.domain.models import Person, RecipientRef, RefKind, SendRequest, SendResult, Via
from bot.domain.phone import NumberDisplay, PhoneNumber, parse_phone
from bot.domain.policy import USERGROUP_ID, Policy, SendRequestFacts, evaluate
from bot.domain.ports import Directory, MessageGateway
from bot.tasks import BackgroundTasks

log = logging.getLogger("bot.service")

WHATSAPP_MAX_CHARS = 4096


class RefusalKind:
    INVALID = "invalid"  # what was typed cannot be sent
    DENIED = "denied"  # the policy says no
    INTERNAL = "internal"  # our own fault; nothing was sent


@dataclass(frozen=True)
class Refusal:
    """Why a request was not sent; shown only to the requester."""

    kind: str
    problems: tuple[str, ...]


@dataclass(frozen=True)
class PreparedSend:
    """A request that passed every check and is about to go to D7."""

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

    @property
    def via(self) -> Via:
        return self.request.via


@dataclass(frozen=True)
class Outcome:
    """How the send ended: a D7 verdict (accepted / rejected) or an error."""

    result: SendResult | None = None
    error: D7Error | None = None
    retries: int = 0


class Conversation(Protocol):
    """Where one request's story is told (for Slack: an ephemeral, a parent message and its thread)."""

    async def refuse(self, refusal: Refusal) -> None: ...

    async def announce(self, send: PreparedSend) -> None: ...

    async def retrying(self, send: PreparedSend, error: D7Error) -> None: ...

    async def finish(self, send: PreparedSend, outcome: Outcome) -> None: ...


class SendService:
    """Turns ``SendRequest`` into texts; one instance per process."""

    def __init__(
        self,
        policy: Policy,
        gateway: MessageGateway,
        directory: Directory,
        tasks: BackgroundTasks | None = None,
    ) -> None:
        self.policy = policy
        self.gateway = gateway
        self.directory = directory
        self.tasks = tasks or BackgroundTasks()
        self._policy_groups = sorted({u for rule in policy.rules for u in rule.users if USERGROUP_ID.match(u)})

    # ------------------------------------------------------------ running

    def submit(self, request: SendRequest, conversation: Conversation) -> asyncio.Task[None]:
        """Process ``request`` in the background; the bot waits for it on shutdown."""
        return self.tasks.spawn(self.process(request, conversation), f"send-{request.idempotency_key}")

    async def process(self, request: SendRequest, conversation: Conversation) -> None:
        """The whole pipeline for one request. Never raises: every end is reported to the conversation."""
        try:
            prepared = await self.prepare(request)
        except InputError as exc:
            await self._refuse(conversation, Refusal(RefusalKind.INVALID, _problems(exc)))
            return
        except _Denied as denied:
            await self._refuse(conversation, Refusal(RefusalKind.DENIED, (denied.reason,)))
            return
        except Exception:
            log.exception("could not prepare send key=%s", request.idempotency_key)
            await self._refuse(conversation, Refusal(RefusalKind.INTERNAL, ("an internal error; nothing was sent",)))
            return
        await self._send(prepared, conversation)

    # ------------------------------------------------------------ steps

    async def prepare(self, request: SendRequest) -> PreparedSend:
        """Resolve and check everything; raises ``InputError`` or ``_Denied``."""
        text = request.text.strip()
        if not text:
            raise EmptyMessage()
        sms = _check_length(request.via, text, self.policy.defaults.max_segments)
        recipients, names = await self.resolve(request.recipients)
        groups = await self._groups_of(request.user_id)
        decision = evaluate(
            self.policy,
            SendRequestFacts(
                user_id=request.user_id,
                channel_id=request.channel_id,
                via=request.via,
                recipients=recipients,
                sender=request.sender,
                user_groups=groups,
                channel_label=request.channel_label or f"<#{request.channel_id}>",
                user_label=f"<@{request.user_id}>",
            ),
        )
        if not decision.allowed or decision.sender is None or decision.rule is None:
            raise _Denied(decision.reason)
        return PreparedSend(
            send_id=str(uuid.uuid4()),
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
        if not refs:
            problems.append("no recipients")
        if problems:
            raise RecipientProblems(problems)
        return list(dict.fromkeys(numbers)), names

    async def _groups_of(self, user_id: str) -> frozenset[str]:
        """The policy's user groups (S…) this user is in."""
        groups = set()
        for group in self._policy_groups:
            try:
                if user_id in await self.directory.group_members(group):
                    groups.add(group)
            except InputError as exc:
                log.warning("user group %s named in the policy cannot be read: %s", group, exc)
        return frozenset(groups)

    async def _send(self, send: PreparedSend, conversation: Conversation) -> None:
        await _safely(conversation.announce(send), "announce", send)
        retries = 0
        told = False

        async def on_retry(error: D7Error, attempt: int, delay: float) -> None:
            nonlocal retries, told
            retries = attempt
            if not told:  # say it once, not on every attempt
                told = True
                await _safely(conversation.retrying(send, error), "retrying", send)

        started = time.perf_counter()
        request = send.request
        try:
            if send.via is Via.SMS:
                result = await self.gateway.send_sms(
                    [n.e164 for n in send.recipients],
                    send.text,
                    originator=send.originator,
                    schedule_time=request.schedule_time,
                    on_retry=on_retry,
                )
            else:
                result = await self.gateway.send_whatsapp(
                    [n.e164 for n in send.recipients],
                    send.text,
                    originator=send.originator,
                    cust_ref=send.send_id,
                    schedule_time=request.schedule_time,
                    on_retry=on_retry,
                )
            outcome = Outcome(result=result, retries=retries)
            log.info(
                "send %s send_id=%s via=%s sender=%s recipients=%d request_id=%s elapsed_ms=%d",
                result.status.value,
                send.send_id,
                send.via.value,
                send.sender,
                len(send.recipients),
                result.request_id,
                (time.perf_counter() - started) * 1000,
            )
        except D7Error as exc:
            outcome = Outcome(error=exc, retries=retries)
            log.warning(
                "send failed send_id=%s via=%s error=%s http_status=%s code=%s",
                send.send_id,
                send.via.value,
                type(exc).__name__,
                exc.http_status,
                exc.code,
            )
        except Exception:
            log.exception("send crashed send_id=%s", send.send_id)
            outcome = Outcome(error=D7Error("an internal error interrupted the send; it may or may not have gone out"))
        await _safely(conversation.finish(send, outcome), "finish", send)

    @staticmethod
    async def _refuse(conversation: Conversation, refusal: Refusal) -> None:
        try:
            await conversation.refuse(refusal)
        except Exception:
            log.exception("could not tell the requester why nothing was sent (%s)", refusal.kind)


class _Denied(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RecipientProblems(InputError):
    """One or more recipients cannot be resolved to a valid phone number."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


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


def _check_length(via: Via, text: str, max_segments: int) -> SmsInfo | None:
    if via is Via.WHATSAPP:
        if len(text) > WHATSAPP_MAX_CHARS:
            raise InputError(f"the message has {len(text)} characters; WhatsApp allows at most {WHATSAPP_MAX_CHARS}")
        return None
    info = analyze(text)
    if info.segments > max_segments:
        raise MessageTooLong(info.segments, max_segments, info.encoding.label)
    return info


def _problems(exc: InputError) -> tuple[str, ...]:
    if isinstance(exc, RecipientProblems):
        return tuple(exc.problems)
    return (str(exc),)


async def _safely(call: Awaitable[None], what: str, send: PreparedSend) -> None:
    """Reporting must never stop a send, nor a send's outcome from being reported elsewhere."""
    try:
        await call
    except Exception:
        log.exception("could not report %s for send_id=%s", what, send.send_id)
