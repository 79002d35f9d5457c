"""The compose form within Slack's 3-second windows, with every Slack call taking 200 ms: the trigger is used
before it expires, look-ups run side by side, and a submission is answered within its budget whatever Slack does.

Concurrency is asserted on the fake's calls still waiting for their answer, sampled as they happen, not on wall
time alone."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.sending.admission import LOOKUPS_AT_ONCE
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import POLICY, App, running_app
from tests.test_compose import block, interact, preview, state, submission

SLACK_LATENCY = 0.2
PEOPLE = [f"U0P{i:02d}" for i in range(1, 41)]
# The test policy, with room for 20 recipients, and a rule in #ops that only a user group's members have: a form
# opened there looks the group up.
WINDOWS_POLICY = POLICY.replace("max_recipients: 5", "max_recipients: 25") + (
    """
  - name: leads on WhatsApp
    slack_channels: [C0OPS]
    users: [S0LEADS]
    senders: [support-wa]
    recipients: ["*"]
"""
)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("C0OPS")
        fake.add_user("U0ALICE", "alice", "+1 415 555 0100", tz="America/Los_Angeles")
        fake.add_user("U0DAVE", "dave", "")
        for n, user_id in enumerate(PEOPLE, start=1):
            fake.add_user(user_id, f"person{n:02d}", f"+1 415 555 {1000 + n:04d}")
        fake.state.usergroups |= {"S0SUPPORT": [], "S0LEADS": ["U0LEAD"]}
        yield fake


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=WINDOWS_POLICY) as running:
        slack.latency(SLACK_LATENCY)  # every method, and response_url posts
        yield running


class InFlight:
    """The most calls to each method the fake held at once (arrived, not yet answered), sampled every 2 ms."""

    def __init__(self, slack: FakeSlack) -> None:
        self.slack = slack
        self.peak: dict[str, int] = {}
        self.together: set[frozenset[str]] = set()  # methods seen waiting at the same moment
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            waiting: dict[str, int] = {}
            for call in list(self.slack.calls):
                if call.status is None:
                    waiting[call.method] = waiting.get(call.method, 0) + 1
            for method, n in waiting.items():
                self.peak[method] = max(self.peak.get(method, 0), n)
            if len(waiting) > 1:
                self.together.add(frozenset(waiting))
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> InFlight:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def arrived(slack: FakeSlack, method: str, since: float, count: int = 1, within: float = 10.0) -> float:
    """Seconds from ``since`` until Slack had taken ``count`` calls to ``method`` (polled every 2 ms)."""
    while len(slack.of(method)) < count:
        if time.monotonic() - since > within:
            raise AssertionError(f"{method} called {len(slack.of(method))} times in {within}s, expected {count}")
        await asyncio.sleep(0.002)
    return time.monotonic() - since


def message_shortcut(slack: FakeSlack, message: dict[str, Any], trigger_id: str) -> dict[str, Any]:
    return {
        "type": "message_action",
        "callback_id": "text_this_message",
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID},
        "user": {"id": "U0ALICE"},
        "channel": {"id": "C0OPS"},
        "message": message,
        "response_url": slack.response_url("shortcut"),
        "api_app_id": "A0APP",
    }


async def open_form(app: App, slack: FakeSlack) -> dict[str, Any]:
    """``/sms`` in #ops, as alice; the form as Slack keeps it once it is ready."""
    await app.command("/sms", "")
    await slack.wait_for("views.open")
    await app.settle()
    return list(slack.views.values())[-1]


async def test_text_this_message_mentioning_20_people_opens_at_once_then_shows_their_names(
    app: App, slack: FakeSlack
) -> None:
    mentioned = PEOPLE[:20]
    alert = {
        "type": "message",
        "user": "U0ALICE",
        "ts": "1763800000.000100",
        "text": "db-1 is down, paging " + ", ".join(f"<@{u}>" for u in mentioned),
    }

    async with InFlight(slack) as in_flight:
        started = time.monotonic()
        response = await interact(app, message_shortcut(slack, alert, "1337.20.mentions"))
        acked = time.monotonic() - started
        opened_at = await arrived(slack, "views.open", started)
        updated_at = await arrived(slack, "views.update", started)
        await app.settle()

    assert (response.status_code, response.text) == (200, "")
    assert acked < 0.5
    assert opened_at < 0.5  # the trigger is good for 3 s: "Loading…" is up long before
    assert updated_at < 1.5  # the form itself, names and all
    (opened,) = slack.of("views.open")
    assert "submit" not in opened["view"]
    (update,) = slack.of("views.update")
    text = block(update["view"], "message")["element"]["initial_value"]
    assert text == "db-1 is down, paging " + ", ".join(f"@person{n:02d}" for n in range(1, 21))
    # Every name looked up once, LOOKUPS_AT_ONCE at a time, while views.open and the user group look-up were in
    # flight too.
    assert sorted(p["user"] for p in slack.of("users.info")) == mentioned
    # Together, never more than the limit; how many overlap at the fake depends on how fast the machine starts them
    # (17 of 20 on a loaded CI run), while updated_at above already rules out one at a time (20 × Slack's latency).
    assert 1 < in_flight.peak["users.info"] <= LOOKUPS_AT_ONCE
    assert any({"views.open", "users.info", "usergroups.users.list"} <= seen for seen in in_flight.together)
    assert slack.of("usergroups.users.list") == [{"usergroup": "S0LEADS"}]


async def test_submission_with_15_people_is_answered_within_budget_their_look_ups_side_by_side(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    view = await open_form(app, slack)
    picked = PEOPLE[20:35]
    values = state(message="db-1 disk full", people=picked)

    async with InFlight(slack) as in_flight:
        started = time.monotonic()
        response = await interact(app, submission(view, values))
        answered = time.monotonic() - started
    await app.settle()

    assert (response.status_code, response.text) == (200, "")
    assert answered < 1.0
    assert in_flight.peak["users.info"] == min(len(picked), LOOKUPS_AT_ONCE)  # side by side, not one by one
    assert sorted(p["user"] for p in slack.of("users.info")) == picked
    (body,) = fake_d7.bodies("/messages/v1/send")
    assert len(body["messages"][0]["recipients"]) == 15


async def test_field_errors_that_need_look_ups_still_land_on_their_field_within_budget(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    view = await open_form(app, slack)
    values = state(message="db-1 disk full", people=[*PEOPLE[:14], "U0DAVE"])

    started = time.monotonic()
    response = await interact(app, submission(view, values))
    answered = time.monotonic() - started

    assert answered < 1.0
    assert response.json() == {
        "response_action": "errors",
        "errors": {"people": "No usable phone: @dave has no phone number in their Slack profile"},
    }
    assert await app.relay.storage.sends.audit() == []


async def test_look_ups_slower_than_the_budget_record_the_intent_and_the_outbox_refuses_it_privately(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    view = await open_form(app, slack)
    slack.state.delays["users.info"] = 1.5  # well past the submission's look-up budget
    values = state(message="db-1 disk full", numbers="+14155550100", people=["U0DAVE"])

    started = time.monotonic()
    response = await interact(app, submission(view, values))
    answered = time.monotonic() - started
    await app.settle()

    assert (response.status_code, response.text) == (200, "")  # answered in time, not late with an error
    assert answered < 1.3
    (record,) = await app.relay.storage.sends.audit()
    assert record.request.idempotency_key == f"view:{view['id']}"
    assert fake_d7.requests == []
    told = json.dumps(slack.responses["cmd"])
    assert "dave has no phone number in their Slack profile" in told
    assert len(slack.of("users.info")) == 1  # the outbox used what the form's look-up brought back


async def test_a_message_cut_to_fit_the_field_says_so_and_the_preview_counts_the_field(
    app: App, slack: FakeSlack
) -> None:
    long = {
        "type": "message",
        "bot_id": "B0GRAFANA",
        "ts": "1763800000.000200",
        "text": "",
        "attachments": [{"title": "HighCPU db-1", "text": "x" * 4071}],  # with the title and a new line: 4,084
    }
    await interact(app, message_shortcut(slack, long, "1337.21.long"))
    await slack.wait_for("views.open")
    await app.settle()
    view = list(slack.views.values())[-1]

    message = block(view, "message")
    assert len(message["element"]["initial_value"]) == 3000
    assert message["hint"]["text"] == (
        "The message was 4,084 characters; the first 3,000 are in the field — 1,084 were cut."
    )
    assert preview(view) == "3000 characters · GSM-7 · 20 segments · 0 recipients"

    # Typing keeps the notice: the form still says what the forwarded message lost.
    updates = len(slack.of("views.update"))
    await interact(app, block_action(view, message["element"]["initial_value"][:2000]))
    update = (await slack.wait_for("views.update", updates + 1))[-1]
    assert block(update["view"], "message")["hint"]["text"].startswith("The message was 4,084 characters")
    assert preview(update["view"]) == "2000 characters · GSM-7 · 14 segments · 0 recipients"


async def test_names_slack_cannot_give_stay_as_ids_and_the_form_still_opens(app: App, slack: FakeSlack) -> None:
    slack.fail("users.info", 503)
    alert = {"type": "message", "user": "U0ALICE", "ts": "1763800000.000300", "text": "paging <@U0P01>"}

    await interact(app, message_shortcut(slack, alert, "1337.23.names"))
    await slack.wait_for("views.update")
    await app.settle()

    (update,) = slack.of("views.update")
    assert block(update["view"], "message")["element"]["initial_value"] == "paging @U0P01"


async def test_look_ups_slower_than_the_open_budget_replace_loading_with_why(
    app: App, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.slack.listeners.compose.OPEN_LOOKUPS_WITHIN", 0.5)
    slack.state.delays["usergroups.users.list"] = 2.0

    started = time.monotonic()
    await app.command("/sms", "")
    await slack.wait_for("views.update")
    shown = time.monotonic() - started
    await app.settle()

    (update,) = slack.of("views.update")
    assert shown < 1.5
    assert update["view"]["blocks"][0]["text"]["text"] == (
        ":warning: The form cannot be shown: Slack did not answer in time. Nothing was sent. "
        "Close this and try again in a minute."
    )


def block_action(view: dict[str, Any], typed: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": TEAM_ID},
        "user": {"id": "U0ALICE"},
        "api_app_id": "A0APP",
        "trigger_id": "1337.22.typed",
        "view": {**view, "state": {"values": state(message=typed)}},
        "actions": [{"action_id": "message", "block_id": "message", "type": "plain_text_input"}],
    }
