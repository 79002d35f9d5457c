"""Slack payloads at the edge: recorded payloads read into typed values, malformed ones refused without echoing
what people typed, and what the app answers to a malformed payload (end to end). Also the one description of a
text's size, in both places it is shown."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from bot.domain.models import Surface, Via
from bot.domain.policy import parse_policy
from bot.slack import compose
from bot.slack.alerts import KEPT_FIELDS, alert_request
from bot.slack.compose import ComposeContext, ComposeValues
from bot.slack.messages import SizeLine, text_size
from bot.slack.payloads import (
    BlockActions,
    GlobalShortcut,
    MessageEventCallback,
    MessageShortcut,
    SlashCommand,
    ViewSubmission,
)
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import POLICY, App, event_callback, running_app, sign

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "+14155550199 call me"  # stands for anything a person typed: it must never reach a log

ALERT_POLICY = {
    "version": 1,
    "senders": {"ops-sms": {"via": "sms", "originator": "OpsAlert"}},
    "contacts": {"oncall-db": ["+14155550100"]},
    "alerts": [
        {
            "name": "prod firing",
            "slack_channels": ["C0ALERTS"],
            "match": "FIRING",
            "sender": "ops-sms",
            "to": ["group:oncall-db"],
        }
    ],
}


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return data


# ------------------------------------------------------------ recorded payloads read into typed values


def test_slash_command_reads_the_form_slack_posts() -> None:
    form = dict(parse_qsl((PAYLOADS / "slash_command_sms.urlencoded").read_text()))

    command = SlashCommand.model_validate(form)

    assert (command.command, command.text) == ("/sms", "+14155550100 Disk full on db-1")
    assert (command.team_id, command.user_id, command.channel_id) == ("T0TEAM", "U0ALICE", "C0OPS")
    assert command.trigger_id == "1337.77.abcdef"


def test_global_shortcut_reads_who_and_the_trigger() -> None:
    shortcut = GlobalShortcut.model_validate(recorded("shortcut_send_text.json"))

    assert (shortcut.team.id, shortcut.user.id, shortcut.trigger_id) == ("T0TEAM", "U0ALICE", "1337.9.global")


def test_message_shortcut_keeps_the_message_as_slack_wrote_it_and_reads_its_thread() -> None:
    raw = recorded("message_action_text_this_message.json")

    shortcut = MessageShortcut.model_validate(raw)

    assert shortcut.message == raw["message"]  # flattened as is: nothing dropped
    assert (shortcut.team.id, shortcut.user.id, shortcut.channel.id) == ("T0TEAM", "U0ALICE", "C0OPS")
    assert shortcut.thread_ts == "1763799999.000050"
    assert shortcut.response_url == "https://hooks.slack.com/app/T0TEAM/1337/abcdef"


def test_a_message_outside_a_thread_starts_one() -> None:
    raw = recorded("message_action_text_this_message.json")
    del raw["message"]["thread_ts"]

    assert MessageShortcut.model_validate(raw).thread_ts == "1763800000.000200"


def test_view_submission_reads_the_modal_its_metadata_and_its_state() -> None:
    view = ViewSubmission.model_validate(recorded("view_submission_compose.json")).view

    assert (view.id, view.hash) == ("V00000001", "V00000001.1")
    assert ComposeContext.from_metadata(view.private_metadata) == ComposeContext(
        surface=Surface.COMMAND, team_id="T0TEAM", user_id="U0ALICE", channel_id="C0OPS"
    )
    assert compose.read_values(view.state.values) == ComposeValues(
        conversation=None,
        via=Via.SMS,
        sender="ops-sms",
        numbers=["+14155550100", "+14155550101"],
        people=["U0BOB"],
        contacts=["oncall-db"],
        text="db-1 disk full",
        when=1_800_000_000,
    )


def test_block_actions_read_the_modal_to_refresh() -> None:
    view = BlockActions.model_validate(recorded("block_actions_compose.json")).view

    assert (view.id, view.hash) == ("V00000001", "V00000001.2")
    assert ComposeContext.from_metadata(view.private_metadata).surface is Surface.SHORTCUT
    assert compose.read_values(view.state.values).text == "Café closed"


def test_message_event_keeps_the_fields_an_alert_stores_exactly_as_sent() -> None:
    raw = recorded("event_callback_message.json")

    callback = MessageEventCallback.model_validate(raw)

    assert (callback.team_id, callback.event_id) == ("T0TEAM", "Ev0000000001")
    event = callback.event
    assert (event.type, event.subtype, event.channel, event.ts) == (
        "message",
        "bot_message",
        "C0ALERTS",
        "1763800000.000100",
    )
    assert event.sent_fields(KEPT_FIELDS) == {k: raw["event"][k] for k in KEPT_FIELDS if k in raw["event"]}


def test_the_recorded_alert_event_becomes_the_alert_intent() -> None:
    raw = recorded("event_callback_message.json")
    callback = MessageEventCallback.model_validate(raw)

    found = alert_request(callback.event, callback.team_id, parse_policy(ALERT_POLICY), frozenset({"U0BOT"}))

    assert found is not None
    rule, request = found
    assert rule.name == "prod firing"
    assert request.idempotency_key == "alert:C0ALERTS:1763800000.000100"
    assert (request.origin.team_id, request.origin.user_id) == ("T0TEAM", "B0GRAFANA")
    assert request.origin.thread_ts == "1763800000.000100"
    assert request.alert is not None
    assert request.alert.message == {k: raw["event"][k] for k in KEPT_FIELDS if k in raw["event"]}
    assert request.text.startswith("[FIRING:1] HighCPU (db-1)\n")


def test_an_author_known_only_by_its_bot_profile_is_that_bot() -> None:
    raw = recorded("event_callback_message.json")
    del raw["event"]["bot_id"]
    callback = MessageEventCallback.model_validate(raw)

    assert alert_request(callback.event, "T0TEAM", parse_policy(ALERT_POLICY), frozenset({"B0GRAFANA"})) is None


# ------------------------------------------------------------ malformed payloads


def _without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(data))
    node = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


def _with(data: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(data))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (GlobalShortcut, _without(recorded("shortcut_send_text.json"), "user")),
        (GlobalShortcut, _with(recorded("shortcut_send_text.json"), SECRET.split()[0], "team")),
        (MessageShortcut, _without(recorded("message_action_text_this_message.json"), "message", "ts")),
        (MessageShortcut, _with(recorded("message_action_text_this_message.json"), SECRET, "message")),
        (ViewSubmission, _without(recorded("view_submission_compose.json"), "view", "id")),
        (ViewSubmission, _with(recorded("view_submission_compose.json"), {"note": SECRET}, "view", "private_metadata")),
        (BlockActions, _with(recorded("block_actions_compose.json"), SECRET, "view", "state")),
        (MessageEventCallback, _with(recorded("event_callback_message.json"), {"body": SECRET}, "event", "text")),
        (MessageEventCallback, _with(recorded("event_callback_message.json"), SECRET, "event", "attachments")),
        (MessageEventCallback, _without(recorded("event_callback_message.json"), "event")),
    ],
)
def test_a_malformed_payload_is_refused_and_its_errors_do_not_repeat_what_was_typed(
    model: type[BaseModel], payload: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(payload)

    logged = str(refused.value.errors(include_input=False))
    assert "4155550199" not in logged
    assert "call me" not in logged


# ------------------------------------------------------------ one description of a text's size


@pytest.mark.parametrize(
    ("text", "via", "recipients", "card", "preview"),
    [
        (
            "Disk full on db-1",
            Via.SMS,
            2,
            "GSM-7 · 1 segment · 17 characters · 2 recipients",
            "17 characters · GSM-7 · 1 segment · 2 recipients",
        ),
        (
            "a" * 161,
            Via.SMS,
            1,
            "GSM-7 · 2 segments · 161 characters · 1 recipient",
            "161 characters · GSM-7 · 2 segments · 1 recipient",
        ),
        (
            "deploy done 😀",
            Via.SMS,
            1,
            "Unicode (because of 😀) · 1 segment · 13 characters · 1 recipient",
            "13 characters · Unicode (because of 😀) · 1 segment · 1 recipient",
        ),
        ("hello", Via.WHATSAPP, 3, "5 characters · 3 recipients", "5 characters · WhatsApp · 3 recipients"),
        ("", Via.SMS, 0, "0 characters · 0 recipients", "Type a message to see its length and cost · 0 recipients"),
    ],
)
def test_one_function_describes_a_texts_size_on_the_card_and_in_the_preview(
    text: str, via: Via, recipients: int, card: str, preview: str
) -> None:
    assert text_size(text, via, recipients, SizeLine.CARD) == card
    assert text_size(text, via, recipients, SizeLine.PREVIEW) == preview


# ------------------------------------------------------------ what the app answers, end to end


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("C0OPS")
        fake.add_channel("C0ALERTS")
        fake.add_user("U0ALICE", "alice", "+1 415 555 0100")
        fake.state.usergroups["S0SUPPORT"] = []
        yield fake


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    policy = POLICY + (
        "alerts:\n"
        "  - {name: prod firing, slack_channels: [C0ALERTS], match: FIRING, sender: ops-sms, to: [group:oncall-db]}\n"
    )
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as running:
        yield running


async def interact(app: App, payload: dict[str, Any]) -> httpx.Response:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return await app.post(body, sign(body))


@pytest.mark.parametrize(
    "payload",
    [
        _without(recorded("shortcut_send_text.json"), "user"),
        _without(recorded("message_action_text_this_message.json"), "message", "ts"),
    ],
)
async def test_a_malformed_shortcut_is_told_in_a_modal_and_opens_no_form(
    app: App, slack: FakeSlack, fake_d7: FakeD7, payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    payload = _with(payload, SECRET, "message", "text") if "message" in payload else payload
    caplog.set_level(logging.WARNING, logger="bot.slack")

    response = await interact(app, payload)
    (opened,) = await slack.wait_for("views.open")
    await app.settle()

    assert response.status_code == 200
    assert opened["trigger_id"] == payload["trigger_id"]
    assert "submit" not in opened["view"]
    assert opened["view"]["blocks"] == [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "Not sent: Slack sent an incomplete request. Please try again."},
        }
    ]
    assert f"malformed {payload['callback_id']} shortcut payload" in caplog.text
    assert "4155550199" not in caplog.text
    assert fake_d7.requests == []


async def test_a_malformed_submission_keeps_the_form_open_with_an_error_and_sends_nothing(
    app: App, slack: FakeSlack, fake_d7: FakeD7, caplog: pytest.LogCaptureFixture
) -> None:
    payload = _with(recorded("view_submission_compose.json"), None, "view", "id")
    payload["view"]["state"]["values"]["message"]["message"]["value"] = SECRET
    caplog.set_level(logging.WARNING, logger="bot.slack")

    response = await interact(app, payload)
    await app.settle()

    assert response.json() == {
        "response_action": "errors",
        "errors": {"message": "This form is broken; close it and start again."},
    }
    assert "malformed ViewSubmission payload" in caplog.text
    assert "4155550199" not in caplog.text
    assert fake_d7.requests == []
    assert await app.relay.storage.sends.audit() == []


async def test_a_malformed_compose_action_updates_nothing(app: App, slack: FakeSlack) -> None:
    payload = _without(recorded("block_actions_compose.json"), "view", "id")

    response = await interact(app, payload)
    await app.settle()

    assert response.status_code == 200
    assert slack.of("views.update") == []


async def test_a_malformed_message_event_is_acknowledged_quietly_and_never_texted(
    app: App, fake_d7: FakeD7, caplog: pytest.LogCaptureFixture
) -> None:
    event = recorded("event_callback_message.json")["event"]
    caplog.set_level(logging.WARNING, logger="bot.slack.events")

    response = await app.event(event_callback({**event, "text": {"body": SECRET}}))
    await app.settle()

    assert response.status_code == 200
    assert "malformed message event" in caplog.text
    assert "4155550199" not in caplog.text
    assert fake_d7.requests == []
    assert await app.relay.storage.sends.audit() == []


async def test_the_recorded_alert_event_is_texted_end_to_end(app: App, fake_d7: FakeD7) -> None:
    response = await app.event(json.dumps(recorded("event_callback_message.json")).encode())
    await app.settle()

    assert response.status_code == 200
    (record,) = await app.relay.storage.sends.audit()
    assert record.request.idempotency_key == "alert:C0ALERTS:1763800000.000100"
    assert record.request.origin.team_id == TEAM_ID
    assert len(fake_d7.requests) == 1
