"""App Home, end to end against the strict fake Slack: what each person may send (from the same policy the bot
decides with), their recent sends with live statuses, the admin section for admins only, a large policy within
Slack's view limits, and refreshes that follow sends without flooding views.publish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.home import HomeTabs
from bot.storage import Storage
from bot.tasks import BackgroundTasks
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app
from tests.test_deliveries import post_form, sms_report

SECRET = "report-path-secret-0123456789abcdef"

POLICY = """
version: 1
defaults:
  region: US
  limits: {per_user: none, workspace: {messages: 1000, per: 1d}}
admins: [U0ADMIN, S0ADMINS]
senders:
  ops-sms: {via: sms, originator: OpsAlert}
  support-wa:
    via: whatsapp
    originator: "+971501234567"
    templates:
      shift_alert: {template_id: shift_alert_v2, language: en, params: [title, link], text: "Alert: {{1}} {{2}}"}
contacts:
  oncall-db: ["+14155550100", "+14155550101"]
rules:
  - name: ops may page on-call
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["region:US", "group:oncall-db"]
    max_recipients: 5
    limits: {per_user: {messages: 50, per: 1h}, per_channel: {messages: 500, per: 1d}}
  - name: support agents on WhatsApp
    slack_channels: [C0SUPPORT]
    users: [S0SUPPORT]
    senders: [support-wa]
    recipients: ["*"]
alerts:
  - name: prod critical
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["group:oncall-db"]
"""


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    for user, name in (("U0ALICE", "alice"), ("U0AGENT", "agent"), ("U0ADMIN", "admin"), ("U0BOSS", "boss")):
        slack.add_user(user, name, "+1 415 555 0199")
    slack.add_channel("C0SUPPORT")
    slack.add_channel("C0ALERTS", name="alerts")
    slack.state.usergroups["S0SUPPORT"] = ["U0AGENT"]
    slack.state.usergroups["S0ADMINS"] = ["U0BOSS"]
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(
        slack, fake_d7, tmp_path, policy=POLICY, PUBLIC_URL="https://relay.example.com", D7_REPORT_SECRET=SECRET
    ) as running:
        yield running


async def open_home(app: App, slack: FakeSlack, user: str) -> dict[str, Any]:
    before = len(slack.of("views.publish"))
    event = {"type": "app_home_opened", "user": user, "tab": "home", "ts": "1700000000.000001"}
    assert (await app.event(event_callback(event, channel="D0HOME"))).status_code == 200
    await wait_for_publish(app, slack, before + 1)
    return slack.homes[user]


async def wait_for_publish(app: App, slack: FakeSlack, count: int, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while len(slack.of("views.publish")) < count:  # noqa: ASYNC110 - the fake has no signal of its own
            await asyncio.sleep(0.02)
    await app.settle()


def texts(view: dict[str, Any]) -> list[str]:
    out = []
    for block in view["blocks"]:
        if block["type"] in ("section", "header"):
            out.append(block["text"]["text"])
        elif block["type"] == "context":
            out += [e["text"] for e in block["elements"]]
    return out


def shown(view: dict[str, Any]) -> str:
    return "\n".join(texts(view))


async def test_a_user_in_two_rules_sees_both_with_channels_senders_recipients_budgets_and_templates(
    app: App, slack: FakeSlack
) -> None:
    view = await open_home(app, slack, "U0AGENT")
    rules = [t for t in texts(view) if t.startswith("*ops may") or t.startswith("*support")]
    assert rules[0].splitlines() == [
        "*ops may page on-call*",
        "From <#C0OPS> · SMS as `ops-sms` (OpsAlert)",
        "To numbers in US, contact group oncall-db (2 numbers) · at most 5 per send",
        "Budgets: your budget in rule 'ops may page on-call': 50 messages per 1h; nothing used; the budget of "
        "<#C0OPS> in rule 'ops may page on-call': 500 messages per 1d; nothing used; the workspace's budget: "
        "1000 messages per 1d; nothing used",
    ]
    assert rules[1].splitlines() == [
        "*support agents on WhatsApp*",
        "From <#C0SUPPORT> · WhatsApp as `support-wa` (+971501234567)",
        "To any number · at most 10 per send",
        "Budgets: the workspace's budget: 1000 messages per 1d; nothing used",
        "WhatsApp templates: `shift_alert`",
    ]
    assert "The relay (admins)" not in shown(view)


async def test_a_user_no_rule_admits_is_told_whom_to_ask(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> None:
    policy = POLICY.replace('    users: ["*"]', "    users: [U0SOMEONE]")
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        view = await open_home(app, slack, "U0ALICE")
    assert (
        "Nothing is allowed for you here yet: no rule of the bot's policy admits you. Ask <@U0ADMIN>, "
        "<!subteam^S0ADMINS>."
    ) in texts(view)


async def test_recent_sends_show_each_recipients_live_status_and_refresh_after_reports(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await open_home(app, slack, "U0ALICE")
    await app.command("/sms", "+14155550100 +14155550101 db down", user="U0ALICE")
    await app.settle()
    (record,) = await app.relay.storage.sends.audit()
    assert record.request_id is not None
    await wait_for_publish(app, slack, 2)  # the outcome was told: the tab follows
    for number, status in (("+14155550100", "delivered"), ("+14155550101", "undelivered")):
        assert (await post_form(app, sms_report(record.request_id, number, status, msg_id=number))).status_code == 200
    await app.settle()
    await wait_for_publish(app, slack, 3)
    publishes = len(slack.of("views.publish"))
    view = slack.homes["U0ALICE"]
    (recent,) = [t for t in texts(view) if record.request_id in t]
    lines = recent.splitlines()
    assert lines[0].startswith("<#C0OPS> · <!date^")
    assert f"SMS · *accepted* · request_id `{record.request_id}` · <https://" in lines[0]
    assert lines[1:] == ["+1 415 ••• 0100: :white_check_mark: delivered", "+1 415 ••• 0101: :x: undelivered"]
    assert publishes <= 4  # debounced: one send, two reports, not a publish per change


async def test_admins_see_the_relay_and_others_do_not(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/sms", "+14155550100 db down", user="U0ALICE")
    await app.event(
        event_callback({"type": "message", "user": "U0ALICE", "text": "CRITICAL: db-1", "ts": "1700000001.000100"})
    )
    await app.settle()

    for admin in ("U0ADMIN", "U0BOSS"):  # by ID, and as a member of an admin user group
        view = await open_home(app, slack, admin)
        text = shown(view)
        assert "The relay (admins)" in text
        assert "*D7 balance:* 100.00" in text
        assert "<#C0OPS>: 1 accepted" in text
        assert "<#C0ALERTS>: 1 accepted" in text
        assert "*Needs a person:* nothing today" in text
        assert "`check`: 0 warnings" in text
        assert "prod critical: last match " in text
        assert "1 texted · 0 held back · 0 repeats · 0 not texted" in text
    assert "The relay (admins)" not in shown(await open_home(app, slack, "U0ALICE"))


async def test_a_policy_with_40_rules_and_200_contacts_publishes_a_valid_view(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    numbers = {i: ", ".join(f'"+1415555{i:02d}{j:02d}"' for j in range(5)) for i in range(40)}
    contacts = "\n".join(f"  team{i}: [{numbers[i]}]" for i in range(40))
    rules = "\n".join(
        f"""  - name: rule number {i} with a long name to take room in every line of the tab
    slack_channels: [{", ".join(f"C0CH{i}{k}" for k in range(30))}]
    users: ["*"]
    senders: [ops-sms]
    recipients: [{", ".join(f'"group:team{j}"' for j in range(40))}]
    limits: {{per_user: {{messages: 50, per: 1h}}}}"""
        for i in range(40)
    )
    policy = f"""
version: 1
defaults: {{region: US}}
admins: [U0ADMIN]
senders:
  ops-sms: {{via: sms, originator: OpsAlert}}
contacts:
{contacts}
rules:
{rules}
"""
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        for i in range(12):
            number = f"+1415555{i // 5:02d}{i % 5:02d}"  # in contact group team{i // 5}
            await app.command("/sms", f"{number} hello {i}", user="U0ADMIN", channel="C0CH00")
        await app.settle(30)
        view = await open_home(app, slack, "U0ADMIN")

    assert slack.refused == []  # the fake refuses what Slack refuses: nothing was
    assert len(view["blocks"]) <= 100
    assert "… and 15 more rules admit you" in shown(view)
    assert len([t for t in texts(view) if "*accepted* · request_id" in t]) == 10  # the last 10 sends


async def test_a_tab_opened_on_one_replica_is_refreshed_by_another_when_a_send_changes(tmp_path: Path) -> None:
    async with await Storage.open(f"sqlite:///{tmp_path / 'bot.db'}") as storage:
        tasks = BackgroundTasks()
        here, there = (HomeTabs(AsyncWebClient(token="xoxb-unused"), tasks, settings=storage.settings) for _ in "ab")
        published: list[str] = []

        async def publish(user_id: str) -> None:
            published.append(user_id)

        here.publish = publish  # type: ignore[method-assign]
        there.publish = publish  # type: ignore[method-assign]
        there.changed("U0ALICE")  # never opened anywhere: nothing to refresh
        await asyncio.sleep(0.1)
        assert published == []
        here.opened("U0ALICE")
        await asyncio.sleep(0.1)
        there.changed("U0ALICE")  # the send was told by the other replica
        await asyncio.sleep(0.1)
        assert published == ["U0ALICE", "U0ALICE"]
