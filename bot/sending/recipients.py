"""Recipients: references (numbers, people, user groups, contact groups) turned into phone numbers, every problem
named and none fatal; Slack asked at once for all that need a look-up, a bounded number at a time. Phones on the
opt-out list are taken out, each with a problem: one a request named refuses it, a group's member is left out. So
are profile phones their owner has not verified, with ``defaults.verified_phones`` on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from bot.domain.errors import InputError, InvalidPhoneNumber, NotVerified, OptedOut, inert
from bot.domain.models import Person, RecipientRef, RefKind
from bot.domain.oncall import Shift
from bot.domain.phone import PhoneNumber, parse_phone
from bot.domain.policy import Policy
from bot.domain.ports import Directory, OptOutList
from bot.sending import texts
from bot.sending.oncall import OnCall
from bot.sending.problems import Part, Problem
from bot.sending.verified_phones import VerifiedPhones, left_out_words, refused_words

# Slack look-ups one request makes at a time: 20 mentioned or picked people take one round, not twenty (with 200 ms
# per call, 0.2 s instead of 4 s: a form's submission has 0.5 s for them), and a request never bursts past what
# Slack's Tier 4 (users.info, 100+ a minute) takes at once.
LOOKUPS_AT_ONCE = 20

# References that need no look-up: a form out of time still checks them.
OFFLINE = (RefKind.NUMBER, RefKind.CONTACTS)

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


@dataclass
class Resolution:
    """Phone numbers for recipient references, in order and without duplicates, and what could not be resolved."""

    numbers: list[PhoneNumber] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # E.164 → Slack name, when it came from a profile
    sources: dict[str, RecipientRef] = field(default_factory=dict)  # E.164 → the first reference that gave it
    problems: list[Problem] = field(default_factory=list)  # each ``Part.RECIPIENT``
    on_call: dict[str, str] = field(default_factory=dict)  # schedule → the Slack name of who was on call for it
    through: dict[str, frozenset[str]] = field(default_factory=dict)  # E.164 → the schedules that gave it
    owners: dict[str, dict[str, str]] = field(default_factory=dict)  # E.164 → whose profile has it: user ID → name
    typed: set[str] = field(default_factory=set)  # E.164 named as a number or in a contact group

    @property
    def refusing(self) -> list[Problem]:
        """The problems that refuse a person's request: all but group members left out, unless nobody is left."""
        kept = [p for p in self.problems if not p.left_out]
        return kept if kept or self.numbers else list(self.problems)

    @property
    def left_out(self) -> tuple[str, ...]:
        """Why each group member left out of the send is (its thread says so)."""
        return tuple(p.text for p in self.problems if p.left_out)

    def add(self, number: PhoneNumber, ref: RecipientRef, name: str | None = None, owner: str | None = None) -> None:
        """``owner``: the user whose Slack profile gave the number (``name`` is theirs)."""
        if number.e164 not in self.sources:
            self.sources[number.e164] = ref
            self.numbers.append(number)
        if name is not None:
            self.names.setdefault(number.e164, name)
        if owner is not None:
            self.owners.setdefault(number.e164, {}).setdefault(owner, name or owner)
        if ref.kind in OFFLINE:
            self.typed.add(number.e164)


def phone_of(person: Person, region: str) -> PhoneNumber:
    """The person's profile phone as a valid number, or an ``InputError`` that names them."""
    if person.deleted:
        raise InputError(texts.deactivated(person.name))
    if person.is_bot:
        raise InputError(texts.a_bot(person.name))
    if not person.phone or not person.phone.strip():
        raise InputError(texts.no_profile_phone(person.name))
    try:
        return parse_phone(person.phone, region)
    except InvalidPhoneNumber as exc:
        raise InputError(texts.unusable_profile_phone(person.name, exc)) from None


class NoSuchContactGroup(InputError):
    """A ``group:NAME`` that the policy does not define."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(texts.no_such_contact_group(name))


class NoSuchSchedule(InputError):
    """A ``schedule:NAME`` that the policy does not define."""

    def __init__(self, name: str) -> None:
        super().__init__(texts.no_such_schedule(name))


class GroupTooLarge(InputError):
    """A user group with more members than the policy's ``defaults.max_group_size``."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(texts.group_too_large(name, size, limit))


def _raise_unless_input(exc: Exception) -> InputError:
    """The requester's problem (an unknown user or group) back; anything else (Slack failed) raised."""
    if isinstance(exc, InputError):
        return exc
    raise exc


class Recipients:
    """Resolves recipient references with the policy (its region, contact groups, group size) and the directory."""

    def __init__(
        self,
        policy: Policy,
        directory: Directory,
        optouts: OptOutList | None = None,
        oncall: OnCall | None = None,
        verified: VerifiedPhones | None = None,
    ) -> None:
        self.policy = policy
        self.directory = directory
        self.optouts = optouts  # None: no opt-out list
        self.verified = verified if policy.defaults.verified_phones else None  # None: profile phones texted as they are
        self.oncall = oncall or OnCall(policy, directory, None)  # None: the rotations alone, no overrides

    async def _on_call(self, refs: Sequence[RecipientRef], at: datetime | None) -> dict[str, Shift | Exception]:
        """Who is on call at ``at`` (None: now) for each schedule the references name and the policy has."""
        when = at or self.oncall.clock()
        names = list(dict.fromkeys(r.value for r in refs if r.kind is RefKind.SCHEDULE and self.oncall.knows(r.value)))
        shifts = await look_up_each(names, lambda name: self.oncall.shift(name, when))
        for answer in shifts:
            if isinstance(answer, Exception):
                _raise_unless_input(answer)
        return dict(zip(names, shifts, strict=True))

    async def resolve(self, refs: Sequence[RecipientRef], at: datetime | None = None) -> Resolution:
        """Every reference resolved that can be; a ``Problem`` for each that cannot (nothing raised for them).

        Slack is asked at once for every user group, then at once for every person (picked or a member of a group
        no larger than ``defaults.max_group_size``: a larger one is a problem, its members never looked up); a
        look-up Slack did not answer raises (not the requester's problem: the outbox tries again). Numbers and
        contact groups alone need no look-up. The opt-out list is read once for every number found (a database that
        does not answer raises too). ``schedule:NAME``: whoever was on call at ``at`` (None: now).
        """
        duties = await self._on_call(refs, at)
        limit = self.policy.defaults.max_group_size
        groups = list(dict.fromkeys(r.value for r in refs if r.kind is RefKind.USERGROUP))
        members = dict(zip(groups, await look_up_each(groups, self.directory.group_members), strict=True))
        wanted = [r.value for r in refs if r.kind is RefKind.USER]
        wanted += [s.user_id for s in duties.values() if isinstance(s, Shift) and s.user_id is not None]
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
                    found.problems.append(Problem.unusable(ref, exc))
            elif ref.kind is RefKind.CONTACTS:
                if ref.value not in self.policy.contacts:
                    found.problems.append(Problem.unusable(ref, NoSuchContactGroup(ref.value)))
                    continue
                for number in self.policy.contact_numbers(ref.value):
                    found.add(number, ref)
            elif ref.kind is RefKind.USER:
                self._add_people(found, ref, [people[ref.value]])
            elif ref.kind is RefKind.SCHEDULE:
                self._add_on_call(found, ref, duties.get(ref.value), people)
            else:
                self._add_group(found, ref, members[ref.value], people)
        await self.take_out_unverified(found)
        await self.take_out_opted_out(found)
        return found

    async def take_out_unverified(self, found: Resolution) -> None:
        """With ``defaults.verified_phones``: profile phones none of whose owners verified that number, out of
        ``found.numbers``, each with a problem naming its owner: a person the request named refuses it; a user group's
        member or a schedule's person is left out and the rest is sent. Their owners are told privately how to verify.
        Numbers typed or in contact groups are texted as named. The database is read once for all of them."""
        if self.verified is None:
            return
        gated = {n.e164: found.owners[n.e164] for n in found.numbers if n.e164 in found.owners}
        gated = {e164: owners for e164, owners in gated.items() if e164 not in found.typed}
        if not gated:
            return
        kept = await self.verified.verified(sorted({user for owners in gated.values() for user in owners}))
        unverified: list[str] = []
        for number in [n for n in found.numbers if n.e164 in gated]:
            owners = gated[number.e164]
            if any(kept.get(user) == number.e164 for user in owners):
                continue
            found.numbers.remove(number)
            ref = found.sources[number.e164]
            user_id, name = next(iter(owners.items()))
            named = ref.kind is RefKind.USER
            words = refused_words(name) if named else left_out_words(name)
            error = NotVerified(user_id, number.e164, words)
            found.problems.append(Problem(Part.RECIPIENT, words, ref=ref, error=error, left_out=not named))
            unverified += owners
        self.verified.remind(unverified)

    async def take_out_opted_out(self, found: Resolution) -> None:
        """Phones on the opt-out list out of ``found.numbers``, each with a problem that names it: one the request
        named (a number, a person) refuses it; a member of a group it named is left out and the rest is sent."""
        if self.optouts is None or not found.numbers:
            return
        listed = await self.optouts.opted_out([n.e164 for n in found.numbers])
        for number in [n for n in found.numbers if n.e164 in listed]:
            entry, ref = listed[number.e164], found.sources[number.e164]
            found.numbers.remove(number)
            in_group = ref.kind in (RefKind.CONTACTS, RefKind.USERGROUP)
            name = found.names.get(number.e164)
            words = texts.opted_out(
                number.display(self.policy.defaults.show_numbers),
                texts.opt_out_how(entry.way.value, entry.by),
                person=f"@{inert(name)}" if name is not None else None,
                group=(str(ref) if ref.kind is RefKind.CONTACTS else _group_name(ref)) if in_group else None,
            )
            found.problems.append(Problem.opted_out(ref, OptedOut(number.e164, words), left_out=in_group))

    def _add_group(
        self,
        found: Resolution,
        ref: RecipientRef,
        group: list[str] | Exception,
        people: dict[str, Person | Exception],
    ) -> None:
        if isinstance(group, Exception):
            found.problems.append(Problem.unusable(ref, _raise_unless_input(group)))
            return
        name = _group_name(ref)
        limit = self.policy.defaults.max_group_size
        if len(group) > limit:
            found.problems.append(Problem.unusable(ref, GroupTooLarge(name, len(group), limit)))
            return
        if not group:
            found.problems.append(Problem.unusable(ref, InputError(texts.group_empty(name))))
        self._add_people(found, ref, [people[u] for u in group])

    def _add_on_call(
        self,
        found: Resolution,
        ref: RecipientRef,
        duty: Shift | Exception | None,
        people: dict[str, Person | Exception],
    ) -> None:
        """Whoever is on call for the schedule: their profile phone, and their name for the thread."""
        if duty is None:
            found.problems.append(Problem.unusable(ref, NoSuchSchedule(ref.value)))
            return
        if isinstance(duty, Exception):
            found.problems.append(Problem.unusable(ref, _raise_unless_input(duty)))
            return
        if duty.user_id is None:
            found.problems.append(Problem.unusable(ref, InputError(texts.nobody_on_call(ref.value))))
            return
        person = people[duty.user_id]
        found.on_call.setdefault(ref.value, person.name if isinstance(person, Person) else duty.user_id)
        self._add_people(found, ref, [person])
        if isinstance(person, Person) and person.phone:
            with suppress(InputError):
                e164 = phone_of(person, self.policy.defaults.region).e164
                found.through[e164] = found.through.get(e164, frozenset()) | {ref.value}

    def _add_people(self, found: Resolution, ref: RecipientRef, people: Sequence[Person | Exception]) -> None:
        for person in people:
            if isinstance(person, Exception):
                found.problems.append(Problem.unusable(ref, _raise_unless_input(person)))
                continue
            try:
                number = phone_of(person, self.policy.defaults.region)
            except InputError as exc:
                found.problems.append(Problem.unusable(ref, exc))
                continue
            found.add(number, ref, person.name, person.user_id)

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


def _group_name(ref: RecipientRef) -> str:
    """How a problem names a user group: its handle as Slack gave it (made inert), else its mention."""
    return inert(ref.label) if ref.label else f"<!subteam^{ref.value}>"
