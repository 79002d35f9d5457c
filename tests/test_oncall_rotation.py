"""The rotation math (``bot.domain.oncall``), table-driven, with real time zones: who is on call at a moment, when
handoffs are (whole days keep local wall-clock time across DST), and how an override takes its part."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.domain.oncall import Override, Rotation, Shift, on_call, rotation_person, shifts
from bot.storage import Storage

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
PEOPLE = ["U0ANA", "U0BEN", "U0CAL"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str, zone: ZoneInfo) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone).astimezone(UTC)


@pytest.mark.parametrize(
    ("every", "start", "tz", "at", "person"),
    [
        # before the first handoff, and at it: the first person
        ("1w", "2026-12-07 09:00", "Europe/London", "2026-12-01 00:00", "U0ANA"),
        ("1w", "2026-12-07 09:00", "Europe/London", "2026-12-07 09:00", "U0ANA"),
        # shifts 1, 2, 3 and round again
        ("1w", "2026-12-07 09:00", "Europe/London", "2026-12-14 08:59", "U0ANA"),
        ("1w", "2026-12-07 09:00", "Europe/London", "2026-12-14 09:00", "U0BEN"),
        ("1w", "2026-12-07 09:00", "Europe/London", "2026-12-21 09:00", "U0CAL"),
        ("1w", "2026-12-07 09:00", "Europe/London", "2026-12-28 09:00", "U0ANA"),
        # a daily 09:00 London handoff stays 09:00 local after the clocks go forward (29 March 2026) and back
        ("1d", "2026-03-27 09:00", "Europe/London", "2026-03-29 08:59", "U0BEN"),  # shift 1, 09:00 GMT on the 28th
        ("1d", "2026-03-27 09:00", "Europe/London", "2026-03-29 09:00", "U0CAL"),  # shift 2, 09:00 BST
        ("1d", "2026-03-27 09:00", "Europe/London", "2026-03-30 08:59", "U0CAL"),
        ("1d", "2026-03-27 09:00", "Europe/London", "2026-03-30 09:00", "U0ANA"),  # shift 3
        ("1d", "2026-10-23 09:00", "Europe/London", "2026-10-25 08:59", "U0BEN"),  # 25th: the clocks went back
        ("1d", "2026-10-23 09:00", "Europe/London", "2026-10-25 09:00", "U0CAL"),
        ("1d", "2026-10-23 09:00", "Europe/London", "2026-10-26 09:00", "U0ANA"),
        # hours are hours: 12h shifts from midnight New York, the clocks going back at 02:00, hand off at 11:00 EST
        ("12h", "2026-11-01 00:00", "America/New_York", "2026-11-01 10:59", "U0ANA"),
        ("12h", "2026-11-01 00:00", "America/New_York", "2026-11-01 11:00", "U0BEN"),
        ("12h", "2026-11-01 00:00", "America/New_York", "2026-11-01 22:59", "U0BEN"),
        ("12h", "2026-11-01 00:00", "America/New_York", "2026-11-01 23:00", "U0CAL"),
        # UTC by default, minutes too
        ("30m", "2026-01-01 00:00", "UTC", "2026-01-01 01:29", "U0CAL"),
    ],
)
def test_who_is_on_call_at_a_local_moment(every: str, start: str, tz: str, at: str, person: str) -> None:
    units = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
    rotation = Rotation.of(timedelta(**{units[every[-1]]: int(every[:-1])}), start, tz)
    assert rotation_person(rotation, PEOPLE, local(at, ZoneInfo(tz))) == person


@pytest.mark.parametrize(
    ("start", "tz", "shift", "handoff_local"),
    [
        ("2026-03-27 09:00", "Europe/London", 1, "2026-03-28 09:00+00:00"),
        ("2026-03-27 09:00", "Europe/London", 2, "2026-03-29 09:00+01:00"),  # after the change: still 09:00
        ("2026-03-27 09:00", "Europe/London", 3, "2026-03-30 09:00+01:00"),
        ("2026-10-23 09:00", "Europe/London", 3, "2026-10-26 09:00+00:00"),
        ("2026-03-06 09:00", "America/New_York", 3, "2026-03-09 09:00-04:00"),  # US change: 8 March
        ("2026-03-28 01:30", "Europe/London", 1, "2026-03-29 02:30+01:00"),  # in the gap: moved on by it
        ("2026-10-24 01:30", "Europe/London", 1, "2026-10-25 01:30+01:00"),  # twice that day: the first
    ],
)
def test_daily_handoffs_keep_the_local_wall_clock_time_across_dst(
    start: str, tz: str, shift: int, handoff_local: str
) -> None:
    rotation = Rotation.of(timedelta(days=1), start, tz)
    handoff = rotation.handoff(shift)
    assert handoff == datetime.fromisoformat(handoff_local)
    assert rotation.shift_at(handoff) == shift
    assert rotation.shift_at(handoff - timedelta(seconds=1)) == shift - 1
    assert rotation.next_handoff(handoff - timedelta(seconds=1)) == handoff


def test_the_shift_spanning_the_change_is_an_hour_shorter_and_every_moment_is_in_exactly_one_shift() -> None:
    rotation = Rotation.of(timedelta(days=1), "2026-03-27 09:00", "Europe/London")
    assert rotation.handoff(2) - rotation.handoff(1) == timedelta(hours=23)
    at = rotation.handoff(0)
    while at < rotation.handoff(6):
        k = rotation.shift_at(at)
        assert rotation.handoff(k) <= at < rotation.handoff(k + 1)
        at += timedelta(minutes=17)


def test_an_override_takes_effect_at_once_ends_on_time_and_the_rotation_resumes() -> None:
    rotation = Rotation.of(timedelta(weeks=1), "2026-12-07 09:00", "Europe/London")
    taken = Override("db", "U0CAL", utc("2026-12-08 10:00"), utc("2026-12-08 12:00"), "U0CAL")
    assert on_call(rotation, PEOPLE, utc("2026-12-08 09:59"), taken) == Shift(
        "U0ANA", utc("2026-12-07 09:00"), utc("2026-12-08 10:00")
    )
    assert on_call(rotation, PEOPLE, utc("2026-12-08 10:00"), taken).user_id == "U0CAL"
    assert on_call(rotation, PEOPLE, utc("2026-12-08 11:59"), taken).ends == utc("2026-12-08 12:00")
    assert on_call(rotation, PEOPLE, utc("2026-12-08 12:00"), taken).user_id == "U0ANA"
    listed = shifts(rotation, PEOPLE, utc("2026-12-08 11:00"), 3, taken)
    assert [(s.user_id, s.starts, s.ends) for s in listed] == [
        ("U0CAL", utc("2026-12-08 10:00"), utc("2026-12-08 12:00")),
        ("U0ANA", utc("2026-12-08 12:00"), utc("2026-12-14 09:00")),
        ("U0BEN", utc("2026-12-14 09:00"), utc("2026-12-21 09:00")),
    ]


def test_nobody_is_on_call_for_an_empty_rotation() -> None:
    rotation = Rotation.of(timedelta(days=1), "2026-12-07 09:00")
    assert on_call(rotation, [], utc("2026-12-08 00:00")).user_id is None


async def test_the_database_keeps_overrides_as_history_a_replaced_one_cut_short(tmp_path: Path) -> None:
    async with await Storage.open(f"sqlite:///{tmp_path / 'bot.db'}") as storage:
        store = storage.oncall
        first = Override("db", "U0BEN", utc("2026-12-08 10:00"), utc("2026-12-08 18:00"), "U0BEN")
        await store.replace(first)
        await store.replace(Override("db", "U0CAL", utc("2026-12-08 12:00"), utc("2026-12-08 13:00"), "U0ADMIN"))

        cut_short = replace(first, ends=utc("2026-12-08 12:00"))
        assert await store.in_force(["db", "web"], utc("2026-12-08 11:00")) == {"db": cut_short}  # the past: as it was
        assert (await store.in_force(["db"], utc("2026-12-08 12:30")))["db"].user_id == "U0CAL"
        assert await store.in_force(["db"], utc("2026-12-08 14:00")) == {}  # the earlier take ended when replaced
        assert await storage.prune(utc("2026-12-09 00:00")) == 0
        assert await store.in_force(["db"], utc("2026-12-08 11:00")) == {}
