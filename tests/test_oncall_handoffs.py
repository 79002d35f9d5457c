"""On-call handoffs (issue 29, item 3), end to end against the strict fake Slack: at each handoff the incoming
person gets a DM saying until when they are on call, and the schedule's user group is set to them
(``usergroups.users.update``, only when ``usergroup`` is configured and the app has ``usergroups:write``). Each
stint is noticed once, across restarts and replicas; what Slack refused is tried again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.oncall import Shift
from bot.domain.policy import parse_policy
from bot.domain.ports import Directory
from bot.sending.handoffs import HandoffWatcher
from bot.sending.oncall import OnCall
from bot.storage import Storage
from bot.storage.database import LOCK_WAIT, Database
from bot.storage.schema import oncall_handoffs
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, running_app
from tests.memory import FakeClock
from tests.test_oncall import PHONES, oncall, start_for
from tests.test_storage import storage

NOTICE = ":pager: You are on call for *{schedule}* from now until <!date^"


def policy(every: str = "1d", shift_length: timedelta = timedelta(days=1), **schedule: Any) -> str:
    extra = "".join(f", {key}: {value}" for key, value in schedule.items())
    start = start_for(0, shift_length)
    return f"""
version: 1
defaults: {{region: US}}
admins: [U0ADMIN]
senders:
  ops-sms: {{via: sms, originator: OpsAlert}}
schedules:
  primary: {{people: [U0ANA, U0BEN], every: {every}, start: "{start}"{extra}}}
  quiet: {{people: [U0CAL], every: 1d, start: "{start}"}}
"""


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    for user_id, phone in PHONES.items():
        slack.add_user(user_id, user_id.removeprefix("U0").lower(), phone)
    slack.add_user("U0ADMIN", "admin", "+14155550199")
    slack.state.usergroups["S0PRIMARY"] = ["U0CAL"]
    return slack


def dms(slack: FakeSlack) -> list[tuple[str, str]]:
    return [(p["channel"], p["text"]) for p in slack.of("chat.postMessage") if p["channel"].startswith("U")]


def group_updates(slack: FakeSlack) -> list[str]:
    return [str(p["users"]) for p in slack.of("usergroups.users.update")]


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 (the fake Slack has no signal to wait on)
            await asyncio.sleep(0.02)


async def handoff_rows(app: App) -> list[Any]:
    async with app.relay.storage.database.connect() as conn:
        return list((await conn.execute(sa.select(oncall_handoffs).order_by(oncall_handoffs.c.ends_at))).all())


async def test_each_handoff_dms_the_incoming_person_once_and_sets_the_user_group(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.grant("usergroups:write")
    rotation = policy("2s", timedelta(seconds=2), notify="true", usergroup="S0PRIMARY")
    async with running_app(slack, fake_d7, tmp_path, policy=rotation) as app:
        await until(lambda: len(dms(slack)) >= 3)  # the stint at start, then two handoffs 2 s apart
        await asyncio.sleep(0.3)
        rows = await handoff_rows(app)

    told = dms(slack)
    people = [user for user, _ in told]
    assert people[:3] in (["U0ANA", "U0BEN", "U0ANA"], ["U0BEN", "U0ANA", "U0BEN"])  # in turn, each stint once
    assert all(text.startswith(NOTICE.format(schedule="primary")) for _, text in told)
    assert "`/sms oncall primary` shows the next shifts" in told[0][1]
    assert group_updates(slack)[:3] == people[:3]  # @primary-oncall follows
    assert all(r.noticed_at is not None and r.group_set_at is not None for r in rows[: len(told)])
    assert "U0CAL" not in people  # a schedule without notify or usergroup is not watched


async def test_an_override_given_is_noticed_at_once_and_a_take_sets_the_group_without_a_dm(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.grant("usergroups:write")
    async with running_app(slack, fake_d7, tmp_path, policy=policy(notify="true", usergroup="S0PRIMARY")) as app:
        await until(lambda: len(dms(slack)) == 1)
        assert dms(slack)[0][0] == "U0ANA"
        await oncall(app, slack, "give primary <@U0BEN|ben> 1h", "U0ADMIN")
        await until(lambda: len(dms(slack)) == 2)
        given = dms(slack)[1]
        await oncall(app, slack, "take primary 2h", "U0ANA")  # ana takes it back herself: she was answered
        await until(lambda: group_updates(slack)[-1:] == ["U0ANA"] and len(group_updates(slack)) == 3)
        await asyncio.sleep(0.3)

    assert given[0] == "U0BEN"
    assert given[1].startswith(NOTICE.format(schedule="primary"))
    assert "(given to you by <@U0ADMIN>)" in given[1]
    assert [user for user, _ in dms(slack)] == ["U0ANA", "U0BEN"]
    assert group_updates(slack) == ["U0ANA", "U0BEN", "U0ANA"]
    assert slack.state.usergroups["S0PRIMARY"] == ["U0ANA"]


async def test_a_restart_does_not_tell_anyone_twice(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> None:
    rotation = policy(notify="true")
    async with running_app(slack, fake_d7, tmp_path, policy=rotation):
        await until(lambda: len(dms(slack)) == 1)
    async with running_app(slack, fake_d7, tmp_path, policy=rotation) as app:
        assert app.relay.handoffs is not None
        await app.relay.handoffs.round()
        await asyncio.sleep(0.3)

    assert [user for user, _ in dms(slack)] == ["U0ANA"]


async def test_a_user_group_slack_refuses_is_set_later_and_the_dm_is_not_repeated(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(slack, fake_d7, tmp_path, policy=policy(notify="true", usergroup="S0PRIMARY")) as app:
        await until(lambda: len(dms(slack)) == 1)
        await until(lambda: len(slack.of("usergroups.users.update")) == 1)
        await asyncio.sleep(0.2)
        (row,) = await handoff_rows(app)
        assert (row.noticed_at is not None, row.group_set_at, row.attempts) == (True, None, 1)
        assert slack.state.usergroups["S0PRIMARY"] == ["U0CAL"]  # refused: missing_scope

        slack.grant("usergroups:write")  # the admin reinstalled the app with the scope
        async with app.relay.storage.database.begin() as conn:  # as if its retry time had come
            await conn.execute(oncall_handoffs.update().values(claimed_until=datetime.now(UTC) - timedelta(1)))
        assert app.relay.handoffs is not None
        await app.relay.handoffs.round()

    assert slack.state.usergroups["S0PRIMARY"] == ["U0ANA"]
    assert [user for user, _ in dms(slack)] == ["U0ANA"]
    assert "user group S0PRIMARY failed (SlackApiError" in caplog.text
    assert "missing_scope" in caplog.text


class Told:
    def __init__(self) -> None:
        self.told: list[tuple[str, str | None]] = []

    async def tell(self, schedule: str, shift: Shift) -> None:
        await asyncio.sleep(0.01)
        self.told.append((schedule, shift.user_id))

    async def set_group(self, usergroup: str, user_id: str) -> None:
        raise AssertionError("no user group configured")


async def test_two_replicas_notice_a_stint_once(engine: AsyncEngine) -> None:
    rules = parse_policy(
        {
            "version": 1,
            "defaults": {"region": "US"},
            "schedules": {"primary": {"people": ["U0ANA"], "every": "1d", "start": "2026-01-05 09:00", "notify": True}},
        }
    )
    told = Told()
    replicas = [storage(engine) for _ in range(2)]
    nobody = cast(Directory, None)  # listed people: no user group to look up
    watchers = [HandoffWatcher(rules, OnCall(rules, nobody, s.oncall), s.handoffs, told) for s in replicas]
    await asyncio.gather(*(w.round() for w in watchers), *(w.round() for w in watchers))

    assert told.told == [("primary", "U0ANA")]


class CountedWrites(Database):
    """The database, counting the write transactions opened (on SQLite each takes the one write lock)."""

    opened = 0

    def begin(self, intake: bool = False, within: float = LOCK_WAIT) -> Any:
        self.opened += 1
        return super().begin(intake, within)


async def test_a_schedule_that_did_not_change_costs_no_write_and_a_restart_still_notices_a_handoff(
    engine: AsyncEngine,
) -> None:
    rules = parse_policy(
        {
            "version": 1,
            "defaults": {"region": "US"},
            "schedules": {
                "primary": {"people": ["U0ANA", "U0BEN"], "every": "1d", "start": "2026-01-05 09:00", "notify": True}
            },
        }
    )
    clock = FakeClock(datetime(2026, 1, 6, 8, 0, tzinfo=UTC))  # ana's stint, until 09:00
    told, db = Told(), CountedWrites(engine)

    def watcher() -> HandoffWatcher:  # each call: a process of its own (nothing of the last one remembered)
        stores = Storage.on(db)
        return HandoffWatcher(rules, OnCall(rules, cast(Directory, None), stores.oncall), stores.handoffs, told, clock)

    first = watcher()
    await first.round()
    noticed = db.opened  # the stint inserted, then kept as noticed
    assert (told.told, noticed) == ([("primary", "U0ANA")], 2)
    for _ in range(5):
        clock.advance(timedelta(minutes=1))
        await first.round()
    assert db.opened == noticed

    restarted = watcher()
    await restarted.round()
    assert db.opened == noticed  # the database says the stint was noticed: nobody told twice, nothing written

    clock.advance(timedelta(hours=1))  # ben's stint began while the first process was gone
    await restarted.round()
    await restarted.round()
    assert told.told == [("primary", "U0ANA"), ("primary", "U0BEN")]
    assert db.opened == 2 * noticed
