"""/sms and /whatsapp end to end: signed requests into the real app over loopback HTTP, the fake Slack Web API
and the fake D7 behind it. Assertions are on what went over the wire and on what people see in Slack."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import App, database_down, no_sleep_d7, running_app, sign, slash_command

SMS = "/messages/v1/send"
WA = "/whatsapp/v2/send"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        for channel in ("C0OPS", "C0SUPPORT"):
            fake.add_channel(channel)
        fake.add_channel("C0NOTJOINED", member=False, public=True)
        fake.add_channel("C0PRIVATE", member=False, public=False)
        fake.add_user("U0ALICE", "alice", "+1 415 555 0100")
        fake.add_user("U0BOB", "bob", "(415) 555-0101")
        fake.add_user("U0CAROL", "carol", "+44 20 7946 0000")
        fake.add_user("U0NOPHONE", "dave", "")
        fake.state.usergroups["S0SUPPORT"] = ["U0ALICE", "U0AGENT"]
        fake.state.usergroups["S0ONCALL"] = ["U0BOB", "U0CAROL"]
        yield fake


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path) as running:
        yield running


def everything_posted(slack: FakeSlack) -> str:
    return json.dumps([c.params for c in slack.calls] + list(slack.responses.values()))


async def test_sms_allowed_sends_exact_body_and_answers_in_thread(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    response = await app.command("/sms", "+14155550100, group:oncall-db Disk full on db-1")
    await app.settle()

    assert response.status_code == 200
    assert response.text == ""  # an empty ack: the story is told in the channel
    assert fake_d7.bodies(SMS) == [
        {
            "messages": [
                {
                    "channel": "sms",
                    "recipients": ["+14155550100", "+14155550101"],
                    "content": "Disk full on db-1",
                    "msg_type": "text",
                    "data_coding": "text",
                }
            ],
            "message_globals": {"originator": "OpsAlert"},
        }
    ]
    (request_id,) = fake_d7.sends
    parent, reply = slack.of("chat.postMessage")
    assert parent["channel"] == "C0OPS"
    assert "thread_ts" not in parent
    assert parent["blocks"][0]["text"]["text"] == (
        ":outbox_tray: <@U0ALICE> is sending an SMS as *OpsAlert* (`ops-sms`) to +1 415 ••• 0100, +1 415 ••• 0101"
    )
    assert parent["blocks"][1]["elements"][0]["elements"] == [{"type": "text", "text": "Disk full on db-1"}]
    assert parent["blocks"][2]["elements"][0]["text"] == "GSM-7 · 1 segment · 17 characters · 2 recipients"
    assert parent["text"] == "An SMS from <@U0ALICE> to 2 recipient(s): Disk full on db-1"
    assert parent["unfurl_links"] is False
    assert reply["channel"] == "C0OPS"
    assert reply["thread_ts"] == slack.posted_ts(0)
    assert reply["text"].startswith(
        f":white_check_mark: *Accepted by D7* · request_id `{request_id}` · created <!date^"
    )
    assert slack.responses == {}


async def test_whatsapp_resolves_people_and_user_groups_to_profile_phones(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    response = await app.command(
        "/whatsapp",
        "<@U0BOB|bob> <!subteam^S0ONCALL|@oncall> Your ticket #42 is resolved",
        user="U0AGENT",
        channel="C0SUPPORT",
    )
    await app.settle()

    assert response.status_code == 200
    (body,) = fake_d7.bodies(WA)
    message = body["messages"][0]
    assert message["originator"] == "+971501234567"
    assert message["content"] == {
        "message_type": "TEXT",
        "text": {"preview_url": False, "body": "Your ticket #42 is resolved"},
    }
    assert [r["recipient"] for r in message["recipients"]] == ["+14155550101", "+442079460000"]
    assert {r["recipient_type"] for r in message["recipients"]} == {"individual"}
    cust_refs = {r["reference"]["cust_ref"] for r in message["recipients"]}
    assert len(cust_refs) == 1
    assert [p["user"] for p in slack.of("users.info")].count("U0BOB") == 1  # cached between the two refs
    parent, reply = slack.of("chat.postMessage")
    assert "to +1 415 ••• 0101 (@bob), +44 20 ••• 0000 (@carol)" in parent["blocks"][0]["text"]["text"]
    assert parent["text"].startswith("A WhatsApp message from <@U0AGENT> to 2 recipient(s): ")
    assert "Accepted by D7" in reply["text"]


async def test_policy_denial_sends_nothing_and_tells_only_the_sender(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "+442079460000 hello", channel="C0OPS")
    await app.command("/whatsapp", "+14155550100 hello", user="U0BOB", channel="C0SUPPORT")
    await app.settle()

    assert fake_d7.requests == []
    assert slack.of("chat.postMessage") == []
    first, second = slack.responses["cmd"]
    assert first["response_type"] == "ephemeral"
    assert (
        first["blocks"][1]["text"]["text"]
        == "• +44 20 ••• 0000 is outside the numbers rule 'ops may page on-call' allows"
    )
    # People and channels as Slack shows them (an ephemeral mention notifies nobody), not as escaped markup.
    assert second["blocks"][1]["text"]["text"] == "• <@U0BOB> is not allowed to send via WhatsApp from <#C0SUPPORT>"
    assert first["blocks"][0]["text"]["text"] == ":no_entry: *Not sent:* the policy does not allow this."


async def test_invalid_recipients_are_all_named_and_nothing_is_sent(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "+1555 <@U0NOPHONE|dave> <@U0GHOST|ghost> group:nope hello")
    await app.settle()

    assert fake_d7.requests == []
    (response,) = slack.responses["cmd"]
    assert response["blocks"][1]["text"]["text"] == "\n".join(
        [
            "• '+1555' is not a valid phone number: too short",
            "• @dave has no phone number in their Slack profile",
            "• <@U0GHOST> is not a member of this workspace",
            "• there is no contact group 'nope' in the policy",
        ]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", "*/sms* sends an SMS through D7."),
        ("hello there", "start with who to text"),
        ("+14155550100", "the message is empty"),
    ],
)
async def test_usage_and_syntax_errors_come_back_in_the_ack(
    app: App, fake_d7: FakeD7, text: str, expected: str
) -> None:
    response = await app.command("/sms", text)

    assert response.status_code == 200
    assert expected in response.json()["text"]
    assert fake_d7.requests == []


async def test_message_longer_than_max_segments_is_refused(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/sms", "+14155550100 " + "x" * 460)
    await app.settle()

    assert fake_d7.requests == []
    (response,) = slack.responses["cmd"]
    assert "the message needs 4 SMS segments (GSM-7); the limit is 3" in response["blocks"][1]["text"]["text"]


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply(401), "D7 refused the bot's API token (HTTP 401). An admin must fix `D7_API_TOKEN`"),
        (Reply(402), "the D7 account is out of credit (HTTP 402)"),
        (
            Reply(
                422, {"detail": [{"loc": ["body", "messages", 0, "content"], "msg": "too long", "type": "value_error"}]}
            ),
            "D7 said the request was invalid (HTTP 422): body.messages.0.content: too long",
        ),
        (Reply(500, "boom"), "*Outcome unknown:* D7 did not answer, so the text may or may not have gone out"),
    ],
)
async def test_d7_failures_are_explained_in_the_thread(
    app: App, slack: FakeSlack, fake_d7: FakeD7, reply: Reply, words: str
) -> None:
    fake_d7.enqueue(reply)

    await app.command("/sms", "+14155550100 test")
    await app.settle()

    _, answer = slack.of("chat.postMessage")
    assert answer["thread_ts"] == slack.posted_ts(0)
    assert words in answer["text"]


async def test_unregistered_whatsapp_sender_is_explained(slack: FakeSlack, tmp_path: Path) -> None:
    with FakeD7(registered_whatsapp=()) as d7:
        async with running_app(slack, d7, tmp_path) as app:
            await app.command("/whatsapp", "+14155550100 hi", user="U0ALICE", channel="C0SUPPORT")
            await app.settle()

    _, answer = slack.of("chat.postMessage")
    assert (
        "sender `support-wa` (+971501234567) is not a registered WhatsApp number on the D7 account (HTTP 404)"
        in (answer["text"])
    )


async def test_d7_unavailable_shows_retrying_once_then_the_outcome(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    fake_d7.enqueue(503, 503)

    async with running_app(slack, fake_d7, tmp_path, gateway=no_sleep_d7(fake_d7)) as app:
        await app.command("/sms", "+14155550100 test")
        await app.settle()

    _, retrying, answer = slack.of("chat.postMessage")
    assert retrying["thread_ts"] == answer["thread_ts"] == slack.posted_ts(0)
    assert (
        retrying["text"] == ":hourglass_flowing_sand: D7 unavailable (HTTP 503) — retrying. Nothing has been sent yet."
    )
    assert "Accepted by D7" in answer["text"]
    assert len(fake_d7.sends) == 1


async def test_slack_markup_in_the_text_is_shown_not_acted_on(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/sms", "+14155550100 <!channel> <@U0BOB|bob> see <https://status.example.com|status> &lt;b&gt;")
    await app.settle()

    (body,) = fake_d7.bodies(SMS)
    assert body["messages"][0]["content"] == "@channel @bob see status (https://status.example.com) <b>"
    parent, _ = slack.of("chat.postMessage")
    assert parent["blocks"][1]["elements"][0]["elements"][0] == {
        "type": "text",
        "text": "@channel @bob see status (https://status.example.com) <b>",
    }
    assert parent["text"].endswith("@channel @bob see status (https://status.example.com) &lt;b&gt;")
    posted = everything_posted(slack)
    assert "<!channel>" not in posted
    assert "<@U0BOB" not in posted
    assert "<b>" not in parent["text"]


async def test_bot_not_in_public_channel_joins_then_posts(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/sms", "+14155550100 hi", channel="C0NOTJOINED")
    await app.settle()

    assert [p["channel"] for p in slack.of("conversations.join")] == ["C0NOTJOINED"]
    failed, parent, answer = slack.of("chat.postMessage")
    assert failed["channel"] == parent["channel"] == "C0NOTJOINED"
    assert answer["thread_ts"] == slack.posted_ts(0)
    assert slack.responses == {}


async def test_private_channel_gets_the_whole_story_through_response_url(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "+14155550100 hi", channel="C0PRIVATE")
    await app.settle()

    assert len(fake_d7.sends) == 1
    (request_id,) = fake_d7.sends
    announcement, result = slack.responses["cmd"]
    assert announcement["response_type"] == result["response_type"] == "ephemeral"
    assert "I can't post in <#C0PRIVATE>" in announcement["blocks"][0]["text"]["text"]
    assert announcement["blocks"][1]["text"]["text"].startswith(":outbox_tray: <@U0ALICE> is sending an SMS")
    assert f"request_id `{request_id}`" in result["text"]


async def test_slack_429_on_post_is_retried(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)

    await app.command("/sms", "+14155550100 hi")
    await app.settle()

    posts = slack.of("chat.postMessage")
    assert len(posts) == 3  # the 429, then the parent and the reply
    assert "Accepted by D7" in posts[2]["text"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda body: sign(body, secret="wrong-secret"), id="wrong signature"),
        pytest.param(lambda body: {}, id="missing signature"),
        pytest.param(lambda body: sign(body, timestamp=int(time.time()) - 6 * 60), id="older than 5 minutes"),
        pytest.param(
            lambda body: {**sign(body), "X-Slack-Signature": _flip_last(sign(body)["X-Slack-Signature"])}, id="tampered"
        ),
    ],
)
async def test_unsigned_or_stale_requests_are_refused(app: App, slack: FakeSlack, fake_d7: FakeD7, headers) -> None:  # type: ignore[no-untyped-def]
    body = slash_command("/sms", "+14155550100 hi", response_url=slack.response_url("cmd"))

    response = await app.post(body, headers=headers(body))
    await app.settle()

    assert response.status_code == 401
    assert fake_d7.requests == []
    assert slack.of("chat.postMessage") == []
    assert slack.responses == {}


async def test_dry_run_says_nothing_was_sent(slack: FakeSlack, tmp_path: Path) -> None:
    async with running_app(slack, None, tmp_path) as app:
        await app.command("/sms", "+14155550100 hi")
        await app.settle()

    _, answer = slack.of("chat.postMessage")
    assert answer["text"].startswith(":test_tube: *Dry run — nothing was sent.*")
    assert "request_id `dry-run-" in answer["text"]


async def test_healthz_reports_version_mode_and_database(app: App) -> None:
    response = await app.http.get(f"{app.url}/healthz")

    body = response.json()
    body.pop("d7_balance")  # read in the background; tests/test_balance.py
    assert response.status_code == 200
    assert body == {
        "status": "ok",
        "version": "0.1.0",
        "mode": "http",
        "dry_run": False,
        "database": "ok",
        "database_writes": "ok",
        "last_write_error": None,
        "outbox_backlog": 0,
        "sends_stuck_sending": 0,
        "sends_in_flight": 0,
    }


async def test_healthz_is_503_when_the_database_is_unreachable(app: App) -> None:
    # The database stops answering after start.
    with database_down():
        response = await app.http.get(f"{app.url}/healthz")

    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
    assert response.json()["outbox_backlog"] is None


def _flip_last(signature: str) -> str:
    return signature[:-1] + ("1" if signature[-1] == "0" else "0")
