"""Hostile text cannot freeze the bot (issue 25): a 40,000-character post in a watched channel is answered within
Slack's budget while the bot keeps answering everyone else, a policy pattern that backtracks catastrophically in
Python's ``re`` runs in linear time, and one that RE2 cannot run is refused by ``check``.

End to end: the real app served on loopback, the fake Slack and fake D7, requests signed as Slack signs them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.domain.alerts import identity, normalise, without_state
from bot.slack.alerts import SlackMessageReader, alert_text, facts_of, title_of
from bot.slack.flatten import MAX_TEXT, flatten
from bot.slack.markup import strip_mrkdwn
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app
from tests.memory import FakeDirectory
from tests.test_cli import run

T = TypeVar("T")

SMS = "/messages/v1/send"
SLACK_BUDGET = 1.0  # seconds: Slack waits 3 s for an answer; we want well inside it
HOSTILE_LENGTH = 40_000  # what Slack accepts in a message's text
CATASTROPHIC = r"(?i)^(\w+\s?)+ resolved$"  # the red team's: a repeat inside a repeat, which check refuses
# Exponential in a backtracking engine too (1.6^n ways to split the word), without a repeat inside a repeat: check
# takes it, and RE2 is what keeps it harmless (Python's re: 0.17 s at 30 characters, about 19 s at 40).
AMBIGUOUS = r"(?i)^(\w|\w\w)+ resolved$"

POLICY = f"""
version: 1
defaults: {{region: US, max_segments: 3, show_numbers: masked}}
senders:
  ops-sms: {{via: sms, originator: OpsAlert}}
rules:
  - name: ops may page on-call
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+14155550100", "+14155550199"]
alerts:
  - name: prod critical
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["+14155550199"]
    resolve: '{AMBIGUOUS}'
"""

# Each repeated to 40,000 characters: the emphasis marks (the quadratic pattern: 9 s for ` *a` alone), code
# spans and blocks, entities and mentions that never close.
UNITS = [" *a", " _a", " ~a", "`a", "```a", "<a", "<@U0|a", "*_~`<"]


def hostile(unit: str, length: int = HOSTILE_LENGTH) -> str:
    return (unit * (length // len(unit) + 1))[:length]


async def timed(work: Awaitable[T], after: float = 0.0) -> tuple[float, T]:
    """How long ``work`` took to answer, started ``after`` seconds from now."""
    await asyncio.sleep(after)
    started = time.perf_counter()
    result = await work
    return time.perf_counter() - started, result


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_channel("C0ALERTS", name="alerts")
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY) as running:
        yield running


def sms_sent(fake_d7: FakeD7) -> list[tuple[str, list[str]]]:
    return [(m["content"], m["recipients"]) for body in fake_d7.bodies(SMS) for m in body["messages"]]


@pytest.mark.parametrize("unit", UNITS)
async def test_a_40000_character_post_is_answered_at_once_and_the_bot_keeps_answering(
    app: App, fake_d7: FakeD7, unit: str
) -> None:
    post = {"type": "message", "user": "U0MALLORY", "ts": "1700000000.000100", "text": "critical " + hostile(unit)}
    body = event_callback(post, channel="C0ALERTS")
    assert len(body) > HOSTILE_LENGTH

    (event_took, event), (health_took, health), (command_took, command) = await asyncio.gather(
        timed(app.event(body)),
        timed(app.http.get(f"{app.url}/healthz"), after=0.005),  # while the post is being read
        timed(app.command("/sms", "+14155550100 is the bot still there?"), after=0.005),
    )
    await app.settle()

    assert event.status_code == 200
    assert event_took < SLACK_BUDGET
    assert health.status_code == 200
    assert health_took < SLACK_BUDGET
    assert command.status_code == 200
    assert command_took < SLACK_BUDGET
    sent = {to[0]: text for text, to in sms_sent(fake_d7)}
    assert sent["+14155550100"] == "is the bot still there?"
    assert sent["+14155550199"].startswith("critical")  # the alert, read from its first 8,000 characters, cut to fit


async def test_a_policy_pattern_that_backtracks_for_ever_in_re_answers_a_41_character_post_at_once(
    app: App, fake_d7: FakeD7
) -> None:
    bot = {"type": "message", "subtype": "bot_message", "bot_id": "B0GRAFANA", "username": "grafana"}
    firing = {**bot, "ts": "1700000000.000100", "text": "InstanceDown\ncritical: db1 is down"}
    await app.event(event_callback(firing, channel="C0ALERTS"))
    await app.settle()

    attack = {**bot, "ts": "1700000000.000200", "text": "a" * 40 + "!"}  # about 19 s in Python's re
    took, answer = await timed(app.event(event_callback(attack, channel="C0ALERTS")))
    health_took, health = await timed(app.http.get(f"{app.url}/healthz"))
    resolved = {**bot, "ts": "1700000000.000300", "text": "InstanceDown resolved"}
    resolve_took, resolve = await timed(app.event(event_callback(resolved, channel="C0ALERTS")))
    await app.settle()

    assert answer.status_code == 200
    assert took < SLACK_BUDGET
    assert health.status_code == 200
    assert health_took < SLACK_BUDGET
    assert resolve.status_code == 200
    assert resolve_took < SLACK_BUDGET
    assert sms_sent(fake_d7) == [
        ("InstanceDown\ncritical: db1 is down", ["+14155550199"]),
        ("RESOLVED: InstanceDown", ["+14155550199"]),
    ]


# ---------------------------------------------------------------- check


def check(tmp_path: Path, resolve: str) -> Any:
    (tmp_path / "policy.yml").write_text(POLICY.replace(f"'{AMBIGUOUS}'", f"'{resolve}'"))
    return run("check", env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("resolve", "why"),
    [
        (
            r"(?<=\[)RESOLVED",
            "RE2 does not support look-behind `(?<=…)`; patterns run in linear time, so look-arounds and "
            "back-references are not available",
        ),
        (
            r"^(\w+) resolved, \1$",
            "RE2 does not support back-references (`\\1`); patterns run in linear time, so look-arounds and "
            "back-references are not available",
        ),
    ],
)
def test_check_refuses_a_pattern_re2_cannot_run_naming_where_and_why(tmp_path: Path, resolve: str, why: str) -> None:
    result = check(tmp_path, resolve)

    assert result.returncode == 2
    assert result.stderr == f"error: policy.yml: alerts[0].resolve: {why}\n"


def test_check_refuses_the_red_teams_catastrophic_pattern(tmp_path: Path) -> None:
    result = check(tmp_path, CATASTROPHIC)

    assert result.returncode == 2
    assert result.stderr == (
        "error: policy.yml: alerts[0].resolve: a repeat inside a repeat (like `(\\w+\\s?)+`) can take seconds on a "
        "short text in backtracking regex engines; write it with one repeat (like `[\\w\\s]+`)\n"
    )


def test_check_takes_a_pattern_re2_runs_in_linear_time_whatever_re_would_make_of_it(tmp_path: Path) -> None:
    result = check(tmp_path, AMBIGUOUS)

    assert result.returncode == 0, result.stderr
    assert f"resolved by {AMBIGUOUS}" in result.stdout


# ---------------------------------------------------------------- the parts, timed and capped


@pytest.mark.parametrize("unit", [" *a", " _a", " ~a"])
def test_strip_mrkdwn_reads_40000_hostile_characters_in_linear_time(unit: str) -> None:
    text = hostile(unit)

    started = time.perf_counter()
    stripped = strip_mrkdwn(text)
    took = time.perf_counter() - started

    assert took < 0.1  # the quadratic pattern it replaces: 9 s
    assert stripped == text.strip()  # nothing closes: each mark has a space before the next


@pytest.mark.parametrize("unit", UNITS)
def test_a_capped_post_is_read_whole_in_linear_time(unit: str) -> None:
    message = {"text": hostile(unit), "attachments": [{"title": hostile(unit), "text": hostile(unit)}]}

    started = time.perf_counter()
    facts = facts_of(message, "C0ALERTS")
    title = title_of(message, facts.text)
    normalise(facts.text)
    identity(title)
    took = time.perf_counter() - started

    assert took < 0.25
    assert len(facts.text) <= MAX_TEXT
    assert len(title) <= MAX_TEXT


@pytest.mark.parametrize(
    "text",
    [
        "firing:" + " " * HOSTILE_LENGTH,  # `(?::\s*\d+)?` gives the spaces back one by one, once
        "[firing:" * (HOSTILE_LENGTH // 8),
        "12:30:00." + "9" * HOSTILE_LENGTH + "x",  # `[.,]\d+` then `\b` fails: gives the digits back, once
        "1:2" * (HOSTILE_LENGTH // 3),
        "2024-01-01T1" * (HOSTILE_LENGTH // 12),
        "1." * (HOSTILE_LENGTH // 2),
        "a1 " * (HOSTILE_LENGTH // 3),
        "re-" * (HOSTILE_LENGTH // 3),
    ],
)
def test_the_patterns_left_in_re_are_linear_too(text: str) -> None:
    started = time.perf_counter()
    normalise(text)
    without_state(text)
    identity(text)
    took = time.perf_counter() - started

    assert took < 0.25


async def test_every_reader_of_a_post_sees_it_capped() -> None:
    long = "CRITICAL " + "x" * HOSTILE_LENGTH
    message: dict[str, Any] = {
        "text": long,
        "attachments": [{"title": long, "text": long, "fields": [{"title": "f", "value": long}] * 50}],
        "blocks": [{"type": "header", "text": {"type": "plain_text", "text": long}}],
    }

    assert len(flatten(message)) == MAX_TEXT
    assert len(alert_text(message)) <= MAX_TEXT
    assert len(title_of(message, alert_text(message))) <= MAX_TEXT
    assert len(title_of({"blocks": message["blocks"]}, "")) <= MAX_TEXT
    assert len(facts_of(message).text) <= MAX_TEXT
    directory = FakeDirectory()
    directory.add_person("U0ANA", "ana" * 30)
    mentions = {"text": "<@U0ANA> " * (HOSTILE_LENGTH // 9)}
    text, title = await SlackMessageReader(directory).read(mentions)
    assert len(text) <= MAX_TEXT
    assert len(title) <= MAX_TEXT
    assert text.startswith("@" + "ana" * 30)


def test_a_short_post_is_read_as_before() -> None:
    message = {"text": "*CRITICAL*: <https://x.io|docs> for `db-1`\n\n\n\nok", "bot_id": "B0X"}

    assert alert_text(message) == "CRITICAL: docs (https://x.io) for db-1\n\nok"
