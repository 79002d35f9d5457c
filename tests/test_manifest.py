"""manifest.yml and the registered listeners list exactly the same commands, shortcuts and events, and each of
them is really answered by the app (a signed request for each gets a 200, not Bolt's 404)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from bot.app import open_relay
from bot.slack.listeners import COMMANDS, EVENTS, SHORTCUTS
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import POLICY, issue_triggers, settings_for, sign, slash_command

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = yaml.safe_load((ROOT / "manifest.yml").read_text())


def manifest_events() -> set[str]:
    return {event.split(".")[0] for event in MANIFEST["settings"]["event_subscriptions"]["bot_events"]}


def test_commands_match() -> None:
    assert {c["command"] for c in MANIFEST["features"]["slash_commands"]} == set(COMMANDS)


def test_shortcuts_match() -> None:
    assert {s["callback_id"] for s in MANIFEST["features"]["shortcuts"]} == set(SHORTCUTS)


def test_events_match() -> None:
    assert manifest_events() == set(EVENTS)


def test_commands_escape_user_input_so_mentions_arrive_as_ids() -> None:
    assert all(c["should_escape"] is True for c in MANIFEST["features"]["slash_commands"])
    assert all(c["usage_hint"] for c in MANIFEST["features"]["slash_commands"])


def test_every_scope_says_why() -> None:
    text = (ROOT / "manifest.yml").read_text()
    scopes = MANIFEST["oauth_config"]["scopes"]["bot"]
    for scope in scopes:
        assert re.search(rf"^\s+- {re.escape(scope)}\s+# \S", text, re.MULTILINE), f"{scope} has no comment"
    assert "chat:write.public" not in scopes  # the bot joins instead, so it never posts where it is not


@pytest.fixture
async def asgi(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    with FakeSlack() as slack:
        slack.add_channel("C0OPS")
        policy = tmp_path / "policy.yml"
        policy.write_text(POLICY)

        async def issue(request: httpx.Request) -> None:  # the triggers Slack issues with what it sends
            issue_triggers(slack, request.content)

        async with (
            open_relay(settings_for(slack, None, policy, tmp_path)) as relay,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=relay.web), base_url="http://bot", event_hooks={"request": [issue]}
            ) as http,
        ):
            yield http


async def post(http: httpx.AsyncClient, body: bytes, content_type: str) -> httpx.Response:
    return await http.post("/slack/events", content=body, headers={"Content-Type": content_type, **sign(body)})


def shortcut_body(shortcut: dict[str, Any]) -> bytes:
    payload: dict[str, Any] = {
        "type": "shortcut" if shortcut["type"] == "global" else "message_action",
        "callback_id": shortcut["callback_id"],
        "trigger_id": f"1337.1.{shortcut['callback_id']}",  # one per interaction, as Slack issues them
        "team": {"id": TEAM_ID},
        "user": {"id": "U0ALICE"},
        "token": "x",
        "api_app_id": "A0APP",
    }
    if shortcut["type"] == "message":
        payload |= {
            "channel": {"id": "C0OPS"},
            "message": {"type": "message", "ts": "1.2", "text": "alert"},
            "response_url": "http://127.0.0.1:9/response",
        }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def test_every_manifest_entry_reaches_a_listener(asgi: httpx.AsyncClient) -> None:
    form = "application/x-www-form-urlencoded"
    for command in MANIFEST["features"]["slash_commands"]:
        response = await post(asgi, slash_command(command["command"], "help"), form)
        assert response.status_code == 200, command
    for shortcut in MANIFEST["features"]["shortcuts"]:
        response = await post(asgi, shortcut_body(shortcut), form)
        assert response.status_code == 200, shortcut
    for event in MANIFEST["settings"]["event_subscriptions"]["bot_events"]:
        body = {
            "type": "event_callback",
            "team_id": TEAM_ID,
            "api_app_id": "A0APP",
            "event_id": f"Ev{abs(hash(event))}",
            "event_time": 1,
            "event": {"type": "message", "channel": "C0OPS", "user": "U0ALICE", "text": "hi", "ts": "1.2"},
        }
        response = await post(asgi, json.dumps(body).encode(), "application/json")
        assert response.status_code == 200, event
    unknown = await post(asgi, slash_command("/fax", "x"), form)
    assert unknown.status_code == 404  # proof that a missing listener would be seen
