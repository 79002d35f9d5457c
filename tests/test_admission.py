"""One admission for every surface: ``Admission.check`` gives the checked send or every problem with the part of the
request it is about; the outbox raises them as one refusal (``admit``), a form gets them all at once within its
budget. In memory, the directory counting its look-ups."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
import yaml

from bot.domain.models import Origin, Person, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.policy import Dimension, parse_policy
from bot.domain.sends import Checked, RefusalKind
from bot.domain.templates import TemplateUse
from bot.sending.admission import OFFLINE_WITHIN, Admission, Naming, Refused
from bot.sending.problems import Part, Problems
from tests.memory import FakeDirectory

POLICY = """
version: 1
defaults: {region: US, max_segments: 3, countries: [US, GB, AE]}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
  support-wa:
    via: whatsapp
    originator: "+971501234567"
    templates:
      follow_up: {template_id: follow_up_v1, language: en, params: [ticket], text: "About your ticket {{1}}"}
rules:
  - name: ops
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms, support-wa]
    recipients: ["+1*"]
    max_recipients: 5
"""

FORM = Naming("this conversation", "your account")


class CountingDirectory(FakeDirectory):
    """The fake directory, counting who was looked up; ``slow``: seconds each person's look-up takes."""

    def __init__(self, slow: float = 0.0) -> None:
        super().__init__()
        self.slow = slow
        self.asked: list[str] = []

    async def person(self, user_id: str) -> Person:
        self.asked.append(user_id)
        await asyncio.sleep(self.slow)
        return await super().person(user_id)


def admission(directory: FakeDirectory | None = None) -> Admission:
    return Admission(parse_policy(yaml.safe_load(POLICY)), directory or CountingDirectory())


def request(
    *refs: RecipientRef,
    text: str = "disk full",
    via: Via = Via.SMS,
    channel: str = "C0OPS",
    surface: Surface = Surface.MODAL,
    sender: str | None = "ops-sms",
    template: TemplateUse | None = None,
) -> SendRequest:
    return SendRequest(
        via=via,
        origin=Origin(surface, "T0TEAM", "U0ALICE", channel),
        recipients=refs,
        text=text,
        idempotency_key="view:V1",
        sender=sender,
        template=template,
    )


def number(value: str) -> RecipientRef:
    return RecipientRef(RefKind.NUMBER, value)


def person(user_id: str) -> RecipientRef:
    return RecipientRef(RefKind.USER, user_id)


async def test_a_form_gets_every_problem_at_once_and_the_outbox_the_first_step_s() -> None:
    directory = CountingDirectory()
    directory.add_person("U0DAVE", "dave")
    asked = request(number("nope"), person("U0DAVE"), text="  ")
    admitting = admission(directory)

    found = await admitting.check(asked, within=1.0, naming=FORM, member=True)

    assert isinstance(found, Problems)
    assert [(p.part, p.text) for p in found.found] == [
        (Part.TEXT, "the message is empty"),
        (
            Part.RECIPIENT,
            "'nope' is not a valid phone number: only digits, spaces, dashes, dots, brackets and a leading + are allowed",
        ),
        (Part.RECIPIENT, "@dave has no phone number in their Slack profile"),
    ]
    with pytest.raises(Refused) as refused:
        await admitting.admit("s1", asked)
    assert (refused.value.refusal.kind, refused.value.refusal.problems) == (
        RefusalKind.INVALID,
        ("the message is empty",),
    )


async def test_a_form_the_policy_refuses_whatever_its_recipients_looks_nobody_up() -> None:
    directory = CountingDirectory()
    directory.add_person("U0BOB", "bob", "+1 415 555 0101")

    found = await admission(directory).check(
        request(person("U0BOB"), channel="C0RANDOM"), within=1.0, naming=FORM, member=True
    )

    assert isinstance(found, Problems)
    ((problem,),) = [found.found]
    assert (problem.part, problem.dimension, problem.text) == (
        Part.POLICY,
        Dimension.CHANNEL,
        "this conversation is not allowed to send via SMS",
    )
    assert directory.asked == []


async def test_a_form_past_its_budget_gets_what_needs_no_look_up() -> None:
    directory = CountingDirectory(slow=1.0)
    directory.add_person("U0BOB", "bob", "+1 415 555 0101")

    found = await admission(directory).check(
        request(number("+1 555"), person("U0BOB")), within=0.05, naming=FORM, member=True
    )

    assert isinstance(found, Problems)
    assert found.in_time is False
    assert [(p.part, p.ref) for p in found.found] == [(Part.RECIPIENT, number("+1 555"))]


class StalledOptOuts:
    """The opt-out list on a database that stopped answering (PostgreSQL dropping packets)."""

    async def opted_out(self, phones: Sequence[str]) -> dict[str, Any]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # asyncpg cancels its query over the same network: as slow to stop
            await asyncio.sleep(3)
            raise
        return {}

    async def opt_out(self, entry: Any) -> bool:
        raise AssertionError("not asked")

    async def opt_in(self, phone: str) -> bool:
        raise AssertionError("not asked")


async def test_a_form_past_its_budget_while_the_database_stalls_is_answered_in_time_unchecked() -> None:
    """The soak (seed 21) answered forms after up to 5.9 s under PostgreSQL stalls: past its look-ups' time, the
    form's check read the opt-out list without a deadline. Now it gets 0.25 s more, then the request is recorded
    unchecked (the outbox checks it before sending). A read cancelled at its deadline is let go, not waited for
    (seed 24: its cancellation took seconds over the stalled network)."""
    directory = CountingDirectory(slow=1.0)
    directory.add_person("U0BOB", "bob", "+1 415 555 0101")
    policy = parse_policy(yaml.safe_load(POLICY))
    started = time.monotonic()

    found = await Admission(policy, directory, StalledOptOuts()).check(
        request(number("+14155550100"), person("U0BOB")), within=0.05, naming=FORM, member=True
    )

    assert time.monotonic() - started < 0.05 + OFFLINE_WITHIN + 0.2
    assert isinstance(found, Problems)
    assert (found.in_time, found.found) == (False, ())


async def test_the_recipient_the_policy_refuses_is_named_with_how_it_was_given() -> None:
    directory = CountingDirectory()
    directory.add_person("U0BOB", "bob", "+44 20 7946 0000")

    found = await admission(directory).check(
        request(number("+14155550100"), person("U0BOB")), within=1.0, naming=FORM, member=True
    )

    assert isinstance(found, Problems)
    ((problem,),) = [found.found]
    assert (problem.part, problem.dimension, problem.ref) == (Part.POLICY, Dimension.RECIPIENT, person("U0BOB"))
    assert problem.text == "+44 20 ••• 0000 is outside the numbers rule 'ops' allows"


async def test_a_picked_conversation_its_sender_is_not_in_is_refused_and_one_opened_there_is_not_looked_up() -> None:
    directory = CountingDirectory()
    directory.members["C0OPS"] = {"U0BOB"}
    admitting = admission(directory)

    picked = await admitting.check(request(number("+14155550100")), within=1.0, naming=FORM)
    opened_there = await admitting.check(request(number("+14155550100")), within=1.0, naming=FORM, member=True)

    assert isinstance(picked, Problems)
    assert [(p.part, p.text) for p in picked.found] == [
        (Part.CHANNEL, "you are not a member of <#C0OPS>: pick a conversation you are in")
    ]
    assert isinstance(opened_there, Checked)
    assert (opened_there.rule, opened_there.sender, [n.e164 for n in opened_there.recipients]) == (
        "ops",
        "ops-sms",
        ["+14155550100"],
    )


async def test_a_sender_without_the_template_has_one_wording_for_the_form_and_the_outbox() -> None:
    unknown = request(
        number("+14155550100"), via=Via.WHATSAPP, sender="support-wa", template=TemplateUse("nope", ("T-1",))
    )
    admitting = admission()

    found = await admitting.check(unknown, within=1.0, naming=FORM, member=True)
    with pytest.raises(Refused) as refused:
        await admitting.admit("s1", unknown)

    assert isinstance(found, Problems)
    # First, so it is what the form shows on the template's field (the policy's own refusal of it comes after).
    assert (found.found[0].part, found.found[0].text) == (Part.TEMPLATE, "sender 'support-wa' has no template 'nope'")
    assert refused.value.refusal.problems == ("sender 'support-wa' has no template 'nope'",)


async def test_a_template_value_whatsapp_refuses_is_named_by_its_index() -> None:
    asked = request(
        number("+14155550100"), via=Via.WHATSAPP, sender="support-wa", template=TemplateUse("follow_up", ("T\t1",))
    )

    found = await admission().check(asked, within=1.0, naming=FORM, member=True)

    assert isinstance(found, Problems)
    assert [(p.part, p.index) for p in found.found] == [(Part.PARAMETER, 0)]
