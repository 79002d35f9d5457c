"""Authorize first, then look things up: a request the policy refuses whatever its recipients costs no look-up of
them, and a user group over ``defaults.max_group_size`` is refused without reading its members' profiles. End to
end: signed commands into the real app, the strict fake Slack counting every call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, global_shortcut, running_app
from tests.test_cli import run
from tests.test_compose import interact, opened_view, state, submission

SMS = "/messages/v1/send"

POLICY = """
version: 1
defaults: {region: US, max_group_size: 50}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
rules:
  - name: ops may page on-call
    slack_channels: [C0OPS]
    users: [U0ALICE, S0OPS]
    senders: [ops-sms]
    recipients: ["+1*"]
    max_recipients: 100
"""


def members(group: str, count: int) -> list[str]:
    return [f"U0{group}{i:03d}" for i in range(count)]


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("C0OPS")
        fake.add_channel("C0RANDOM")
        fake.add_user("U0ALICE", "alice", "+1 415 555 0100")
        fake.add_user("U0MALLORY", "mallory", "+1 415 555 0199")
        fake.state.usergroups["S0OPS"] = ["U0ALICE"]
        for group, count in (("BIG", 400), ("SIXTY", 60), ("FIFTY", 50)):
            fake.state.usergroups[f"S0{group}"] = members(group, count)
            for i, user in enumerate(members(group, count)):
                fake.add_user(user, user.lower(), f"+1 415 555 {1000 + i}")
        yield fake


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY) as running:
        yield running


def told(slack: FakeSlack) -> tuple[str, str]:
    """The refusal's heading and its problems, as the sender sees them."""
    (response,) = slack.responses["cmd"]
    assert response["response_type"] == "ephemeral"
    return response["blocks"][0]["text"]["text"], response["blocks"][1]["text"]["text"]


async def test_a_refused_user_naming_a_400_member_group_is_refused_without_looking_up_anyone(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "<!subteam^S0BIG|@big> hi", user="U0MALLORY", channel="C0OPS")
    await app.settle()

    assert told(slack) == (
        ":no_entry: *Not sent:* the policy does not allow this.",
        "• <@U0MALLORY> is not allowed to send via SMS from <#C0OPS>",
    )
    assert slack.of("users.info") == []
    # Only the policy's own group, to know whether mallory is in it; never the group she named.
    assert [call["usergroup"] for call in slack.of("usergroups.users.list")] == ["S0OPS"]
    assert fake_d7.requests == []
    assert slack.of("chat.postMessage") == []


async def test_a_channel_no_rule_allows_is_refused_without_any_look_up(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "<!subteam^S0BIG|@big> <@U0ALICE|alice> hi", user="U0ALICE", channel="C0RANDOM")
    await app.settle()

    assert told(slack)[1] == "• <#C0RANDOM> is not allowed to send via SMS"
    assert slack.of("users.info") == []
    assert slack.of("usergroups.users.list") == []
    assert fake_d7.requests == []


async def test_a_group_over_max_group_size_is_refused_naming_it_and_the_limit_without_reading_profiles(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "<!subteam^S0SIXTY|@sixty> hi", user="U0ALICE", channel="C0OPS")
    await app.settle()

    assert told(slack) == (
        ":warning: *Not sent:* please fix the following and try again.",
        "• the user group @sixty has 60 members; the policy allows at most 50 per group",
    )
    assert slack.of("users.info") == []
    assert [call["usergroup"] for call in slack.of("usergroups.users.list")] == ["S0SIXTY"]
    assert fake_d7.requests == []


async def test_a_group_of_exactly_max_group_size_is_sent_to_every_member(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "<!subteam^S0FIFTY|@fifty> hi", user="U0ALICE", channel="C0OPS")
    await app.settle()

    (body,) = fake_d7.bodies(SMS)
    assert body["messages"][0]["recipients"] == [f"+1415555{1000 + i}" for i in range(50)]
    assert sorted(call["user"] for call in slack.of("users.info")) == members("FIFTY", 50)
    assert "cmd" not in slack.responses


async def test_a_form_sent_from_a_conversation_no_rule_allows_looks_up_none_of_its_people(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    shortcut = global_shortcut("1337.9.global")
    await interact(app, shortcut)
    view = (await opened_view(app, slack))["view"]
    looked_up = len(slack.of("users.info"))

    people = members("FIFTY", 20)
    denied = await interact(app, submission(view, state(message="hi", people=people, conversation="C0RANDOM")))
    await app.settle()

    assert denied.json()["errors"] == {"conversation": "this conversation is not allowed to send via SMS"}
    assert slack.of("users.info")[looked_up:] == []

    allowed = await interact(app, submission(view, state(message="hi", people=people, conversation="C0OPS")))
    await app.settle()

    assert allowed.text == ""  # the same people, from a conversation a rule allows: looked up and sent
    assert sorted(call["user"] for call in slack.of("users.info")[looked_up:]) == people
    assert len(fake_d7.bodies(SMS)) == 1


def test_check_shows_max_group_size(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY.replace("max_group_size: 50", "max_group_size: 25"))
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "BOT_POLICY": str(policy)}

    result = run("check", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (
        f"policy: {policy} (region US, at most 10 SMS segments, user groups of at most 25 members, numbers masked)"
        in result.stdout.splitlines()
    )
