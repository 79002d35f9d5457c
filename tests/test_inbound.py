"""Texts phones send back, end to end: D7's inbound callbacks posted to ``/d7/inbound/<secret>`` as form data and as
JSON, the real app, fake Slack (signed requests) and fake D7. Each test asserts on what D7 received (the bot's own
texts) and on what Slack was asked to post.

STOP opts a phone out everywhere (commands, forms, workflow steps, group sends, alerts) with one confirmation;
START opts it back in; HELP is answered; an ack word acknowledges the latest alert like a ✅ reaction; anything else
is posted, inert, in the thread of the send that texted the phone, with a Reply… button.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from bot.domain.clock import utc_now
from bot.domain.inbound import Outcome
from bot.storage.schema import inbound, sends
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import App, event_callback, running_app
from tests.test_compose import block, interact, opened_view, submission
from tests.test_compose import state as form_state
from tests.test_steps import completions, step_event

SMS = "/messages/v1/send"
WHATSAPP = "/whatsapp/v2/send"
SECRET = "inbound-and-report-secret-0123456789"
INBOUND = f"/d7/inbound/{SECRET}"
STOPPED = "You will get no more texts from us. Reply START to opt back in."
HELP = "Ops alerts from Acme. Reply STOP to opt out."

POLICY = """
version: 1
defaults: {region: US, max_segments: 3, show_numbers: masked, admin_channel: C0ADMIN}
admins: [U0ADMIN]
senders:
  ops-sms:    {via: sms, originator: OpsAlert}
  support-wa: {via: whatsapp, originator: "+971501234567"}
contacts:
  oncall-db: ["+14155550100", "+14155550101"]
rules:
  - name: ops may page on-call
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+1*", "group:oncall-db"]
    max_recipients: 5
    surfaces: [commands, forms, workflows]
  - name: support on WhatsApp
    slack_channels: [C0SUPPORT]
    users: ["*"]
    senders: [support-wa]
    recipients: ["*"]
alerts:
  - name: prod critical
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: bots
    sender: ops-sms
    to: ["group:oncall-db"]
  - name: people on call
    slack_channels: [C0PAGE]
    match: "(?i)critical"
    from: bots
    sender: ops-sms
    to: [S0ONCALL]
    escalate: [{after: 5m, to: ["+14155550199"]}]
inbound:
  help_text: "Ops alerts from Acme. Reply STOP to opt out."
  channel: C0INBOX
"""


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_user("U0ALICE", "alice", "+1 415 555 0150")
    slack.add_user("U0BOB", "bob", "+1 415 555 0101")
    slack.add_user("U0ADMIN", "admin", "+1 415 555 0160")
    for channel in ("C0ALERTS", "C0PAGE", "C0INBOX", "C0ADMIN", "C0SUPPORT"):
        slack.add_channel(channel)
    slack.state.usergroups["S0ONCALL"] = ["U0BOB"]
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY, D7_REPORT_SECRET=SECRET) as running:
        yield running


async def text_back(app: App, fields: dict[str, Any], *, as_json: bool = False, path: str = INBOUND) -> httpx.Response:
    """D7 posting what a phone sent: form data (as SMS callbacks come) or JSON."""
    if as_json:
        content, kind = json.dumps(fields).encode(), "application/json"
    else:
        content, kind = urlencode(fields).encode(), "application/x-www-form-urlencoded"
    response = await app.http.post(app.url + path, content=content, headers={"Content-Type": kind})
    await app.settle()
    return response


def sms(fields: str, text: str, msg_id: str) -> dict[str, str]:
    return {"from": fields, "to": "OpsAlert", "text": text, "message_id": msg_id}


def sent(fake_d7: FakeD7) -> list[tuple[str, list[str], str]]:
    """(content, recipients, originator) of every SMS D7 received, in order."""
    out = []
    for body in fake_d7.bodies(SMS):
        (message,) = body["messages"]
        out.append((message["content"], message["recipients"], body["message_globals"]["originator"]))
    return out


def posts(slack: FakeSlack, channel: str, thread_ts: str | None = None) -> list[str]:
    return [
        p["text"] for p in slack.of("chat.postMessage") if p["channel"] == channel and p.get("thread_ts") == thread_ts
    ]


async def send_sms(app: App, text: str, user: str = "U0ALICE") -> str:
    """/sms in #ops; the ts of its parent message (its thread)."""
    assert (await app.command("/sms", text, user=user)).status_code == 200
    await app.settle()
    latest = (await app.relay.storage.sends.audit())[-1]
    assert latest.state.value == "accepted", latest.problems
    assert latest.thread_ts is not None
    return latest.thread_ts


async def kept(app: App) -> list[dict[str, Any]]:
    async with app.relay.storage.database.connect() as conn:
        rows = (await conn.execute(sa.select(inbound).order_by(inbound.c.received_at))).all()
    return [dict(r._mapping) for r in rows]


# ---------------------------------------------------------------- the endpoint


async def test_a_wrong_secret_is_404_before_the_body_is_read(app: App) -> None:
    huge = b"x" * (2 * 1024 * 1024)  # past the body cap: reading it would answer 413

    wrong = await app.http.post(app.url + "/d7/inbound/not-the-secret-0123456789", content=huge)
    right = await app.http.post(app.url + INBOUND, content=huge)

    assert (wrong.status_code, wrong.text) == (404, "not found")
    assert right.status_code == 413
    assert await kept(app) == []


async def test_an_inbound_body_past_64_kib_is_refused_whether_or_not_it_says_its_length(app: App) -> None:
    body = urlencode(sms("14155550177", "x" * (65 * 1024), "mo-big")).encode()

    said = await app.http.post(app.url + INBOUND, content=body)

    async def unsaid() -> Any:  # chunked: no Content-Length, the cap is found while reading
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    streamed = await app.http.post(app.url + INBOUND, content=unsaid())
    fits = await app.http.post(app.url + INBOUND, content=urlencode(sms("14155550177", "x" * 1000, "mo-ok")).encode())

    assert (said.status_code, streamed.status_code, fits.status_code) == (413, 413, 200)
    assert [r["raw"] for r in await kept(app)] == [urlencode(sms("14155550177", "x" * 1000, "mo-ok")).encode()]


async def test_every_message_is_kept_and_the_same_body_again_is_a_duplicate(app: App, fake_d7: FakeD7) -> None:
    body = sms("14155550177", "hello there", "mo-1")

    first = await text_back(app, body)
    again = await text_back(app, body)

    assert (first.status_code, again.status_code) == (200, 200)
    rows = await kept(app)
    assert [(r["outcome"], r["phone"], r["text"]) for r in rows] == [
        (Outcome.INBOX.value, "+14155550177", "hello there"),
        (Outcome.DUPLICATE.value, None, None),
    ]
    assert rows[0]["raw"] == rows[1]["raw"] == urlencode(body).encode()
    assert fake_d7.bodies(SMS) == []


# ---------------------------------------------------------------- STOP, START, HELP


async def test_stop_opts_out_with_one_confirmation_and_every_surface_leaves_the_number_out(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    thread = await send_sms(app, "+14155550100 db-1 is down")

    assert (await text_back(app, sms("14155550100", " Stop ", "mo-1"))).status_code == 200
    await text_back(app, sms("+14155550100", "UNSUBSCRIBE", "mo-2"))  # again: no second confirmation

    assert sent(fake_d7)[1:] == [(STOPPED, ["+14155550100"], "OpsAlert")]
    announced, result, again = posts(slack, "C0OPS", thread)[1:]
    assert announced.startswith("An SMS from <@U0BOT> to 1 recipient(s): You will get no more texts")
    assert result.startswith(":white_check_mark: *Accepted by D7*")
    assert again == (
        ":no_bell: +1 415 ••• 0100 texted *UNSUBSCRIBE* again: it had opted out already (and had its one confirmation)."
    )
    parent = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == thread][1]
    assert parent["blocks"][0]["text"]["text"] == (
        ":no_bell: +1 415 ••• 0100 texted *STOP*: it has opted out of texts. The bot confirms, as *OpsAlert* "
        "(`ops-sms`):"
    )

    # A command naming the number is refused, naming it.
    await app.command("/sms", "+14155550100 are you there?")
    await app.settle()
    refusal = slack.responses["cmd"][-1]["text"]
    assert "+1 415 ••• 0100 has opted out of texts (it texted STOP)" in refusal
    # A group send leaves it out, and says so.
    await send_sms(app, "group:oncall-db failover at 10")
    assert sent(fake_d7)[-1] == ("failover at 10", ["+14155550101"], "OpsAlert")
    (parent,) = [p for p in slack.of("chat.postMessage") if p["text"].endswith("recipient(s): failover at 10")]
    left_out = [b["text"]["text"] for b in parent["blocks"] if b["type"] == "section"][-1]
    assert left_out == (
        ":no_bell: *Left out:* +1 415 ••• 0100 (in group:oncall-db) has opted out of texts (it texted STOP): it "
        "gets none until it texts START, or an admin runs `/sms optin`"
    )
    # An alert leaves it out, and its thread says so.
    alert = {"type": "message", "subtype": "bot_message", "bot_id": "B0MON", "text": "CRITICAL: db-1", "ts": "17.1"}
    await app.event(event_callback(alert, channel="C0ALERTS"))
    await app.settle()
    assert sent(fake_d7)[-1] == ("CRITICAL: db-1", ["+14155550101"], "OpsAlert")
    (told,) = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == "17.1"]
    assert "opted out" in json.dumps(told["blocks"], ensure_ascii=False)
    assert len(fake_d7.bodies(SMS)) == 4  # db-1 is down, STOP's confirmation, failover, the alert


async def test_a_form_and_a_workflow_step_naming_an_opted_out_number_are_refused(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await text_back(app, {"sender": "+1 415 555 0100", "message": "stop"}, as_json=True)
    assert sent(fake_d7) == [(STOPPED, ["+14155550100"], "OpsAlert")]

    await app.command("/sms", "")
    view = (await opened_view(app, slack))["view"]
    refused = await interact(app, submission(view, form_state(message="hi", numbers="+14155550100")))
    assert refused.status_code == 200
    errors = refused.json()["errors"]
    assert "opted out" in errors["numbers"]

    slack.run_step("Fx0001")
    await app.event(step_event("Fx0001", numbers="+1 415 555 0100", message="disk full"))
    await app.settle()
    ((kind, completed),) = completions(slack)
    assert kind == "error"
    assert "opted out" in completed["error"]
    assert len(fake_d7.bodies(SMS)) == 1


async def test_start_opts_back_in_with_a_confirmation(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await text_back(app, {"msisdn": "14155550100", "content": {"type": "text", "text": "STOP"}}, as_json=True)
    await text_back(app, {"msisdn": "14155550100", "content": "help"}, as_json=True)  # opted out: not answered
    await text_back(app, {"originator": "14155550100", "body": "start", "id": "2"}, as_json=True)
    await send_sms(app, "+14155550100 welcome back")

    assert [c for c, _, _ in sent(fake_d7)] == [
        STOPPED,
        "You will get texts from us again. Reply STOP to opt out.",
        "welcome back",
    ]
    assert await app.relay.storage.optouts.listing(10) == []
    # With no recent send to the phone, the bot's answers are told in inbound.channel.
    stopped, helped, started = posts(slack, "C0INBOX")
    assert stopped.startswith("An SMS from <@U0BOT> to 1 recipient(s): You will get no more texts")
    assert helped == ":no_bell: +1 415 ••• 0100 texted *HELP*: it has opted out of texts, so it was not answered."
    assert started.startswith("An SMS from <@U0BOT> to 1 recipient(s): You will get texts from us again")


async def test_help_is_answered_by_the_sender_that_last_texted_the_phone(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await text_back(app, sms("14155550177", "help", "mo-1"))  # never texted: the first SMS sender
    await app.command("/whatsapp", "+14155550177 your ticket is solved", channel="C0SUPPORT")
    await app.settle()
    await text_back(app, sms("14155550177", "INFO", "mo-2"))

    assert sent(fake_d7) == [(HELP, ["+14155550177"], "OpsAlert")]
    whatsapp = fake_d7.bodies(WHATSAPP)
    assert [m["content"]["text"]["body"] for b in whatsapp for m in b["messages"]] == [
        "your ticket is solved",
        HELP,
    ]
    assert whatsapp[-1]["messages"][0]["originator"] == "+971501234567"
    assert whatsapp[-1]["messages"][0]["recipients"][0]["recipient"] == "+14155550177"


async def test_the_bots_answer_survives_a_restart_and_goes_once(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    fake_d7.enqueue(*[503] * 40)  # D7 down: the confirmation waits in the outbox
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY, D7_REPORT_SECRET=SECRET) as app:
        await text_back(app, sms("14155550100", "STOP", "mo-1"))
        (answer,) = await app.relay.storage.sends.audit()
        assert answer.state.value == "pending"
    fake_d7._script.clear()  # D7 is back
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY, D7_REPORT_SECRET=SECRET) as app:
        async with app.relay.storage.database.begin() as conn:
            await conn.execute(sends.update().values(next_attempt_at=utc_now()))
        app.relay.outbox.wakeup.set()
        await app.settle()
        (answer,) = await app.relay.storage.sends.audit()
        rows = await kept(app)

    assert answer.state.value == "accepted"
    assert [s.recipients for s in fake_d7.sends.values()] == [["+14155550100"]]  # accepted once
    assert [(r["outcome"], r["next_attempt_at"]) for r in rows] == [(Outcome.OPTED_OUT.value, None)]


# ---------------------------------------------------------------- acknowledging by text


async def test_an_ack_word_acknowledges_the_latest_alert_and_stops_its_escalation(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    alert = {"type": "message", "subtype": "bot_message", "bot_id": "B0MON", "text": "CRITICAL: db-2", "ts": "17.2"}
    await app.event(event_callback(alert, channel="C0PAGE"))
    await app.settle()
    (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]

    await text_back(app, sms("14155550101", "ack", "mo-1"))
    async with app.relay.storage.database.begin() as conn:
        key = f"escalate:{fired.id}:0"
        await conn.execute(sends.update().where(sends.c.idempotency_key == key).values(next_attempt_at=utc_now()))
    app.relay.outbox.wakeup.set()
    await app.settle()

    assert [r for _, r, _ in sent(fake_d7)] == [["+14155550101"]]  # nobody escalated to
    thread = posts(slack, "C0PAGE", "17.2")
    assert (
        ":white_check_mark: *Acknowledged* from +1 415 ••• 0101 (bob's phone): no more texts for this alert until it "
        "is resolved."
    ) in thread
    assert ":white_check_mark: *Escalation step 1 not sent:* +1 415 ••• 0101 (bob's phone) acknowledged the alert." in (
        thread
    )
    (acked,) = [r for r in await app.relay.storage.sends.audit() if r.id == fired.id]
    assert acked.acked_by == "+14155550101"


async def test_an_ack_word_with_no_alert_to_acknowledge_is_a_reply(app: App, slack: FakeSlack) -> None:
    await text_back(app, sms("14155550177", "ACK", "mo-1"))

    assert posts(slack, "C0INBOX") == ["+1 415 ••• 0177 replied: ACK"]


# ---------------------------------------------------------------- replies


async def test_a_reply_lands_in_the_sends_thread_inert_with_a_reply_button(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    thread = await send_sms(app, "+14155550100 are you on site?")

    await text_back(app, sms("14155550100", "yes <!channel> ask <@U0BOB> *now* https://x.example/a", "mo-1"))

    (reply,) = [p for p in slack.of("chat.postMessage") if "replied" in p["text"]]
    (row,) = await kept(app)
    assert reply == {
        "channel": "C0OPS",
        "thread_ts": thread,
        "text": "+1 415 ••• 0100 replied: yes &lt;!channel&gt; ask &lt;@U0BOB&gt; *now* https://x.example/a",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": ":speech_balloon: *+1 415 ••• 0100 replied:*"}},
            {
                "type": "rich_text",
                "elements": [
                    {
                        "type": "rich_text_quote",
                        "elements": [{"type": "text", "text": "yes <!channel> ask <@U0BOB> *now* https://x.example/a"}],
                    }
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "inbound_reply",
                        "text": {"type": "plain_text", "text": "Reply…"},
                        "value": row["id"],
                    }
                ],
            },
        ],
        "unfurl_links": False,
        "unfurl_media": False,
    }
    assert row["send_id"] == (await app.relay.storage.sends.audit())[0].id
    assert len(fake_d7.bodies(SMS)) == 1  # a reply is not answered

    click = {
        "type": "block_actions",
        "team": {"id": TEAM_ID},
        "user": {"id": "U0ALICE"},
        "api_app_id": "A0APP",
        "trigger_id": "1337.21.reply",
        "channel": {"id": "C0OPS"},
        "message": {"ts": "1700000099.000100", "thread_ts": thread},
        "container": {"type": "message", "channel_id": "C0OPS", "message_ts": "1700000099.000100"},
        "actions": [{"action_id": "inbound_reply", "block_id": "b", "type": "button", "value": row["id"]}],
    }
    # Anyone in the channel may click; the number is filled in for the sender (who typed it) and admins.
    await interact(app, click | {"user": {"id": "U0BOB"}, "trigger_id": "1337.21.bob"})
    bobs = (await opened_view(app, slack))["view"]
    assert "initial_value" not in block(bobs, "numbers")["element"]
    await interact(app, click)
    form = (await opened_view(app, slack, 2))["view"]
    assert block(form, "numbers")["element"]["initial_value"] == "+14155550100"
    assert (json.loads(form["private_metadata"])["channel_id"], json.loads(form["private_metadata"])["thread_ts"]) == (
        "C0OPS",
        thread,
    )
    answered = await interact(app, submission(form, form_state(message="on my way", numbers="+14155550100")))
    assert answered.status_code == 200
    await app.settle()
    assert sent(fake_d7)[-1] == ("on my way", ["+14155550100"], "OpsAlert")

    # The send's App Home entry shows the reply.
    event = {"type": "app_home_opened", "user": "U0ALICE", "tab": "home", "ts": "1700000000.000001"}
    await app.event(event_callback(event, channel="D0HOME"))
    await slack.wait_for("views.publish")
    await app.settle()
    home = json.dumps(slack.homes["U0ALICE"], ensure_ascii=False)
    assert "+1 415 ••• 0100 replied: yes &lt;!channel&gt; ask &lt;@U0BOB&gt;" in home


async def test_a_reply_from_a_phone_not_texted_recently_goes_to_the_inbound_channel(app: App, slack: FakeSlack) -> None:
    await send_sms(app, "+14155550100 old news")
    async with app.relay.storage.database.begin() as conn:  # sent eight days ago
        eight_days_ago = utc_now() - timedelta(days=8)
        await conn.execute(sends.update().values(created_at=eight_days_ago, finished_at=eight_days_ago))

    await text_back(app, sms("14155550100", "who is this?", "mo-1"))

    assert posts(slack, "C0INBOX") == ["+1 415 ••• 0100 replied: who is this?"]


async def test_a_reply_slack_did_not_take_is_posted_once_slack_is_back(app: App, slack: FakeSlack) -> None:
    thread = await send_sms(app, "+14155550100 are you on site?")
    slack.fail("chat.postMessage", 503)

    await text_back(app, sms("14155550100", "on my way", "mo-1"))
    (waiting,) = await kept(app)
    slack.recover()
    async with app.relay.storage.database.begin() as conn:  # as if its retry were due now
        await conn.execute(inbound.update().values(next_attempt_at=utc_now()))
    app.relay.inbox.wake()  # type: ignore[union-attr]
    await app.settle()

    assert (waiting["outcome"], waiting["attempts"], waiting["note_ts"]) == (Outcome.REPLIED.value, 1, None)
    assert posts(slack, "C0OPS", thread)[-1] == "+1 415 ••• 0100 replied: on my way"
    assert len([p for p in slack.of("chat.postMessage") if "replied" in p["text"]]) == 1
    (done,) = await kept(app)
    assert (done["attempts"], done["next_attempt_at"], done["note_ts"] is not None) == (1, None, True)


# ---------------------------------------------------------------- what it cannot read


async def test_an_unreadable_body_is_kept_answered_200_and_its_keys_told_to_the_admins_once(
    app: App, slack: FakeSlack, fake_d7: FakeD7, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"num": "14155550100", "payload": {"words": "my secret words"}}

    first = await text_back(app, body, as_json=True)
    second = await text_back(app, {"num": "14155550101", "payload": {"words": "more"}}, as_json=True)

    assert (first.status_code, second.status_code) == (200, 200)
    (told,) = posts(slack, "C0ADMIN")
    assert "`num`, `payload`, `payload.words`" in told
    assert "inbound.fields" in told
    assert "secret words" not in told
    assert "secret words" not in caplog.text
    assert [r["outcome"] for r in await kept(app)] == [Outcome.UNREADABLE.value] * 2
    assert fake_d7.bodies(SMS) == []


async def test_inbound_fields_name_where_the_phone_and_the_text_are(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    policy = POLICY.replace("  channel: C0INBOX\n", "  channel: C0INBOX\n  fields: {from: num, text: payload.words}\n")
    async with running_app(slack, fake_d7, tmp_path, policy=policy, D7_REPORT_SECRET=SECRET) as app:
        await text_back(app, {"num": "14155550100", "payload": {"words": "hello"}}, as_json=True)

    assert posts(slack, "C0INBOX") == ["+1 415 ••• 0100 replied: hello"]


# ---------------------------------------------------------------- the admins' list


async def test_optout_and_optin_are_for_admins_and_listed_on_their_app_home(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "optout +1 415 555 0100", user="U0BOB")
    await app.settle()
    assert slack.posts_to(slack.response_urls("cmd")[-1])[-1]["text"] == (
        ":no_entry: Only the policy's admins may use `/sms optout`; nothing changed."
    )
    assert await app.relay.storage.optouts.listing(10) == []

    await app.command("/sms", "optout +1 415 555 0100", user="U0ADMIN")
    await app.settle()
    assert slack.posts_to(slack.response_urls("cmd")[-1])[-1]["text"].startswith(
        ":no_bell: +1 415 ••• 0100 is opted out"
    )
    event = {"type": "app_home_opened", "user": "U0ADMIN", "tab": "home", "ts": "1700000000.000001"}
    await app.event(event_callback(event, channel="D0HOME"))
    await slack.wait_for("views.publish")
    await app.settle()
    home = json.dumps(slack.homes["U0ADMIN"], ensure_ascii=False)
    assert "+1 415 ••• 0100 · <!date^" in home
    assert "by <@U0ADMIN>" in home

    await app.command("/sms", "+14155550100 hi", user="U0ALICE")
    await app.settle()
    assert fake_d7.bodies(SMS) == []  # refused: opted out
    await app.command("/sms", "optin +14155550100", user="U0ADMIN")
    await app.settle()
    await send_sms(app, "+14155550100 hi again")
    assert sent(fake_d7) == [("hi again", ["+14155550100"], "OpsAlert")]


async def test_resolved_and_a_summary_leave_out_a_phone_that_wrote_stop_after_the_alert(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    policy = POLICY.replace(
        '    to: ["group:oncall-db"]\n', '    to: ["group:oncall-db"]\n    resolve: "(?i)resolved"\n', 1
    ).replace("    to: [S0ONCALL]\n", "    to: [S0ONCALL]\n    max_per_phone: {count: 1, per: 1h}\n", 1)
    assert policy.count("resolve:") == 1
    assert "max_per_phone" in policy
    async with running_app(slack, fake_d7, tmp_path, policy=policy, D7_REPORT_SECRET=SECRET) as app:

        async def alert(ts: str, text: str, channel: str, thread: str | None = None) -> None:
            message = {"type": "message", "bot_id": "B0MON", "ts": ts, "text": text}
            if thread:
                message["thread_ts"] = thread
            assert (await app.event(event_callback(message, channel=channel))).status_code == 200
            await app.settle()

        await alert("1765200000.000100", "CRITICAL: db-1 down", "C0ALERTS")
        await alert("1765200001.000100", "CRITICAL: queue stuck", "C0PAGE")  # bob's one text this hour
        await alert("1765200002.000100", "CRITICAL: queue still stuck", "C0PAGE")  # held for bob's summary
        await text_back(app, sms("+14155550101", "STOP", "in-1"))
        await alert("1765200100.000100", "Resolved", "C0ALERTS", thread="1765200000.000100")
        async with app.relay.storage.database.begin() as conn:  # the hour is over: the summary is due
            await conn.execute(sends.update().where(sends.c.surface == "summary").values(next_attempt_at=utc_now()))
        app.relay.outbox.wakeup.set()
        await app.settle()

    texts = sent(fake_d7)
    assert texts[-1] == ("RESOLVED: db-1 down", ["+14155550100"], "OpsAlert")  # not the phone that left
    assert not any(t.startswith("+1 more") for t, _, _ in texts)  # nor bob's summary
    card = [c for c in slack.of("chat.postMessage") if c.get("thread_ts") == "1765200000.000100"][-1]
    assert card["text"].startswith(":white_check_mark: *RESOLVED texted* to +1 415 ••• 0100 ")
    assert "opted out" in json.dumps(card["blocks"])
    summary = [c["text"] for c in slack.of("chat.postMessage") if c.get("thread_ts") == "1765200002.000100"][-1]
    assert "opted out" in summary


async def test_ack_acknowledges_the_alert_whose_text_came_last_also_an_escalation_recorded_before(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    # Alert A escalates to +1 415 555 0100 after 5 minutes (the step is recorded when A comes in); alert B texts that
    # phone directly in between. When A's step goes out, the phone's ACK is about A, the last text it got.
    policy = POLICY.replace(
        'escalate: [{after: 5m, to: ["+14155550199"]}]', 'escalate: [{after: 5m, to: ["+14155550100"]}]'
    )
    assert policy != POLICY
    async with running_app(slack, fake_d7, tmp_path, policy=policy, D7_REPORT_SECRET=SECRET) as app:
        for ts, channel in (("1765300000.000100", "C0PAGE"), ("1765300001.000100", "C0ALERTS")):
            message = {"type": "message", "bot_id": "B0MON", "ts": ts, "text": f"CRITICAL: {channel} down"}
            assert (await app.event(event_callback(message, channel=channel))).status_code == 200
            await app.settle()
        async with app.relay.storage.database.begin() as conn:  # A's five minutes are over
            await conn.execute(sends.update().where(sends.c.surface == "escalation").values(next_attempt_at=utc_now()))
        app.relay.outbox.wakeup.set()
        await app.settle()
        escalated, to, _ = sent(fake_d7)[-1]
        assert escalated.startswith("ESCALATED")
        assert to == ["+14155550100"]

        await text_back(app, sms("14155550100", "ACK", "mo-ack"))
        records = {r.request.idempotency_key: r for r in await app.relay.storage.sends.audit()}

    assert records["alert:C0PAGE:1765300000.000100"].acked_by == "+14155550100"
    assert records["alert:C0ALERTS:1765300001.000100"].acked_by is None
