"""Admission: may this be sent, and to which phones? One call, ``check``, for every surface: the outbox raises its
problems as one refusal (``admit``), the compose form shows each on its field; the words are the same.

``check`` looks, in order, at what was given (the text for its via, a template's values, that someone is named: no
look-up), the policy on what needs no recipients (with the user's policy groups), whether the sender is in the
conversation a form or a step names, every recipient, and the policy's full decision. A request the policy refuses
whatever its recipients costs no look-up of them. The outbox asks Slack one step at a time (the fewest look-ups); a
form gives ``within`` and is answered within it, every field's problems at once and Slack asked once for them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from bot.domain import keys
from bot.domain.alerts import WHATSAPP_MAX_CHARS
from bot.domain.encoding import SmsInfo, analyze
from bot.domain.errors import EmptyMessage, InputError, MessageTooLong
from bot.domain.models import RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.phone import PhoneNumber
from bot.domain.policy import (
    Decision,
    Dimension,
    Policy,
    PolicySurface,
    SendRequestFacts,
    admin_groups,
    allowed_senders,
    allowed_templates,
    evaluate,
    evaluate_before_recipients,
    groups_to_look_up,
    is_admin,
    too_many_named,
    why_nothing_allowed,
)
from bot.domain.ports import Directory, OptOutList
from bot.domain.sends import Checked, PreparedSend, Refusal, RefusalKind, prepared
from bot.sending import texts
from bot.sending.answers import check_answer
from bot.sending.oncall import OnCall
from bot.sending.problems import Part, Problem, Problems
from bot.sending.recipients import LOOKUPS_AT_ONCE as LOOKUPS_AT_ONCE
from bot.sending.recipients import OFFLINE, Recipients, look_up_each
from bot.sending.recipients import Resolution as Resolution
from bot.sending.templating import filled_in
from bot.sending.texts import conversation_label as conversation_label
from bot.sending.verified_phones import VerifiedPhones
from bot.tasks import at_most

log = logging.getLogger("bot.sending")
# A form's check past its look-ups' time: the recipients that need no Slack look-up get this long more (their
# schedules' overrides and verified phones are in the database, which may be the slow one); then the request is
# recorded unchecked, and the outbox checks it before sending.
OFFLINE_WITHIN = 0.25

# How the policy's rules name where a send started (``surfaces``); the forms' openers all submit the compose form.
POLICY_SURFACES = {
    Surface.COMMAND: PolicySurface.COMMANDS,
    Surface.MODAL: PolicySurface.FORMS,
    Surface.SHORTCUT: PolicySurface.FORMS,
    Surface.MESSAGE: PolicySurface.FORMS,
    Surface.WORKFLOW: PolicySurface.WORKFLOWS,
}
# A form or a workflow step names its channel: its sender (the step's runner) must be in it.
NAMED_CHANNEL = (Surface.MODAL, Surface.WORKFLOW)


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
class Naming:
    """How the policy's reasons name the conversation and the person; None: as a refusal does (``<#C…>``,
    ``<@U…>``). A form names them from where its reader sits ("this conversation", "your account")."""

    channel: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class Offer:
    """What a form may offer a person here: the senders and WhatsApp templates some rule lets them use."""

    senders: list[str]
    templates: dict[str, str] = field(default_factory=dict)  # alias → the first offered sender that has it
    why_none: str = ""  # no senders: why, in the policy's words


@dataclass(frozen=True)
class _Given:
    """What the request itself says, checked without a look-up."""

    problems: list[Problem]
    text: str  # as it would go out ("" while a template's sender is still to be chosen)


# What comes of asking the policy before the recipients: the facts to decide with (and the text), or why not.
_Early = tuple[SendRequestFacts, str] | list[Problem]


class Admission:
    """The policy and the directory, asked the same way for every surface."""

    def __init__(
        self,
        policy: Policy,
        directory: Directory,
        optouts: OptOutList | None = None,
        oncall: OnCall | None = None,
        verified: VerifiedPhones | None = None,  # with defaults.verified_phones: who verified which profile phone
    ) -> None:
        self.policy = policy
        self.directory = directory
        self.optouts = optouts  # the opt-out list (None: none is kept)
        self.recipients = Recipients(policy, directory, optouts, oncall, verified)

    async def admit(self, send_id: str, request: SendRequest, at: datetime | None = None) -> PreparedSend:
        """The outbox's check: the send as checked, or ``Refused`` naming every problem ``check`` found. The bot's
        answers to phones are checked as answers (``bot.sending.answers``), not by the policy's rules. ``at``: when
        the request was recorded (who is on call for a schedule it names is who was then)."""
        if keys.is_answer(request.idempotency_key):
            answer = await check_answer(self.policy, self.optouts, request)
            if isinstance(answer, Refusal):
                raise Refused(answer)
            return prepared(send_id, request, answer, self.policy.defaults.show_numbers)
        checked = await self.check(request, at=at)
        if isinstance(checked, Problems):
            raise Refused(checked.refusal)
        return prepared(send_id, request, checked, self.policy.defaults.show_numbers)

    async def check(
        self,
        request: SendRequest,
        *,
        within: float | None = None,
        naming: Naming | None = None,
        member: bool | None = None,
        at: datetime | None = None,
    ) -> Checked | Problems:
        """The send as checked, or every problem, each with the part of the request it is about.

        Without ``within`` (the outbox): Slack is asked one step at a time, and the first step with problems ends
        the check. With ``within`` (a form's answer): what was given is checked, the policy asked before any look-up
        when no policy user group could change its answer (a refusal then ends it), and then the user's groups,
        the membership and every recipient are asked of Slack at once; past ``within`` seconds the answer is
        ``Problems(in_time=False)`` with what needed no look-up. ``member``: the caller knows whether the sender is
        in the conversation (a form opened there), so it is not looked up. A look-up Slack answered with a failure
        raises ``ServiceUnavailable``.
        """
        facts = self._facts(request, naming or Naming())
        if facts is None:  # alerts are decided by their alert rules, never by admission
            return Problems((Problem(Part.POLICY, texts.not_decided_by_rules(request.origin.surface), denied=True),))
        given = self._given(request)
        if within is not None:
            return await self._at_once(request, facts, given, within, member)
        if given.problems:
            return Problems(tuple(given.problems))
        groups = await self.user_groups(request.user_id, request.channel_id, request.via)
        early = self._before_recipients(request, replace(facts, user_groups=groups), given)
        if isinstance(early, list):
            return Problems(tuple(early))
        if (outside := self._membership(request, await self._is_member(request, member))) is not None:
            return Problems((outside,))
        found = await self.recipients.resolve(request.recipients, at)
        if found.refusing:
            return Problems(tuple(found.refusing))
        return self._decide(request, *early, found)

    async def _at_once(
        self, request: SendRequest, facts: SendRequestFacts, given: _Given, within: float, member: bool | None
    ) -> Checked | Problems:
        """``check`` for a form: one round of look-ups within ``within`` seconds, every problem named."""
        problems = list(given.problems)
        early: _Early | None = None
        if not groups_to_look_up(self.policy, request.user_id, request.channel_id, request.via):
            early = self._before_recipients(request, facts, given)  # needs no look-up: decided before any
            if isinstance(early, list):
                return Problems((*problems, *early))
        # Deadlines that hold even while the database drops packets: the work past them is let go, not waited for.
        looking_up = asyncio.gather(
            self.user_groups(request.user_id, request.channel_id, request.via),
            self._is_member(request, member),
            self.recipients.resolve(request.recipients),
        )
        try:
            groups, is_in, found = await at_most(within, looking_up)
        except TimeoutError:
            offline = [r for r in request.recipients if r.kind in OFFLINE]
            try:  # what needs no Slack look-up, if the database answers at once (it may be what is slow)
                resolved = await at_most(OFFLINE_WITHIN, self.recipients.resolve(offline))
            except TimeoutError:
                return Problems(tuple(problems), in_time=False)
            return Problems((*problems, *resolved.refusing), in_time=False)
        if (outside := self._membership(request, is_in)) is not None:
            problems.append(outside)
        problems += found.refusing
        if early is None:
            early = self._before_recipients(request, replace(facts, user_groups=groups), given)
        if isinstance(early, list):  # after what the look-ups found: a form shows those first
            return Problems((*problems, *early))
        if problems:
            return Problems(tuple(problems))
        return self._decide(request, *early, found)

    def _facts(self, request: SendRequest, naming: Naming) -> SendRequestFacts | None:
        """What the policy is asked about this request, recipients and the user's groups aside; None when its
        surface is not decided by the policy's rules."""
        surface = POLICY_SURFACES.get(request.origin.surface)
        if surface is None:
            return None
        return SendRequestFacts(
            user_id=request.user_id,
            channel_id=request.channel_id,
            via=request.via,
            recipients=(),
            sender=request.sender,
            channel_label=naming.channel or texts.conversation_label(request.channel_id),
            user_label=naming.user or texts.user_label(request.user_id),
            template=request.template.alias if request.template is not None else None,
            surface=surface,
        )

    def _given(self, request: SendRequest) -> _Given:
        """The text for its via, or the template with its values when the request names its sender (else the
        sender is chosen once the user's groups are known); and that someone is named."""
        problems: list[Problem] = []
        text = ""
        if request.template is None:
            text = request.text.strip()
            try:
                self.check_text(request.via, text)
            except InputError as exc:
                problems.append(Problem(Part.TEXT, str(exc), error=exc))
        elif request.sender is not None:
            filled = filled_in(self.policy, request, frozenset())
            if isinstance(filled, list):
                problems += filled
            else:
                text = filled[1]
        if not request.recipients:
            problems.append(Problem(Part.RECIPIENTS, texts.no_recipients()))
        return _Given(problems, text)

    def _before_recipients(self, request: SendRequest, facts: SendRequestFacts, given: _Given) -> _Early:
        """The policy on what needs no recipients (``facts.user_groups``: as looked up): a refusal here is its
        answer whatever they turn out to be. Also how many are named: a thousand people named would be a thousand
        look-ups to learn what their count already says."""
        sender, text = request.sender, given.text
        if request.template is not None and request.sender is None:
            chosen = filled_in(self.policy, request, facts.user_groups, facts.surface)
            if isinstance(chosen, list):
                return chosen
            sender, text = chosen
        facts = replace(facts, sender=sender)
        early = evaluate_before_recipients(self.policy, facts)
        if not early.allowed:
            return [Problem.refused(early)]
        too_many = too_many_named(self.policy, facts, self.recipients.named_count(request.recipients))
        if too_many is not None:
            return [Problem(Part.POLICY, too_many, denied=True, dimension=Dimension.COUNT)]
        return facts, text

    async def _is_member(self, request: SendRequest, member: bool | None) -> bool | None:
        """Whether the sender is in the conversation a form or a step names (the policy's rules are about
        channels); None: the bot cannot see its members (private, a DM it is not in)."""
        if member is not None:
            return member
        if request.origin.surface not in NAMED_CHANNEL:
            return True
        return await self.directory.is_member(request.channel_id, request.user_id)

    def _membership(self, request: SendRequest, is_in: bool | None) -> Problem | None:
        """A form's conversation picker lists only the private conversations its user is in, so one the bot cannot
        see is theirs; a workflow's channel is its author's choice, so there only what the bot sees counts."""
        if is_in is False:
            return Problem(Part.CHANNEL, texts.not_a_member(request.channel_id), denied=True)
        if is_in is None and request.origin.surface is Surface.WORKFLOW:
            return Problem(Part.CHANNEL, texts.unseen(request.channel_id), denied=True)
        return None

    def _decide(
        self, request: SendRequest, facts: SendRequestFacts, text: str, found: Resolution
    ) -> Checked | Problems:
        """The policy's full decision, every recipient known."""
        facts = replace(facts, recipients=found.numbers, on_call=found.through)
        decision = evaluate(self.policy, facts)
        if not decision.allowed or decision.sender is None or decision.rule is None:
            return Problems((Problem.refused(decision, self._refused_recipient(decision, facts, found)),))
        return Checked(
            rule=decision.rule,
            sender=decision.sender,
            originator=self.policy.senders[decision.sender].originator,
            recipients=tuple(found.numbers),
            text=text,
            names=found.names,
            unreached=found.left_out,
            template=request.template,
            on_call=found.on_call,
        )

    def _refused_recipient(self, decision: Decision, facts: SendRequestFacts, found: Resolution) -> RecipientRef | None:
        """The reference that gave the first number the policy refuses, when it refused a recipient."""
        if decision.dimension is not Dimension.RECIPIENT:
            return None
        for number in facts.recipients:
            if evaluate(self.policy, replace(facts, recipients=[number])).dimension is Dimension.RECIPIENT:
                return found.sources[number.e164]
        return None

    def check_text(self, via: Via, text: str) -> SmsInfo | None:
        """The SMS encoding of ``text`` (None for WhatsApp); ``InputError`` when it is empty or too long."""
        if not text.strip():
            raise EmptyMessage()
        if via is Via.WHATSAPP:
            if len(text) > WHATSAPP_MAX_CHARS:
                raise InputError(texts.whatsapp_too_long(len(text), WHATSAPP_MAX_CHARS))
            return None
        info = analyze(text)
        if info.segments > self.policy.defaults.max_segments:
            raise MessageTooLong(info.segments, self.policy.defaults.max_segments, info.encoding.label)
        return info

    async def resolve(self, refs: Sequence[RecipientRef], at: datetime | None = None) -> Resolution:
        """Every reference resolved that can be (``Recipients.resolve``; a schedule's person: who was on call at
        ``at``)."""
        return await self.recipients.resolve(refs, at)

    async def without_opted_out(self, numbers: Sequence[PhoneNumber]) -> tuple[list[PhoneNumber], tuple[str, ...]]:
        """``numbers`` without those on the opt-out list, and why each left out is (for a thread): for texts that
        go to phones already known (a summary's phone, RESOLVED to those an alert reached), not resolved again."""
        refs = tuple(RecipientRef(RefKind.NUMBER, n.e164) for n in numbers)
        found = Resolution()
        for number, ref in zip(numbers, refs, strict=True):
            found.add(number, ref)
        await self.recipients.take_out_opted_out(found)
        return found.numbers, tuple(p.text for p in found.problems)

    def offer(self, user_id: str, channel_id: str | None, groups: frozenset[str], channel_label: str) -> Offer:
        """What a form may offer this user here (any channel when None), ``groups``: their policy user groups;
        the send itself is still decided by ``check`` with its recipients."""
        senders = allowed_senders(self.policy, user_id, channel_id, groups)
        if not senders:
            return Offer([], why_none=why_nothing_allowed(self.policy, channel_id, channel_label))
        return Offer(senders, allowed_templates(self.policy, user_id, channel_id, groups, PolicySurface.FORMS))

    def asks_slack(self, user_id: str, channel_id: str | None) -> bool:
        """Whether ``user_groups`` for this user here asks Slack anything (a form that needs no look-up opens at
        once)."""
        return bool(groups_to_look_up(self.policy, user_id, channel_id))

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
