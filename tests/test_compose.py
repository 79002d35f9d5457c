"""The compose modal end to end: opening (bare command, shortcuts), live preview, validation, submit, scheduling.
Signed interaction payloads into the real app; the fake Slack Web API answers views.open / views.update."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.fakes.d7 import FakeD7
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import App, global_shortcut, running_app, sign

PAYLOADS = Path(__file__).parent / "payloads"
SMS = "/messages/v1/send"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        for channel in ("C0OPS", "C0SUPPORT", "C0ALERTS"):
            fake.add_channel(channel)
        fake.add_user("U0ALICE", "alice", "+1 415 555 0100", tz="America/Los_Angeles")
        fake.add_user("U0BOB", "bob", "+1 415 555 0101")
        fake.add_user("U0DAVE", "dave", "")
        fake.state.usergroups["S0SUPPORT"] = ["U0AGENT"]
        yield fake


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path) as running:
        yield running


async def interact(app: App, payload: dict[str, Any]) -> httpx.Response:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return await app.post(body, sign(body))


async def opened_view(app: App, slack: FakeSlack, count: int = 1) -> dict[str, Any]:
    """The latest views.open call, with the view as Slack keeps it (id, hash): the form itself, also when
    views.open showed "Loading…" and views.update replaced it once its look-ups answered."""
    await app.settle()
    call = (await slack.wait_for("views.open", count))[-1]
    return {**call, "view": list(slack.views.values())[-1]}


def state(
    *,
    message: str = "",
    numbers: str = "",
    people: list[str] | None = None,
    contacts: list[str] | None = None,
    via: str = "sms",
    sender: str | None = "ops-sms",
    when: int | None = None,
    conversation: str | None = None,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "via": {"via": {"type": "static_select", "selected_option": {"value": via}}},
        "numbers": {"numbers": {"type": "plain_text_input", "value": numbers or None}},
        "people": {"people": {"type": "multi_users_select", "selected_users": people or []}},
        "contacts": {
            "contacts": {"type": "multi_static_select", "selected_options": [{"value": c} for c in contacts or []]}
        },
        "message": {"message": {"type": "plain_text_input", "value": message or None}},
        "when": {"when": {"type": "datetimepicker", "selected_date_time": when}},
    }
    if sender:
        values[f"sender-{via}"] = {"sender": {"type": "static_select", "selected_option": {"value": sender}}}
    if conversation:
        values["conversation"] = {
            "conversation": {"type": "conversations_select", "selected_conversation": conversation}
        }
    return values


def submission(view: dict[str, Any], values: dict[str, Any], user: str = "U0ALICE") -> dict[str, Any]:
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID},
        "user": {"id": user},
        "api_app_id": "A0APP",
        "view": {**view, "state": {"values": values}},
    }


def block_action(view: dict[str, Any], values: dict[str, Any], action: str, hash_: str | None = None) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": TEAM_ID},
        "user": {"id": "U0ALICE"},
        "api_app_id": "A0APP",
        "trigger_id": "1337.5.x",
        "view": {**view, "hash": hash_ or view["hash"], "state": {"values": values}},
        "actions": [{"action_id": action, "block_id": action, "type": "plain_text_input"}],
    }


def block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)


def preview(view: dict[str, Any]) -> str:
    return str(block(view, "preview")["elements"][0]["text"])


async def test_bare_command_opens_the_modal_with_only_the_allowed_senders(app: App, slack: FakeSlack) -> None:
    response = await app.command("/sms", "", trigger_id="1337.77.open")
    opened = await opened_view(app, slack)

    assert response.status_code == 200
    assert response.text == ""
    assert opened["trigger_id"] == "1337.77.open"
    view = opened["view"]
    assert view["callback_id"] == "compose"
    sender = block(view, "sender-sms")["element"]
    assert [o["value"] for o in sender["options"]] == ["ops-sms"]
    assert [o["value"] for o in block(view, "via")["element"]["options"]] == ["sms"]
    assert [o["value"] for o in block(view, "contacts")["element"]["options"]] == ["oncall-db"]
    assert json.loads(view["private_metadata"])["channel_id"] == "C0OPS"
    assert slack.of("views.update") == []  # nothing to look up: the form itself opened, no "Loading…" first


async def test_a_form_that_needs_look_ups_opens_loading_then_becomes_the_form(app: App, slack: FakeSlack) -> None:
    await app.command("/whatsapp", "", user="U0AGENT", channel="C0SUPPORT", trigger_id="1337.78.open")
    await app.settle()

    (opened,) = slack.of("views.open")
    assert opened["trigger_id"] == "1337.78.open"
    assert "submit" not in opened["view"]
    assert [b["text"]["text"] for b in opened["view"]["blocks"]] == ["Loading…"]
    (update,) = slack.of("views.update")
    view_id = next(iter(slack.views))
    assert (update["view_id"], update["hash"]) == (view_id, f"{view_id}.1")  # as views.open answered
    assert update["view"]["submit"]["text"] == "Send"
    assert [o["value"] for o in block(update["view"], "sender-whatsapp")["element"]["options"]] == ["support-wa"]
    assert slack.of("usergroups.users.list") == [{"usergroup": "S0SUPPORT"}]


async def test_look_ups_that_fail_replace_loading_with_why(app: App, slack: FakeSlack) -> None:
    slack.fail("usergroups.users.list", 503)
    await app.command("/whatsapp", "", user="U0AGENT", channel="C0SUPPORT")
    await app.settle()

    (update,) = slack.of("views.update")
    assert "submit" not in update["view"]
    assert update["view"]["blocks"][0]["text"]["text"] == (
        ":warning: The form cannot be shown: Slack's usergroups.users.list failed (HTTP 503). Nothing was sent. "
        "Close this and try again in a minute."
    )


async def test_whatsapp_agent_is_offered_the_whatsapp_sender(app: App, slack: FakeSlack) -> None:
    await app.command("/whatsapp", "", user="U0AGENT", channel="C0SUPPORT")
    view = (await opened_view(app, slack))["view"]

    assert [o["value"] for o in block(view, "via")["element"]["options"]] == ["whatsapp"]
    assert [o["value"] for o in block(view, "sender-whatsapp")["element"]["options"]] == ["support-wa"]


async def test_nothing_allowed_says_why_instead_of_a_form(app: App, slack: FakeSlack) -> None:
    await app.command("/whatsapp", "", channel="C0ALERTS")
    view = (await opened_view(app, slack))["view"]

    assert "submit" not in view
    assert (
        view["blocks"][0]["text"]["text"]
        == ":no_entry: You cannot send texts here: <#C0ALERTS> is not allowed to send texts."
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("a" * 161, "161 characters · GSM-7 · 2 segments · 1 recipient"),
        ("deploy done 😀", "13 characters · Unicode (because of 😀) · 1 segment · 1 recipient"),
        ("", "Type a message to see its length and cost · 1 recipient"),
    ],
)
async def test_typing_updates_the_preview_with_the_view_hash(
    app: App, slack: FakeSlack, message: str, expected: str
) -> None:
    await app.command("/sms", "")
    view = (await opened_view(app, slack))["view"]

    response = await interact(app, block_action(view, state(message=message, numbers="+14155550100"), "message"))
    (update,) = await slack.wait_for("views.update")

    assert response.status_code == 200
    assert update["view_id"] == view["id"]
    assert update["hash"] == view["hash"]
    assert preview(update["view"]) == expected
    assert all(b.get("element", {}).get("initial_value") is None for b in update["view"]["blocks"])  # typed text kept


async def test_a_stale_update_never_overwrites_newer_input(app: App, slack: FakeSlack) -> None:
    await app.command("/sms", "")
    view = (await opened_view(app, slack))["view"]
    await interact(app, block_action(view, state(message="newer text"), "message"))
    await slack.wait_for("views.update")

    response = await interact(app, block_action(view, state(message="old"), "message"))  # the old hash
    await app.settle()

    assert response.status_code == 200
    assert preview(slack.views[view["id"]]) == "10 characters · GSM-7 · 1 segment · 0 recipients"


async def test_switching_via_offers_that_via_senders(app: App, slack: FakeSlack) -> None:
    await app.command("/sms", "", user="U0AGENT", channel="C0SUPPORT")
    view = (await opened_view(app, slack))["view"]
    loaded = len(slack.of("views.update"))  # the form replaced "Loading…" (S0SUPPORT was looked up)

    await interact(app, block_action(view, state(via="whatsapp", sender=None), "via"))
    update = (await slack.wait_for("views.update", loaded + 1))[-1]

    assert [o["value"] for o in block(update["view"], "sender-whatsapp")["element"]["options"]] == ["support-wa"]


@pytest.mark.parametrize(
    ("values", "errors"),
    [
        (
            state(message="hi", numbers="+1 555, 415-555-0100, nope"),
            {
                "numbers": "Not valid phone numbers: '+1 555' (too short), 'nope' (only digits, spaces, dashes, dots, brackets and a leading + are allowed)"
            },
        ),
        (
            state(message="hi", people=["U0DAVE", "U0BOB"]),
            {"people": "No usable phone: @dave has no phone number in their Slack profile"},
        ),
        (state(message="", numbers="+14155550100"), {"message": "Write a message."}),
        (
            state(message="x" * 460, numbers="+14155550100"),
            {"message": "This needs 4 SMS segments (GSM-7); the limit is 3. Shorten it."},
        ),
        (
            state(message="hi", numbers="+14155550100", when=1_600_000_000),
            {"when": "That time is in the past. Pick a later time, or leave it empty to send now."},
        ),
        (state(message="hi"), {"numbers": "Add at least one recipient: phone numbers, people or a contact group."}),
        (
            state(message="hi", numbers="+14155550100, +442079460000"),
            {"numbers": "+44 20 ••• 0000 is outside the numbers rule 'ops may page on-call' allows"},
        ),
        (
            state(message="hi", via="whatsapp", sender="support-wa", numbers="+14155550100"),
            {"sender-whatsapp": "this conversation is not allowed to send via WhatsApp"},
        ),
    ],
)
async def test_validation_errors_land_on_the_field_at_fault(
    app: App, slack: FakeSlack, fake_d7: FakeD7, values: dict[str, Any], errors: dict[str, str]
) -> None:
    await app.command("/sms", "")
    view = (await opened_view(app, slack))["view"]

    response = await interact(app, submission(view, values))
    await app.settle()

    assert response.status_code == 200
    assert response.json() == {"response_action": "errors", "errors": errors}
    assert fake_d7.requests == []
    assert await app.relay.storage.sends.audit() == []


async def test_submit_sends_like_the_command_and_twice_sends_once(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/sms", "")
    view = (await opened_view(app, slack))["view"]
    values = state(message="db-1 disk full", numbers="+14155550100", people=["U0BOB"], contacts=["oncall-db"])

    first = await interact(app, submission(view, values))
    second = await interact(app, submission(view, values))
    await app.settle()

    assert (first.status_code, first.text, second.status_code) == (200, "", 200)
    (body,) = fake_d7.bodies(SMS)
    assert body["messages"][0]["recipients"] == ["+14155550100", "+14155550101"]
    assert body["messages"][0]["content"] == "db-1 disk full"
    (record,) = await app.relay.storage.sends.audit()
    assert record.request.idempotency_key == f"view:{view['id']}"
    parent, result = slack.of("chat.postMessage")
    assert parent["channel"] == "C0OPS"
    assert result["thread_ts"] == slack.posted_ts(0)
    assert "Accepted by D7" in result["text"]


async def test_text_this_message_prefills_the_flattened_alert(app: App, slack: FakeSlack) -> None:
    alert = json.loads((PAYLOADS / "grafana_attachment.json").read_text())
    shortcut = {
        "type": "message_action",
        "callback_id": "text_this_message",
        "trigger_id": "1337.8.msg",
        "team": {"id": TEAM_ID},
        "user": {"id": "U0ALICE"},
        "channel": {"id": "C0OPS"},
        "message": alert,
        "response_url": slack.response_url("shortcut"),
        "api_app_id": "A0APP",
    }

    assert (await interact(app, shortcut)).status_code == 200
    opened = await opened_view(app, slack)

    assert opened["trigger_id"] == "1337.8.msg"
    assert block(opened["view"], "message")["element"]["initial_value"] == (
        "[FIRING:1] HighCPU (db-1)\n"
        "CPU at 97% on db-1 (https://grafana.example.com/d/abc) for 5m. cc @bob\n"
        "severity: critical\n"
        "env: prod"
    )
    context = json.loads(opened["view"]["private_metadata"])
    assert (context["channel_id"], context["thread_ts"]) == ("C0OPS", alert["ts"])


async def test_text_this_message_sends_into_the_alert_thread(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> None:
    policy = Path(__file__).parent.joinpath("harness.py").read_text().split('POLICY = """')[1].split('"""')[0]
    policy = policy.replace("[C0OPS, C0PRIVATE, C0NOTJOINED]", "[C0OPS, C0PRIVATE, C0NOTJOINED, C0ALERTS]")
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        for ts, thread_ts in (("1763800000.000100", None), ("1763800000.000200", "1763799999.000050")):
            alert = {
                "type": "message",
                "bot_id": "B0X",
                "text": "",
                "ts": ts,
                "attachments": [{"title": "HighCPU db-1"}],
            }
            if thread_ts:
                alert["thread_ts"] = thread_ts
            shortcut = {
                "type": "message_action",
                "callback_id": "text_this_message",
                "trigger_id": f"1337.{ts}",
                "team": {"id": TEAM_ID},
                "user": {"id": "U0ALICE"},
                "channel": {"id": "C0ALERTS"},
                "message": alert,
                "response_url": slack.response_url("shortcut"),
                "api_app_id": "A0APP",
            }
            opened_before = len(slack.of("views.open"))
            await interact(app, shortcut)
            view = (await opened_view(app, slack, opened_before + 1))["view"]
            assert block(view, "message")["element"]["initial_value"] == "HighCPU db-1"
            await interact(app, submission(view, state(message="HighCPU db-1", numbers="+14155550100")))
            await app.settle()
            announcement, result = slack.of("chat.postMessage")[-2:]
            assert announcement["channel"] == result["channel"] == "C0ALERTS"
            assert announcement["thread_ts"] == result["thread_ts"] == (thread_ts or ts)
            assert "Accepted by D7" in result["text"]
    assert len(fake_d7.sends) == 2


async def test_global_shortcut_asks_where_to_post(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    shortcut = global_shortcut("1337.9.global")
    await interact(app, shortcut)
    view = (await opened_view(app, slack))["view"]
    assert block(view, "conversation")["element"]["type"] == "conversations_select"

    missing = await interact(app, submission(view, state(message="hi", numbers="+14155550100")))
    assert missing.json()["errors"] == {"conversation": "Pick the conversation where the result is posted."}
    denied = await interact(
        app, submission(view, state(message="hi", numbers="+14155550100", conversation="C0SUPPORT"))
    )
    assert denied.json()["errors"] == {"conversation": "this conversation is not allowed to send via SMS"}
    ok = await interact(app, submission(view, state(message="hi", numbers="+14155550100", conversation="C0OPS")))
    await app.settle()

    assert ok.text == ""
    assert len(fake_d7.sends) == 1
    assert slack.of("chat.postMessage")[0]["channel"] == "C0OPS"


async def test_global_shortcut_answers_the_sender_through_the_picked_conversations_response_url(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.add_channel("C0PRIVATE", member=False, public=False)  # private, and the bot is not in it
    shortcut = global_shortcut("1337.9.private")
    await interact(app, shortcut)
    view = (await opened_view(app, slack))["view"]
    picker = block(view, "conversation")["element"]
    assert picker["response_url_enabled"] is True
    picked = slack.response_url("picked")

    payload = submission(view, state(message="hi", numbers="+14155550100", conversation="C0PRIVATE"))
    payload["response_urls"] = [
        {"block_id": "conversation", "action_id": "conversation", "channel_id": "C0PRIVATE", "response_url": picked}
    ]
    response = await interact(app, payload)
    await app.settle()

    assert response.text == ""
    (record,) = await app.relay.storage.sends.audit()
    assert (record.request.origin.channel_id, record.request.origin.response_url) == ("C0PRIVATE", picked)
    assert len(fake_d7.sends) == 1
    assert any("Accepted by D7" in str(post.get("text")) for post in slack.responses["picked"])


async def test_forms_that_knew_their_conversation_offer_no_picker(app: App, slack: FakeSlack) -> None:
    await app.command("/sms", "")
    view = (await opened_view(app, slack))["view"]

    assert all(b.get("block_id") != "conversation" for b in view["blocks"])


async def test_scheduled_send_uses_the_users_time_zone_and_says_when(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "")
    view = (await opened_view(app, slack))["view"]
    when = int(datetime(2027, 1, 15, 17, 30, tzinfo=UTC).timestamp())  # 09:30 in Los Angeles (UTC-8)

    await interact(app, submission(view, state(message="maintenance at 10:00", numbers="+14155550100", when=when)))
    await app.settle()

    (body,) = fake_d7.bodies(SMS)
    assert body["message_globals"] == {"originator": "OpsAlert", "schedule_time": "2027-01-15T09:30-08:00"}
    parent, _ = slack.of("chat.postMessage")
    assert f"scheduled for <!date^{when}^" in parent["blocks"][0]["text"]["text"]
