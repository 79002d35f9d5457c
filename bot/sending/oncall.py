"""Who is on call for the policy's schedules: the rotation (its people, or a user group's members in Slack's order)
with the overrides taken or given from Slack (``/sms oncall take|give``), kept in the database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.domain.clock import Clock, utc_now
from bot.domain.oncall import Override, Shift, on_call, shifts
from bot.domain.policy import Policy
from bot.domain.ports import Directory, OnCallOverrides

# ``/sms oncall <schedule>``: how many shifts it lists.
SHIFTS_LISTED = 6
# App Home: the most shifts of one schedule looked at ahead (the coming week of a short rotation is cut there).
SHIFTS_AHEAD = 50


@dataclass(frozen=True)
class Duty:
    """Who is on call for ``schedule`` now, and until when."""

    schedule: str
    shift: Shift
    unread: str | None = None  # the user group whose members could not be read (then ``shift`` has nobody)


@dataclass(frozen=True)
class Timeline:
    """A schedule's people in turn and its shifts from now on (``unread``: its user group, when Slack did not give
    its members: then ``people`` is empty)."""

    schedule: str
    people: tuple[str, ...]
    shifts: tuple[Shift, ...]
    unread: str | None = None


class OnCall:
    """The schedules of the policy, as Slack and the overrides kept in the database make them."""

    def __init__(
        self, policy: Policy, directory: Directory, overrides: OnCallOverrides | None, clock: Clock = utc_now
    ) -> None:
        self.policy = policy
        self.directory = directory
        self.overrides = overrides  # None: no overrides kept (the rotation alone)
        self.clock = clock
        self.changed = asyncio.Event()  # set when an override is kept here (the handoff watcher looks at once)

    def knows(self, name: str) -> bool:
        return name in self.policy.schedules

    async def people(self, name: str) -> list[str]:
        """The schedule's people in turn: as the policy lists them, or its user group's members as Slack does."""
        schedule = self.policy.schedules[name]
        if schedule.group is not None:
            return await self.directory.group_members(schedule.group)
        return list(schedule.people)

    async def _in_force(self, names: list[str], at: datetime) -> dict[str, Override]:
        return await self.overrides.in_force(names, at) if self.overrides is not None and names else {}

    async def shift(self, name: str, at: datetime) -> Shift:
        """Who is on call for schedule ``name`` at ``at`` (a moment past gives the same answer every time)."""
        people, overrides = await asyncio.gather(self.people(name), self._in_force([name], at))
        return on_call(self.policy.schedules[name].rotation, people, at, overrides.get(name))

    async def board(self) -> list[Duty]:
        """Every schedule with who is on call now and until when (``/sms oncall`` answers within Slack's 3 s)."""
        return [Duty(t.schedule, t.shifts[0], t.unread) for t in await self.ahead(timedelta(0))]

    async def ahead(self, until: timedelta, most: int = SHIFTS_AHEAD) -> list[Timeline]:
        """Every schedule's people and its shifts from now until ``until`` from now (at most ``most`` of them):
        one read of the overrides, each user group asked once (one that fails leaves its schedule's people
        unknown, the others are still given)."""
        at = self.clock()
        names = list(self.policy.schedules)
        groups = list(dict.fromkeys(g for s in self.policy.schedules.values() if (g := s.group) is not None))
        members, overrides = await asyncio.gather(
            asyncio.gather(*(self.directory.group_members(g) for g in groups), return_exceptions=True),
            self._in_force(names, at),
        )
        of_group = dict(zip(groups, members, strict=True))
        out = []
        for name, schedule in self.policy.schedules.items():
            found: Sequence[str] | BaseException = (
                schedule.people if schedule.group is None else of_group[schedule.group]
            )
            if isinstance(found, BaseException) and not isinstance(found, Exception):
                raise found
            people = [] if isinstance(found, Exception) else list(found)
            rotation, override = schedule.rotation, overrides.get(name)
            listed = [on_call(rotation, people, at, override)]
            while len(listed) < most and listed[-1].ends < at + until:
                when = listed[-1].ends
                listed.append(replace(on_call(rotation, people, when, override), starts=when))
            unread = schedule.group if isinstance(found, Exception) else None
            out.append(Timeline(name, tuple(people), tuple(listed), unread))
        return out

    async def upcoming(self, name: str, count: int = SHIFTS_LISTED) -> list[Shift]:
        """The shift now and the next ones of schedule ``name``."""
        at = self.clock()
        people, overrides = await asyncio.gather(self.people(name), self._in_force([name], at))
        return shifts(self.policy.schedules[name].rotation, people, at, count, overrides.get(name))

    async def may_change(self, name: str, user_id: str, admin: bool) -> bool:
        """Who may take or give a schedule's on-call: its people, and the policy's admins."""
        return admin or user_id in await self.people(name)

    async def put(self, name: str, user_id: str, by: str, duration: timedelta | None) -> Override:
        """``user_id`` on call for ``name`` from now, for ``duration`` (None: until the rotation's next handoff),
        replacing an override running now. Kept before it is answered."""
        if self.overrides is None:
            raise RuntimeError("no overrides are kept")
        at = self.clock()
        ends = at + duration if duration is not None else self.policy.schedules[name].rotation.next_handoff(at)
        override = Override(name, user_id, at, ends, by)
        await self.overrides.replace(override)
        self.changed.set()
        return override
