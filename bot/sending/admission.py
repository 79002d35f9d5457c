"""Admission: may this be sent, and to which phones? One rule and one wording for every surface: the command's
refusal, the compose form's field-by-field errors and the outbox's check all come from here.

``check_text`` says whether a text fits its via, ``resolve`` turns recipient references into phone numbers (every
problem named, none fatal), ``decide`` asks the policy, and ``admit`` does all three for one request: the policy
first on what needs no recipients, so a request it refuses costs no look-up of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from bot.domain.alerts import WHATSAPP_MAX_CHARS
from bot.domain.encoding import SmsInfo, analyze
from bot.domain.errors import EmptyMessage, InputError, InvalidPhoneNumber, MessageTooLong, inert
from bot.domain.models import Person, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.phone import PhoneNumber, parse_phone
from bot.domain.policy import (
    Decision,
    Policy,
    PolicySurface,
    SendRequestFacts,
    admin_groups,
    allowed_templates,
    evaluate,
    evaluate_before_recipients,
    groups_to_look_up,
    is_admin,
    too_many_named,
)
from bot.domain.ports import Directory
from bot.domain.sends import Checked, PreparedSend, Refusal, RefusalKind, prepared
from bot.domain.templates import param_problem

log = logging.getLogger("bot.sending")

# Slack look-ups one request makes at a time: 20 mentioned or picked people take one round, not twenty (with 200 ms
# per call, 0.2 s instead of 4 s: a form's submission has 0.5 s for them), and a request never bursts past what
# Slack's Tier 4 (users.info, 100+ a minute) takes at once.
LOOKUPS_AT_ONCE = 20

# How the policy's rules name where a send started (``surfaces``); the forms' openers all submit the compose form.
POLICY_SURFACES = {
    Surface.COMMAND: PolicySurface.COMMANDS,
    Surface.MODAL: PolicySurface.FORMS,
    Surface.SHORTCUT: PolicySurface.FORMS,
    Surface.MESSAGE: PolicySurface.FORMS,
    Surface.WORKFLOW: PolicySurface.WORKFLOWS,
}

_K = TypeVar("_K")
_V = TypeVar("_V")


async def look_up_each(
    keys: Iterable[_K], look_up: Callable[[_K], Awaitable[_V]], at_once: int = LOOKUPS_AT_ONCE
) -> list[_V | Exception]:
    """``look_up(key)`` for every key, ``at_once`` at a time, answers in the keys' order; a failure in its place."""
    gate = asyncio.Semaphore(at_once)

    async def one(key: _K) -> _V:
        async with gate:
            return await look_up(key)

    answers: list[_V | Exception] = []
    for answer in await asyncio.gather(*(one(k) for k in keys), return_exceptions=True):
        if isinstance(answer, Exception) or not isinstance(answer, BaseException):
            answers.append(answer)
        else:
            raise answer  # cancelled, not failed
    return answers


class Refused(Exception):
    """The request cannot be sent as asked; ``refusal`` says why, in the requester's words."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        super().__init__("; ".join(refusal.problems))

    @classmethod
    def invalid(cls, *problems: str) -> Refused:
        """What was given cannot be sent."""
        return cls(Refusal(RefusalKind.INVALID, problems))

    @classmethod
    def denied(cls, reason: str) -> Refused:
        """The policy says no."""
        return cls(Refusal(RefusalKind.DENIED, (reason,)))


@dataclass(frozen=True)
class Problem:
    """A recipient that cannot be texted: the reference as given and the error that names it."""

    ref: RecipientRef
    error: InputError

    def __str__(self) -> str:
        return str(self.error)


@dataclass
class Resolution:
    """Phone numbers for recipient references, in order and without duplicates, and what could not be resolved."""

    numbers: list[PhoneNumber] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # E.164 → Slack name, when it came from a profile
    sources: dict[str, RecipientRef] = field(default_factory=dict)  # E.164 → the first reference that gave it
    problems: list[Problem] = field(default_factory=list)

    def add(self, number: PhoneNumber, ref: RecipientRef, name: str | None = None) -> None:
        if number.e164 not in self.sources:
            self.sources[number.e164] = ref
            self.numbers.append(number)
        if name is not None:
            self.names.setdefault(number.e164, name)


def conversation_label(channel_id: str) -> str:
    """How a refusal names where a request came from: ``<#C…>`` (Slack shows the channel's name); a direct
    message has no name Slack would show."""
    return "this direct message" if channel_id.startswith("D") else f"<#{channel_id}>"


def not_a_member(channel_id: str) -> str:
    return f"you are not a member of {conversation_label(channel_id)}: pick a conversation you are in"


def unseen(channel_id: str) -> str:
    return (
        f"the bot cannot see who is in {conversation_label(channel_id)} (it is not in it): invite it there, "
        "or pick a conversation it is in"
    )


def phone_of(person: Person, region: str) -> PhoneNumber:
    """The person's profile phone as a valid number, or an ``InputError`` that names them."""
    who = f"@{inert(person.name)}"
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


class NoSuchContactGroup(InputError):
    """A ``group:NAME`` that the policy does not define."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"there is no contact group '{inert(name)}' in the policy")


class GroupTooLarge(InputError):
    """A user group with more members than the policy's ``defaults.max_group_size``."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(f"the user group {name} has {size} members; the policy allows at most {limit} per group")


def _raise_unless_input(exc: Exception) -> InputError:
    """The requester's problem (an unknown user or group) back; anything else (Slack failed) raised."""
    if isinstance(exc, InputError):
        return exc
    raise exc


class Admission:
    """The policy and the directory, asked the same way for every surface."""

    def __init__(self, policy: Policy, directory: Directory) -> None:
        self.policy = policy
        self.directory = directory

    def check_text(self, via: Via, text: str) -> SmsInfo | None:
        """The SMS encoding of ``text`` (None for WhatsApp); ``InputError`` when it is empty or too long."""
        if not text.strip():
            raise EmptyMessage()
        if via is Via.WHATSAPP:
            if len(text) > WHATSAPP_MAX_CHARS:
                raise InputError(
                    f"the message has {len(text)} characters; WhatsApp allows at most {WHATSAPP_MAX_CHARS}"
                )
            return None
        info = analyze(text)
        if info.segments > self.policy.defaults.max_segments:
            raise MessageTooLong(info.segments, self.policy.defaults.max_segments, info.encoding.label)
        return info

    async def user_groups(self, user_id: str, channel_id: str | None = None, via: Via | None = None) -> frozenset[str]:
        """The policy's user groups (S…) this user is in, of those that matter in this channel for this via (a
        group no rule here names is never looked up: its look-up could only delay or fail the send). The groups are
        looked up at once; ``ServiceUnavailable`` when Slack did not answer for one of them."""
        return await self._groups_of(user_id, groups_to_look_up(self.policy, user_id, channel_id, via))

    async def is_admin(self, user_id: str) -> bool:
        """Named in the policy's ``admins``, or in a user group named there (looked up as ``user_groups`` does)."""
        wanted = [] if user_id in self.policy.admins else sorted(admin_groups(self.policy))
        return is_admin(self.policy, user_id, await self._groups_of(user_id, wanted))

    async def _groups_of(self, user_id: str, wanted: Sequence[str]) -> frozenset[str]:
        """Those of the ``wanted`` user groups the user is in, looked up at once; a group Slack says does not exist
        is logged and left out, ``ServiceUnavailable`` when Slack did not answer for one."""
        groups = set()
        for group, members in zip(wanted, await look_up_each(wanted, self.directory.group_members), strict=True):
            if isinstance(members, InputError):
                log.warning("user group %s named in the policy cannot be read: %s", group, members)
            elif isinstance(members, Exception):
                raise members
            elif user_id in members:
                groups.add(group)
        return frozenset(groups)

    async def resolve(self, refs: Sequence[RecipientRef]) -> Resolution:
        """Every reference resolved that can be; a ``Problem`` for each that cannot (nothing raised for them).

        Slack is asked at once for every user group, then at once for every person (picked or a member of a group
        no larger than ``defaults.max_group_size``: a larger one is a problem, its members never looked up); a
        look-up Slack did not answer raises (not the requester's problem: the outbox tries again).
        """
        limit = self.policy.defaults.max_group_size
        groups = list(dict.fromkeys(r.value for r in refs if r.kind is RefKind.USERGROUP))
        members = dict(zip(groups, await look_up_each(groups, self.directory.group_members), strict=True))
        wanted = [r.value for r in refs if r.kind is RefKind.USER]
        for found_members in members.values():
            if isinstance(found_members, Exception):
                _raise_unless_input(found_members)
            elif len(found_members) <= limit:
                wanted += found_members
        user_ids = list(dict.fromkeys(wanted))
        people = dict(zip(user_ids, await look_up_each(user_ids, self.directory.person), strict=True))

        found = Resolution()
        for ref in refs:
            if ref.kind is RefKind.NUMBER:
                try:
                    found.add(parse_phone(ref.value, self.policy.defaults.region), ref)
                except InvalidPhoneNumber as exc:
                    found.problems.append(Problem(ref, exc))
            elif ref.kind is RefKind.CONTACTS:
                if ref.value not in self.policy.contacts:
                    found.problems.append(Problem(ref, NoSuchContactGroup(ref.value)))
                    continue
                for number in self.policy.contact_numbers(ref.value):
                    found.add(number, ref)
            elif ref.kind is RefKind.USER:
                self._add_people(found, ref, [people[ref.value]])
            else:
                group = members[ref.value]
                if isinstance(group, Exception):
                    found.problems.append(Problem(ref, _raise_unless_input(group)))
                    continue
                name = inert(ref.label) if ref.label else f"<!subteam^{ref.value}>"
                if len(group) > limit:
                    found.problems.append(Problem(ref, GroupTooLarge(name, len(group), limit)))
                    continue
                if not group:
                    found.problems.append(Problem(ref, InputError(f"the user group {name} has no members")))
                self._add_people(found, ref, [people[u] for u in group])
        return found

    def _add_people(self, found: Resolution, ref: RecipientRef, people: Sequence[Person | Exception]) -> None:
        for person in people:
            if isinstance(person, Exception):
                found.problems.append(Problem(ref, _raise_unless_input(person)))
                continue
            try:
                number = phone_of(person, self.policy.defaults.region)
            except InputError as exc:
                found.problems.append(Problem(ref, exc))
                continue
            found.add(number, ref, person.name)

    def named_count(self, refs: Sequence[RecipientRef]) -> int:
        """How many recipients ``refs`` name at least, before any look-up: distinct numbers (a contact group's
        members counted), distinct people, and one for each user group (its members are only known once asked)."""
        numbers: set[str] = set()
        others = 0
        for ref in {(r.kind, r.value): r for r in refs}.values():
            if ref.kind is RefKind.NUMBER:
                try:
                    numbers.add(parse_phone(ref.value, self.policy.defaults.region).e164)
                except InvalidPhoneNumber:
                    numbers.add(ref.value)
            elif ref.kind is RefKind.CONTACTS:
                numbers.update(self.policy.contacts.get(ref.value, ()))
            else:
                others += 1
        return len(numbers) + others

    def decide(self, facts: SendRequestFacts) -> Decision:
        return evaluate(self.policy, facts)

    async def is_in(self, user_id: str, channel_id: str) -> bool | None:
        """The policy's rules are about channels: a form or a step may only send "from" a conversation its sender is
        in. None: the bot cannot see its members (private, a DM it is not in)."""
        return await self.directory.is_member(channel_id, user_id)

    def decide_before_recipients(self, facts: SendRequestFacts) -> Decision:
        """What the policy refuses whatever the recipients (``facts.recipients`` is not looked at)."""
        return evaluate_before_recipients(self.policy, facts)

    async def admit(self, send_id: str, request: SendRequest) -> PreparedSend:
        """Check the text, ask the policy what needs no recipients, resolve every recipient and ask the policy
        again; ``Refused`` names every problem. A request the policy refuses whatever its recipients costs no
        look-up of them (only of the user's policy groups). A template request is checked the same way, its values
        before anyone is looked up, and its text is the template filled in."""
        if request.template is None:
            text = request.text.strip()
            try:
                self.check_text(request.via, text)
            except InputError as exc:
                raise Refused.invalid(str(exc)) from None
        if not request.recipients:
            raise Refused.invalid("no recipients")
        surface = POLICY_SURFACES.get(request.origin.surface)
        if surface is None:  # alerts are decided by their alert rules, never by admit
            raise Refused.denied(f"a {request.origin.surface} send is not decided by the policy's rules")
        user_groups = await self.user_groups(request.user_id, request.channel_id, request.via)
        sender = request.sender
        if request.template is not None:
            sender = self.template_sender(request, user_groups, surface)
            text = self.fill_in(request, sender)
        facts = SendRequestFacts(
            user_id=request.user_id,
            channel_id=request.channel_id,
            via=request.via,
            recipients=(),
            sender=sender,
            user_groups=user_groups,
            channel_label=conversation_label(request.channel_id),
            user_label=f"<@{request.user_id}>",
            template=request.template.alias if request.template is not None else None,
            surface=surface,
        )
        early = self.decide_before_recipients(facts)
        if not early.allowed:
            raise Refused.denied(early.reason)
        if (too_many := too_many_named(self.policy, facts, self.named_count(request.recipients))) is not None:
            raise Refused.denied(too_many)
        # A form or a workflow step names its channel: its sender (the step's runner) must be in it. A form's
        # conversation picker lists only the private conversations its user is in, so one the bot cannot see is
        # theirs; a workflow's channel is its author's choice, so there only what the bot sees counts.
        picked = request.origin.surface in (Surface.MODAL, Surface.WORKFLOW)
        if picked and (member := await self.is_in(request.user_id, request.channel_id)) is not True:
            if member is False:
                raise Refused.denied(not_a_member(request.channel_id))
            if request.origin.surface is Surface.WORKFLOW:
                raise Refused.denied(unseen(request.channel_id))
        found = await self.resolve(request.recipients)
        if found.problems:
            raise Refused.invalid(*(str(p) for p in found.problems))
        decision = self.decide(replace(facts, recipients=found.numbers))
        if not decision.allowed or decision.sender is None or decision.rule is None:
            raise Refused.denied(decision.reason)
        sender = decision.sender
        checked = Checked(
            rule=decision.rule,
            sender=sender,
            originator=self.policy.senders[sender].originator,
            recipients=tuple(found.numbers),
            text=text,
            names=found.names,
            template=request.template,
        )
        return prepared(send_id, request, checked, self.policy.defaults.show_numbers)

    def template_sender(
        self, request: SendRequest, user_groups: frozenset[str], surface: PolicySurface | None = None
    ) -> str:
        """The WhatsApp sender whose template the request names: the one asked for, else the first this user may
        use here that has it. ``Refused`` naming the templates they may use when there is none."""
        assert request.template is not None  # noqa: S101 - callers ask only for template requests
        alias = request.template.alias
        if request.via is not Via.WHATSAPP:
            raise Refused.invalid("templates are for WhatsApp: use /whatsapp")
        if request.sender is not None:
            sender = self.policy.senders.get(request.sender)
            if sender is None:
                raise Refused.denied(f"unknown sender '{request.sender}'")
            if alias not in sender.templates:
                raise Refused.invalid(f"sender '{request.sender}' has no template '{inert(alias)}'")
            return request.sender
        mine = allowed_templates(self.policy, request.user_id, request.channel_id, user_groups, surface)
        if alias in mine:
            return mine[alias]
        known = f"templates you may use here: {', '.join(sorted(mine))}" if mine else "you may use no templates here"
        if any(alias in s.templates for s in self.policy.senders.values()):
            where = conversation_label(request.channel_id)
            raise Refused.denied(f"you may not use the template '{inert(alias)}' from {where} ({known})")
        raise Refused.invalid(f"there is no WhatsApp template '{inert(alias)}' ({known})")

    def fill_in(self, request: SendRequest, sender: str) -> str:
        """The template's text with the request's values; ``Refused`` naming each value WhatsApp would refuse."""
        assert request.template is not None  # noqa: S101 - callers ask only for template requests
        use = request.template
        template = self.policy.senders[sender].templates[use.alias]
        names = [p.name for p in template.params]
        if len(use.values) != len(names):
            wanted = f"{len(names)} parameter{'s' if len(names) != 1 else ''}"
            listed = f" ({', '.join(names)})" if names else ""
            raise Refused.invalid(f"the template '{use.alias}' takes {wanted}{listed}; you gave {len(use.values)}")
        problems = [p for name, value in zip(names, use.values, strict=True) if (p := param_problem(name, value))]
        if problems:
            raise Refused.invalid(*problems)
        text = template.render(use.values, use.alias)
        if len(text) > WHATSAPP_MAX_CHARS:
            raise Refused.invalid(
                f"the filled-in template has {len(text)} characters; WhatsApp allows at most {WHATSAPP_MAX_CHARS}"
            )
        return text
