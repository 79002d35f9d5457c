"""On call (issue 29), end to end: schedules in the policy, alerts and escalation steps to ``schedule:NAME`` texting
whoever was on call when the alert came in (and the thread naming them), overrides taken and given with ``/sms
oncall``, kept in the database across a restart, and ``/sms oncall`` within Slack's limits for 50 schedules.

Shifts are real time: a schedule's ``start`` is written so that now falls in the shift the test wants (the
rotation's math itself, DST and all, is tested in ``test_oncall_rotation.py``)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml

from bot.domain.errors import PolicyFileError
from bot.domain.policy import parse_policy
from bot.storage.schema import oncall_overrides
from tests.blockkit import MESSAGE_BLOCKS
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app
from tests.test_alert_lifecycle import make_due
from tests.test_home import open_home

SMS = "/messages/v1/send"
PHONES = {
    "U0ANA": "+14155550110",
    "U0BEN": "+14155550111",
    "U0CAL": "+14155550112",
    "U0DAN": "+14155550113",
    "U0EVE": "+14155550114",
}


def start_for(shift: int, every: timedelta, tz: str = "UTC") -> str:
    """A ``start`` that puts now in shift number ``shift`` (0: the first), its next handoff almost ``every`` away."""
    now = datetime.now(UTC).astimezone(ZoneInfo(tz)).replace(second=0, microsecond=0, tzinfo=None)
    return (now - shift * every).strftime("%Y-%m-%d %H:%M")


def policy(primary_shift: int = 0, secondary_shift: int = 1, extra_schedules: str = "") -> str:
    primary = start_for(primary_shift, timedelta(days=1), "Europe/London")
    secondary = start_for(secondary_shift, timedelta(weeks=1))
    return f"""
version: 1
defaults: {{region: US}}
admins: [U0ADMIN]
senders:
  ops-sms: {{via: sms, originator: OpsAlert}}
schedules:
  primary: {{people: [U0ANA, U0BEN, U0CAL], every: 1d, start: "{primary}", tz: Europe/London, channel: C0ONCALL}}
  secondary: {{people: S0SECOND, every: 1w, start: "{secondary}"}}
{extra_schedules}
rules:
  - name: page on-call
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["schedule:primary"]
alerts:
  - name: db
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["schedule:primary"]
    escalate: [{{after: 5m, to: ["schedule:secondary"]}}]
"""


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_channel("C0ALERTS", name="alerts")
    slack.add_channel("C0ONCALL", name="oncall")
    for user_id, phone in PHONES.items():
        slack.add_user(user_id, user_id.removeprefix("U0").lower(), phone)
    slack.add_user("U0ADMIN", "admin", "+14155550199")
    slack.state.usergroups["S0SECOND"] = ["U0DAN", "U0EVE"]
    return slack


def texts(fake_d7: FakeD7) -> list[tuple[str, list[str]]]:
    return [(b["messages"][0]["content"], b["messages"][0]["recipients"]) for b in fake_d7.bodies(SMS)]


def thread_sections(slack: FakeSlack, thread_ts: str) -> list[str]:
    posts = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == thread_ts]
    return [b["text"]["text"] for p in posts for b in p.get("blocks") or [] if b.get("type") == "section"]


_ts = iter(range(1, 10_000))


async def alert(app: App, text: str) -> str:
    ts = f"1765100000.{next(_ts):06d}"
    message = {"type": "message", "user": "U0MONITOR", "text": text, "ts": ts}
    assert (await app.event(event_callback(message, channel="C0ALERTS"))).status_code == 200
    await app.settle()
    return ts


async def oncall(app: App, slack: FakeSlack, text: str, user: str) -> str:
    await app.command("/sms", f"oncall {text}".strip(), user=user)
    await app.settle()
    return str(slack.responses["cmd"][-1]["text"])


async def overrides(app: App) -> list[Any]:
    async with app.relay.storage.database.connect() as conn:
        return list((await conn.execute(sa.select(oncall_overrides))).all())


@pytest.mark.parametrize(("shift", "person"), [(0, "U0ANA"), (1, "U0BEN"), (2, "U0CAL")])
async def test_an_alert_in_shift_1_2_or_3_texts_that_shifts_person_and_its_thread_names_them(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path, shift: int, person: str
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(shift)) as app:
        ts = await alert(app, "CRITICAL: db-1 is down")

    assert texts(fake_d7) == [("CRITICAL: db-1 is down", [PHONES[person]])]
    name = person.removeprefix("U0").lower()
    assert f":pager: On call for *primary*: @{name}" in thread_sections(slack, ts)


async def test_an_override_takes_effect_at_once_ends_on_time_and_is_announced(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0)) as app:
        answer = await oncall(app, slack, "take primary 3s", "U0CAL")
        taken_at = time.monotonic()
        assert answer.startswith(":pager: <@U0CAL> took the on-call for *primary*: on call from now until <!date^")
        (announced,) = [p for p in slack.of("chat.postMessage") if p["channel"] == "C0ONCALL"]
        assert announced["text"] == answer
        await alert(app, "CRITICAL: disk full on db-1")
        await asyncio.sleep(max(0.0, 3.2 - (time.monotonic() - taken_at)))
        await alert(app, "CRITICAL: replication broken on db-2")

    assert texts(fake_d7) == [
        ("CRITICAL: disk full on db-1", [PHONES["U0CAL"]]),  # the override, at once
        ("CRITICAL: replication broken on db-2", [PHONES["U0ANA"]]),  # over: the rotation's person again
    ]


async def test_take_and_give_are_refused_to_people_off_the_rotation_and_nothing_changes(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0)) as app:
        refused = await oncall(app, slack, "take primary", "U0DAN")
        assert refused == (
            ":no_entry: Only the people on the rotation of *primary* and the policy's admins may take or give its "
            "on-call; nothing changed."
        )
        assert await oncall(app, slack, "give primary <@U0DAN|dan> 1h", "U0EVE") == refused
        assert await overrides(app) == []
        assert [p for p in slack.of("chat.postMessage") if p["channel"] == "C0ONCALL"] == []
        await alert(app, "CRITICAL: db-1 is down")
        assert texts(fake_d7) == [("CRITICAL: db-1 is down", [PHONES["U0ANA"]])]

        # An admin may give it to anyone; a person on the rotation may give it too, replacing the earlier one.
        given = await oncall(app, slack, "give primary <@U0DAN|dan> 1h", "U0ADMIN")
        assert given.startswith(":pager: <@U0DAN> was given by <@U0ADMIN> the on-call for *primary*")
        await oncall(app, slack, "give primary <@U0EVE|eve>", "U0BEN")
        await alert(app, "CRITICAL: disk full on db-1")
        (now_on_call,) = [r for r in await overrides(app) if r.ends_at > datetime.now(UTC)]
        assert (now_on_call.user_id, now_on_call.by) == ("U0EVE", "U0BEN")

    assert texts(fake_d7)[-1] == ("CRITICAL: disk full on db-1", [PHONES["U0EVE"]])


async def test_escalation_to_a_schedule_texts_its_person(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(1, secondary_shift=1)) as app:
        ts = await alert(app, "CRITICAL: payments down")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()

    assert texts(fake_d7) == [
        ("CRITICAL: payments down", [PHONES["U0BEN"]]),
        ("ESCALATED, nobody acknowledged in 5m: CRITICAL: payments down", [PHONES["U0EVE"]]),  # S0SECOND's 2nd
    ]
    assert ":pager: On call for *secondary*: @eve" in thread_sections(slack, ts)


async def test_a_restart_between_alert_and_escalation_texts_the_same_people(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    rotation = policy(2, secondary_shift=0)
    async with running_app(slack, fake_d7, tmp_path, policy=rotation) as app:
        await alert(app, "CRITICAL: payments down")
        (fired,) = [r for r in await app.relay.storage.sends.audit() if r.request.origin.surface == "alert"]
        await oncall(app, slack, "give secondary <@U0EVE|eve> 1h", "U0DAN")  # dan's week: eve covers
    async with running_app(slack, fake_d7, tmp_path, policy=rotation) as app:  # the bot restarted
        await make_due(app, f"escalate:{fired.id}:0")
        await app.settle()

    assert texts(fake_d7) == [
        ("CRITICAL: payments down", [PHONES["U0CAL"]]),
        ("ESCALATED, nobody acknowledged in 5m: CRITICAL: payments down", [PHONES["U0EVE"]]),
    ]


async def test_sms_to_a_schedule_texts_whoever_is_on_call_where_a_rule_allows_it(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(1)) as app:
        await app.command("/sms", "schedule:primary db-1 needs you")
        await app.settle()
        await app.command("/sms", "schedule:secondary db-1 needs you too")  # the rule does not allow it
        await app.settle()
        refused = slack.responses["cmd"][-1]["text"]

    assert texts(fake_d7) == [("db-1 needs you", [PHONES["U0BEN"]])]
    assert "is outside the numbers rule 'page on-call' allows" in refused


async def test_app_home_names_the_schedule_a_rule_may_text(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0)) as app:
        view = await open_home(app, slack, "U0BEN")

    rule = next(b["text"]["text"] for b in view["blocks"] if b["text"]["text"].startswith("*page on-call*"))
    assert "To whoever is on call for primary · at most" in rule


async def test_an_override_longer_than_four_weeks_is_refused_naming_it(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0)) as app:
        response = await app.command("/sms", "oncall take primary 5w", user="U0CAL")
        await app.settle()
        assert await overrides(app) == []
    refused = response.json()["text"]
    assert "'5w' is longer than an on-call change may last (4w); change the rotation instead" in refused


async def test_oncall_still_lists_the_other_schedules_when_one_user_group_cannot_be_read(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.fail("usergroups.users.list", error="no_such_subteam")
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0)) as app:
        answer = await oncall(app, slack, "", "U0DAN")

    lines = answer.splitlines()
    assert any(line.startswith("• *primary*: <@U0ANA>, next handoff <!date^") for line in lines), answer
    assert any(
        line.startswith("• *secondary*: unknown (Slack did not give the members of user group S0SECOND; try again)")
        for line in lines
    ), answer


async def test_oncall_lists_fifty_schedules_within_block_kit_limits_and_three_seconds(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    start = start_for(0, timedelta(days=1))
    many = "\n".join(
        f'  team-{i:02d}-database-primary-rotation: {{people: [U0ANA, U0BEN], every: 1d, start: "{start}"}}'
        for i in range(48)
    )
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0, extra_schedules=many)) as app:
        started = time.monotonic()
        await app.command("/sms", "oncall", user="U0DAN")
        while not slack.responses.get("cmd"):  # noqa: ASYNC110 (the fake Slack has no signal to wait on)
            await asyncio.sleep(0.01)
        took = time.monotonic() - started
        (answer,) = slack.responses["cmd"]
        await app.command("/sms", "oncall primary", user="U0DAN")
        await app.settle()
        shifts = slack.responses["cmd"][-1]["text"]

    assert took < 3
    assert not slack.refused
    assert len(answer["blocks"]) <= MESSAGE_BLOCKS
    shown = "\n".join(b["text"]["text"] for b in answer["blocks"])
    assert "• *primary*: <@U0ANA>, next handoff <!date^" in shown
    assert "• *secondary*: <@U0EVE>, next handoff <!date^" in shown
    assert all(f"team-{i:02d}-database-primary-rotation" in shown for i in range(48))
    assert shifts.startswith(":pager: *On call for primary*, now and next:\n• <@U0ANA> until <!date^")
    assert [line.split(" until ")[0] for line in shifts.split("\n")[1:4]] == ["• <@U0ANA>", "• <@U0BEN>", "• <@U0CAL>"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"alerts": [{"to": ["schedule:nope"]}]}, "alerts[0].to[0]: unknown schedule 'nope'"),
        ({"rules": [{"recipients": ["schedule:nope"]}]}, "rules[0].recipients[0]: unknown schedule 'nope'"),
        ({"schedules": {"primary": {"tz": "Mars/Olympus"}}}, "schedules.primary.tz: unknown time zone 'Mars/Olympus'"),
        ({"schedules": {"primary": {"start": "Monday 9am"}}}, "schedules.primary.start: 'Monday 9am' is not a local"),
        ({"schedules": {"primary": {"people": ["U0ANA", "S0X"]}}}, "schedules.primary.people[1]: 'S0X' is not a user"),
        ({"schedules": {"primary": {"every": "0m"}}}, "schedules.primary.every: '0m' is not a duration"),
        ({"schedules": {"primary": {"every": "53w"}}}, "schedules.primary.every: Input should be less than or equal"),
        ({"schedules": {"db primary": {}}}, "schedules.db primary: a schedule's name is letters, digits"),
    ],
)
def test_policy_errors_in_schedules_name_the_path(change: dict[str, Any], problem: str) -> None:
    data = yaml.safe_load(policy(0))
    for key, value in change.items():
        if key == "schedules":
            for name, fields in value.items():
                data["schedules"][name] = data["schedules"].get(name, data["schedules"]["primary"]) | fields
        else:
            data[key][0] |= value[0]
    with pytest.raises(PolicyFileError) as info:
        parse_policy(data)
    assert any(str(p).startswith(problem) for p in info.value.problems), [str(p) for p in info.value.problems]


def home_sections(view: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]


async def test_app_home_shows_a_persons_shifts_now_and_next(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0, secondary_shift=0)) as app:
        ana = home_sections(await open_home(app, slack, "U0ANA"))
        ben = home_sections(await open_home(app, slack, "U0BEN"))
        eve = home_sections(await open_home(app, slack, "U0EVE"))  # on secondary through S0SECOND
        nobody = home_sections(await open_home(app, slack, "U0ADMIN"))

    (mine,) = [s for s in ana if s.startswith(":pager: *Your on-call shifts*")]
    assert mine.startswith(":pager: *Your on-call shifts*\n• *primary*: on call *now*, until <!date^")
    assert "; next from <!date^" in mine  # three days on: ana's next turn
    (bens,) = [s for s in ben if s.startswith(":pager: *Your on-call shifts*")]
    assert bens.startswith(":pager: *Your on-call shifts*\n• *primary*: next from <!date^")
    (eves,) = [s for s in eve if s.startswith(":pager: *Your on-call shifts*")]
    assert eves.startswith(":pager: *Your on-call shifts*\n• *secondary*: next from <!date^")
    assert not any(s.startswith(":pager: *Your on-call shifts*") for s in nobody)


async def test_app_home_shows_admins_each_schedules_week_with_its_gaps(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_user("U0CAL", "cal", "")  # no phone in the profile: cal's shift is a gap
    slack.state.usergroups["S0EMPTY"] = []
    empty = f'  nobody-home: {{people: S0EMPTY, every: 1d, start: "{start_for(0, timedelta(days=1))}"}}'
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0, extra_schedules=empty)) as app:
        view = await open_home(app, slack, "U0ADMIN")

    (week,) = [s for s in home_sections(view) if s.startswith("*On call, the coming week:*")]
    primary, nobody_home, secondary = week.split("\n")[1:]  # gaps first
    assert primary.startswith("• *primary*: <@U0ANA> now, next handoff <!date^")
    assert "— :warning: 2 gaps this week: from <!date^" in primary
    assert "<@U0CAL>: no usable phone in their Slack profile" in primary  # every third day
    assert nobody_home.startswith("• *nobody-home*: nobody now, next handoff <!date^")
    assert nobody_home.endswith("— :warning: 1 gap this week: from " + nobody_home.split(" from ")[1])
    assert nobody_home.endswith(" nobody: nobody is on it")  # the week's shifts with nobody, as one gap
    assert secondary.startswith("• *secondary*: <@U0EVE> now, next handoff <!date^")
    assert secondary.endswith("— :white_check_mark: covered all week")


async def test_app_home_flags_people_without_a_verified_phone_when_phones_must_be_verified(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    verified = policy(0).replace("defaults: {region: US}", "defaults: {region: US, verified_phones: true}")
    async with running_app(slack, fake_d7, tmp_path, policy=verified) as app:
        view = await open_home(app, slack, "U0ADMIN")

    (week,) = [s for s in home_sections(view) if s.startswith("*On call, the coming week:*")]
    assert "<@U0ANA>: phone not verified" in week
    assert "no verified phone: <@U0ANA>, <@U0BEN>, <@U0CAL>" in week
    assert "no verified phone: <@U0DAN>, <@U0EVE>" in week


async def test_app_home_coverage_of_fifty_schedules_stays_within_slacks_view_limits(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_user("U0CAL", "cal", "")  # every hourly rotation has gaps: the longest lines
    start = start_for(0, timedelta(hours=1))
    many = "\n".join(
        f'  team-{i:02d}-database-primary-rotation: {{people: [U0ANA, U0BEN, U0CAL], every: 1h, start: "{start}"}}'
        for i in range(48)
    )
    async with running_app(slack, fake_d7, tmp_path, policy=policy(0, extra_schedules=many)) as app:
        view = await open_home(app, slack, "U0ADMIN")

    assert not slack.refused
    week = [s for s in home_sections(view) if "database-primary-rotation" in s or s.startswith("*On call")]
    assert len(week) == 5
    assert all(len(section) <= 3000 for section in week)
    shown = sum(line.startswith("• *") for section in week for line in section.split("\n"))
    more = re.search(r"…and (\d+) more schedules: `/sms oncall <schedule>` shows one$", week[-1])
    assert more is not None
    assert shown + int(more.group(1)) == 50
