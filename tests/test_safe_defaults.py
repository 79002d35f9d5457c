"""Safe defaults: texts go only to the policy's countries (``+1*`` spans 25 of them), each person has a budget when the
policy sets none, and budget windows that could never hold are refused by ``check``. End to end where a person would
notice (the command's refusal, the alert's thread, the 101st message of the hour), and in the policy's own terms."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.domain.errors import PolicyFileError
from bot.domain.models import Via
from bot.domain.phone import parse_phone
from bot.domain.policy import (
    Budget,
    Dimension,
    SendRequestFacts,
    evaluate,
    parse_policy,
    policy_warnings,
)
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app
from tests.test_cli import run

SMS = "/messages/v1/send"

POLICY = """
version: 1
defaults: {region: US, max_segments: 3, show_numbers: masked}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
contacts:
  oncall: ["+14155550100", "+18765550100"]
rules:
  - name: north america
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+1*"]
    max_recipients: 5
alerts:
  - name: pages
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: bots
    sender: ops-sms
    to: ["group:oncall"]
"""


def base(**defaults: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": defaults,
        "senders": {"s": {"via": "sms", "originator": "Ops"}},
        "rules": [{"name": "r", "slack_channels": ["*"], "users": ["*"], "senders": ["s"], "recipients": ["+1*"]}],
    }


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_channel("C0ALERTS", name="alerts")
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, POLICY) as running:
        yield running


# ---------------------------------------------------------------- countries


@pytest.mark.parametrize(("number", "region"), [("+1 876 555 0100", "JM"), ("+1 809 555 0100", "DO")])
def test_a_number_outside_the_default_country_is_refused_whatever_prefix_matched(number: str, region: str) -> None:
    policy = parse_policy(base(region="US"))
    decision = evaluate(policy, SendRequestFacts("U1", "C1", Via.SMS, [parse_phone(number)]))
    assert not decision.allowed
    assert decision.dimension is Dimension.RECIPIENT
    shown = parse_phone(number).display(policy.defaults.show_numbers)
    assert decision.reason == (
        f"{shown} is a number in {region}; the policy texts only numbers in US (defaults.region; add defaults.countries)"
    )
    assert evaluate(policy, SendRequestFacts("U1", "C1", Via.SMS, [parse_phone("+1 415 555 0100")])).allowed


def test_countries_name_where_texts_may_go() -> None:
    policy = parse_policy(base(region="US", countries=["us", "JM"]))
    assert policy.defaults.allowed_countries == ("US", "JM")
    assert evaluate(policy, SendRequestFacts("U1", "C1", Via.SMS, [parse_phone("+1 876 555 0100")])).allowed
    refused = evaluate(policy, SendRequestFacts("U1", "C1", Via.SMS, [parse_phone("+1 809 555 0100")]))
    assert refused.reason.endswith("is a number in DO; the policy texts only numbers in US, JM (defaults.countries)")


@pytest.mark.parametrize(
    ("countries", "problem"),
    [(["XX"], "defaults.countries: unknown country 'XX'"), ([], "defaults.countries: name at least one country")],
)
def test_a_bad_country_is_named_by_its_path(countries: list[str], problem: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(base(countries=countries))
    assert problem in str(caught.value)


def test_check_warns_about_contacts_outside_the_countries(tmp_path: Path) -> None:
    policy = parse_policy(base() | {"contacts": {"oncall": ["+14155550100", "+18765550100"]}})
    assert [(w.path, w.message) for w in policy_warnings(policy) if w.path.startswith("contacts")] == [
        (
            "contacts.oncall[1]",
            "+1 876 ••• 0100 is a number in JM; the policy texts only numbers in US (defaults.region; add "
            "defaults.countries), so texts to it are refused",
        )
    ]


async def test_a_command_to_jamaica_under_plus_one_star_is_refused_and_nothing_is_sent(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "+18765550100 +14155550100 hello")
    await app.settle()

    assert fake_d7.requests == []
    shown = json.dumps(slack.responses["cmd"][-1], ensure_ascii=False)
    assert "+1 876 ••• 0100 is a number in JM; the policy texts only numbers in US" in shown


async def test_an_alert_leaves_a_contact_outside_the_countries_out_and_its_thread_says_why(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    alert = {"type": "message", "bot_id": "B0GRAFANA", "text": "CRITICAL: disk full", "ts": "1763800100.000300"}
    await app.event(event_callback(alert))
    await app.settle()

    ((message,),) = [b["messages"] for b in fake_d7.bodies(SMS)]
    assert message["recipients"] == ["+14155550100"]
    shown = json.dumps([c.get("blocks") for c in slack.of("chat.postMessage")], ensure_ascii=False)
    assert "Not reached" in shown
    assert "+1 876 ••• 0100 is a number in JM; the policy texts only numbers in US" in shown


# ---------------------------------------------------------------- each person's budget


def test_a_policy_without_per_user_limits_has_the_default_budget_and_none_turns_it_off() -> None:
    assert parse_policy(base()).defaults.limits.user_budget == Budget(messages=100, per=timedelta(hours=1))
    assert parse_policy(base(limits={"per_user": "none"})).defaults.limits.user_budget is None
    own = {"messages": 5, "per": "1d"}
    assert parse_policy(base(limits={"per_user": own})).defaults.limits.user_budget == Budget(
        messages=5, per=timedelta(days=1)
    )


async def test_the_101st_message_of_the_hour_is_refused(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    five = " ".join(f"+1415555{i:04d}" for i in range(5))
    three_parts, two_parts = "x" * 400, "y" * 200  # GSM-7: 3 and 2 segments
    for i in range(6):  # 6 x 5 recipients x 3 segments = 90 messages
        await app.command("/sms", f"{five} {three_parts}{i}")
    await app.command("/sms", f"{five} {two_parts}")  # + 5 x 2 = 100
    await app.settle(60)  # Slack takes a post a second per channel
    assert len(fake_d7.bodies(SMS)) == 7

    await app.command("/sms", "+14155550100 one more")
    await app.settle(60)

    assert len(fake_d7.bodies(SMS)) == 7
    shown = json.dumps(slack.responses["cmd"][-1], ensure_ascii=False)
    assert "over budget" in shown
    assert "your workspace-wide budget (100 messages per 1h) has 0 messages left and this costs 1 message" in shown


# ---------------------------------------------------------------- windows that could never hold


@pytest.mark.parametrize("per", [0, -3600, 0.001, "0m"])
def test_a_budget_window_under_a_minute_is_refused(per: object) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(base(limits={"workspace": {"messages": 10, "per": per}}))
    assert "defaults.limits.workspace.per" in str(caught.value)


def test_check_shows_the_countries_and_the_default_budget(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "BOT_POLICY": str(policy)}
    result = run("check", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "workspace budgets: 100 messages per 1h per user" in lines
    assert "  (per user: the default, 100 messages per 1h; set defaults.limits.per_user, or none)" in lines
    assert "countries: texts go only to numbers in US (the country of region US; defaults.countries)" in lines
    assert any(line.startswith("warning: contacts.oncall[1]: +1 876") for line in lines)
    policy.write_text(
        POLICY.replace("max_segments: 3,", "max_segments: 3, limits: {per_user: {messages: 1, per: 0.001}},")
    )
    refused = run("check", env=env, cwd=tmp_path)
    assert refused.returncode != 0
    assert "defaults.limits.per_user" in refused.stderr
    assert "at least 1 minute" in refused.stderr


def test_check_warns_that_ascii_classes_never_match_other_alphabets() -> None:
    alert = {"name": "a", "slack_channels": ["C0A"], "sender": "s", "to": ["+14155550100"]}
    policy = parse_policy(
        base()
        | {
            "alerts": [
                alert | {"name": "ru", "match": r"(?i)\bошибка\b"},
                alert | {"name": "en", "match": r"(?i)\bcritical\b"},
                alert | {"name": "escaped", "match": r"café \\b"},  # a backslash, then the letter b
            ]
        }
    )
    assert [w.path for w in policy_warnings(policy) if w.path.startswith("alerts")] == ["alerts[0].match"]


@pytest.mark.parametrize(
    ("alert", "path"),
    [
        ({"dedupe_window": 0}, "alerts[0].dedupe_window"),
        ({"max_per_phone": {"count": 5, "per": -3600}}, "alerts[0].max_per_phone.per"),
        ({"max_per_phone": {"count": 5, "per": "30s"}}, "alerts[0].max_per_phone.per"),
        ({"escalate": [{"after": 0, "to": ["+14155550101"]}]}, "alerts[0].escalate[0].after"),
    ],
)
def test_windows_that_never_hold_are_refused_wherever_they_are(alert: dict[str, Any], path: str) -> None:
    rule = {"name": "a", "slack_channels": ["C0A"], "match": "x", "sender": "s", "to": ["+14155550100"]}
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(base() | {"alerts": [rule | alert]})
    assert path in str(caught.value)
