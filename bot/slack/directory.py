"""The Directory port on Slack's Web API: profile phones (``users.info``) and user groups
(``usergroups.users.list``), cached briefly so a burst of sends does not hammer Slack."""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import InputError
from bot.domain.models import Person

DEFAULT_TTL = 60.0
_T = TypeVar("_T")


class _TTLCache(Generic[_T]):
    def __init__(self, ttl: float, max_entries: int = 5000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, _T]] = {}

    def get(self, key: str) -> _T | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, value: _T) -> None:
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, value)


def _person(user: dict[str, Any]) -> Person:
    profile = user.get("profile") or {}
    name = profile.get("display_name") or profile.get("real_name") or user.get("name") or user["id"]
    return Person(
        user_id=user["id"],
        name=name,
        phone=profile.get("phone") or None,
        tz=user.get("tz"),
        is_bot=bool(user.get("is_bot")) and user["id"] != "USLACKBOT",
        deleted=bool(user.get("deleted")),
    )


class SlackDirectory:
    """People and user groups, from Slack."""

    def __init__(self, client: AsyncWebClient, ttl: float = DEFAULT_TTL) -> None:
        self._client = client
        self._people: _TTLCache[Person] = _TTLCache(ttl)
        self._groups: _TTLCache[list[str]] = _TTLCache(ttl)

    async def person(self, user_id: str) -> Person:
        cached = self._people.get(user_id)
        if cached is not None:
            return cached
        try:
            response = await self._client.users_info(user=user_id)
        except SlackApiError as exc:
            if exc.response.get("error") == "user_not_found":
                raise InputError(f"<@{user_id}> is not a member of this workspace") from None
            raise
        person = _person(response["user"])
        self._people.put(user_id, person)
        return person

    async def group_members(self, group_id: str) -> list[str]:
        cached = self._groups.get(group_id)
        if cached is not None:
            return cached
        try:
            response = await self._client.usergroups_users_list(usergroup=group_id)
        except SlackApiError as exc:
            if exc.response.get("error") in ("no_such_subteam", "subteam_not_found"):
                raise InputError(f"<!subteam^{group_id}> is not a user group of this workspace") from None
            raise
        members = list(response.get("users") or [])
        self._groups.put(group_id, members)
        return members
