"""On-call rotations, the pure part: which shift a moment falls in, when each shift starts, and who is on call then
(the rotation's person, or the person an override from Slack put there).

A rotation hands off every ``every`` from ``start`` (local wall-clock time in its zone). Shifts of whole days keep
the local time across a DST change: a daily 09:00 handoff stays at 09:00 local, the shift that spans the change is
an hour shorter or longer. A handoff at a local time that does not exist that day (in the spring gap) happens at
the same distance after the gap's start (02:30 in a 02:00 → 03:00 gap is 03:30); one that exists twice happens at
the first. Shorter shifts are a fixed length of time. Before ``start``, the first person is on call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

DAY = timedelta(days=1)
START_FORMAT = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class Rotation:
    """When a schedule's shifts start: ``start`` is the local wall-clock time of the first handoff."""

    every: timedelta
    start: datetime  # naive, local time in ``zone``
    zone: ZoneInfo

    @classmethod
    def of(cls, every: timedelta, start: str, tz: str = "UTC") -> Rotation:
        """``start`` as the policy writes it ("YYYY-MM-DD HH:MM"); ``ValueError`` when it is not one."""
        return cls(every, datetime.strptime(start, START_FORMAT), ZoneInfo(tz))

    @property
    def by_days(self) -> bool:
        """Shifts of whole days, which keep the local wall-clock time."""
        return self.every % DAY == timedelta(0)

    def handoff(self, shift: int) -> datetime:
        """When shift number ``shift`` (0: the first) starts, in UTC."""
        if self.by_days:
            return _utc(self.start + shift * self.every, self.zone)
        return _utc(self.start, self.zone) + shift * self.every

    def shift_at(self, at: datetime) -> int:
        """The number of the shift ``at`` falls in; 0 before the first handoff."""
        first = self.handoff(0)
        if at < first:
            return 0
        # Whole days are counted on the local calendar (then set right around a DST change below).
        elapsed = at.astimezone(self.zone).replace(tzinfo=None) - self.start if self.by_days else at - first
        shift = max(0, elapsed // self.every)
        while self.handoff(shift + 1) <= at:
            shift += 1
        while shift > 0 and self.handoff(shift) > at:
            shift -= 1
        return shift

    def next_handoff(self, at: datetime) -> datetime:
        """The first handoff after ``at``."""
        return self.handoff(self.shift_at(at) + 1)


def _utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local time in ``zone`` as UTC. ``fold=0`` reads a time in the spring gap with the offset before it
    (so it lands as far past the gap's start as it was written past it) and a time that happens twice as the first."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class Override:
    """``user_id`` on call for ``schedule`` from ``starts`` until ``ends`` (taken or given from Slack by ``by``)."""

    schedule: str
    user_id: str
    starts: datetime
    ends: datetime
    by: str

    def covers(self, at: datetime) -> bool:
        return self.starts <= at < self.ends


@dataclass(frozen=True)
class Shift:
    """Who is on call from ``starts`` until ``ends``; ``override``: the override that put them there."""

    user_id: str | None  # None: the schedule has nobody (an empty user group)
    starts: datetime
    ends: datetime
    override: Override | None = None


def rotation_person(rotation: Rotation, people: Sequence[str], at: datetime) -> str | None:
    """Whose shift of the rotation ``at`` falls in (None when there are no people)."""
    if not people:
        return None
    return people[rotation.shift_at(at) % len(people)]


def on_call(rotation: Rotation, people: Sequence[str], at: datetime, override: Override | None = None) -> Shift:
    """Who is on call at ``at``, and until when: the override's person while it covers ``at``, else the rotation's
    person until its next handoff (or until the override starts, when that comes first)."""
    if override is not None and override.covers(at):
        return Shift(override.user_id, override.starts, override.ends, override)
    shift = rotation.shift_at(at)
    ends = rotation.handoff(shift + 1)
    if override is not None and at < override.starts < ends:
        ends = override.starts
    return Shift(rotation_person(rotation, people, at), min(at, rotation.handoff(shift)), ends)


def shifts(
    rotation: Rotation, people: Sequence[str], at: datetime, count: int, override: Override | None = None
) -> list[Shift]:
    """The shift ``at`` falls in and those after it, ``count`` in all (an override taking its part of them)."""
    out = [on_call(rotation, people, at, override)]
    while len(out) < count:
        when = out[-1].ends
        out.append(replace(on_call(rotation, people, when, override), starts=when))
    return out


def in_force(overrides: Sequence[Override], at: datetime) -> Override | None:
    """The override in force at ``at`` of one schedule's: the latest to start of those covering it."""
    covering = [o for o in overrides if o.covers(at)]
    return max(covering, key=lambda o: o.starts) if covering else None


@dataclass(frozen=True)
class Handoff:
    """A person's stint on a schedule (on call until ``ends``) as its noticing goes: the DM sent (``noticed``), the
    schedule's user group set to them (``group_set``), after ``attempts`` tries that left something undone."""

    id: str
    schedule: str
    user_id: str
    ends: datetime
    noticed: bool = False
    group_set: bool = False
    attempts: int = 0
