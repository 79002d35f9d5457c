"""Least exposure: a form sends "from" a conversation only when its sender is in it (policy rules are about
channels), against the strict fake Slack (conversations.members)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, Surface, Via
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import App, global_shortcut, running_app
from tests.test_compose import interact, opened_view, state, submission


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    slack.add_user("U0ALICE", "alice", "+1 415 555 0100")
    slack.add_channel("C0OPS", users=["U0BOB"])  # public, the bot is in it; Alice is not
    async with running_app(slack, fake_d7, tmp_path) as running:
        yield running


async def test_a_global_shortcut_pick_of_a_channel_the_sender_is_not_in_is_refused_on_the_field(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    shortcut = global_shortcut("1337.9.member")
    await interact(app, shortcut)
    view = (await opened_view(app, slack))["view"]

    answer = await interact(app, submission(view, state(message="hi", numbers="+14155550100", conversation="C0OPS")))
    await app.settle()

    assert answer.json() == {
        "response_action": "errors",
        "errors": {"conversation": "You are not a member of this conversation. Pick one you are in."},
    }
    assert fake_d7.sends == {}
    assert await app.relay.storage.sends.audit() == []


async def test_a_form_recorded_unchecked_for_a_non_member_is_refused_by_the_outbox(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    # What a submission whose look-ups ran past its budget records: the outbox checks membership itself.
    origin = Origin(Surface.MODAL, TEAM_ID, "U0ALICE", "C0OPS", response_url=slack.response_url("form"))
    request = SendRequest(
        via=Via.SMS,
        origin=origin,
        recipients=(RecipientRef(RefKind.NUMBER, "+14155550100"),),
        text="hi",
        idempotency_key="view:V0UNCHECKED",
    )
    assert await app.relay.storage.sends.record(request, timedelta(minutes=15)) is not None
    app.relay.outbox.wakeup.set()
    await app.settle()

    assert fake_d7.sends == {}
    (refusal,) = slack.responses["form"]
    assert refusal["blocks"][1]["text"]["text"] == (
        "• you are not a member of <#C0OPS>: pick a conversation you are in"
    )
