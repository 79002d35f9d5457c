"""The Directory port on Slack's Web API: profile phones (``users.info``), user groups
(``usergroups.users.list``), channel names (``conversations.info``) and message links (``chat.getPermalink``),
cached briefly so a burst of sends does not hammer Slack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import InputError, ServiceUnavailable
from bot.domain.models import Person
from bot.slack import messages

DEFAULT_TTL = 60.0
MAX_MEMBER_PAGES = 20  # conversations.members pages of 1,000: a channel of 20,000 people is checked, no bigger
_T = TypeVar("_T")


class _SingleFlightCache(Generic[_T]):
    """Answers kept for ``ttl`` seconds; concurrent misses for one key share a single look-up.

    Without the sharing, a burst of 200 commands made 68 ``usergroups.users.list`` calls for one group.
    The look-up runs as a task of its own: a caller that stops waiting (a form's budget ran out) neither cancels it
    for the others nor wastes it, since the answer still lands in the cache for the next one (the outbox's check).
    Failures are not kept: the next caller asks again.
    """

    def __init__(self, ttl: float, max_entries: int = 5000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, _T]] = {}
        self._pending: dict[str, asyncio.Task[_T]] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[_T]]) -> _T:
        item = self._items.get(key)
        if item is not None and item[0] >= time.monotonic():
            return item[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.create_task(self._fetch(key, fetch), name=f"look-up {key}")
            pending.add_done_callback(_retrieved)
            self._pending[key] = pending
        return await asyncio.shield(pending)

    async def _fetch(self, key: str, fetch: Callable[[], Awaitable[_T]]) -> _T:
        try:
            value = await fetch()
        finally:
            del self._pending[key]
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, value)
        return value


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A look-up whose callers all stopped waiting fails unseen, not with "exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


def unavailable(method: str, exc: BaseException) -> ServiceUnavailable:
    """A look-up Slack did not answer, in plain words (and what an admin can do, when there is something)."""
    if isinstance(exc, SlackApiError):
        error = str(exc.response.get("error") or f"HTTP {exc.response.status_code}")
        if error == "missing_scope":
            needed = exc.response.get("needed") or "a scope"
            return ServiceUnavailable(
                f"Slack refused {method} (missing_scope): an admin must add {needed} to the app and reinstall it"
            )
        status = exc.response.status_code
        return ServiceUnavailable(f"Slack's {method} failed ({error if status == 200 else f'HTTP {status}'})")
    return ServiceUnavailable(f"Slack's {method} did not answer ({type(exc).__name__})")


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
        team_id=user.get("team_id") or None,
        enterprise_id=(user.get("enterprise_user") or {}).get("enterprise_id") or None,
    )


class SlackDirectory:
    """People and user groups, from Slack."""

    def __init__(self, client: AsyncWebClient, ttl: float = DEFAULT_TTL) -> None:
        self._client = client
        self._people: _SingleFlightCache[Person] = _SingleFlightCache(ttl)
        self._groups: _SingleFlightCache[list[str]] = _SingleFlightCache(ttl)
        self._channels: _SingleFlightCache[str] = _SingleFlightCache(max(ttl, 600.0))  # names rarely change
        self._members: _SingleFlightCache[frozenset[str] | None] = _SingleFlightCache(ttl)

    async def person(self, user_id: str) -> Person:
        async def fetch() -> Person:
            try:
                response = await self._client.users_info(user=user_id)
            except SlackApiError as exc:
                if exc.response.get("error") == "user_not_found":
                    raise InputError(messages.not_in_workspace(user_id)) from None
                raise unavailable("users.info", exc) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise unavailable("users.info", exc) from None
            return _person(response["user"])

        return await self._people.get(user_id, fetch)

    async def group_members(self, group_id: str) -> list[str]:
        async def fetch() -> list[str]:
            try:
                response = await self._client.usergroups_users_list(usergroup=group_id)
            except SlackApiError as exc:
                if exc.response.get("error") in ("no_such_subteam", "subteam_not_found"):
                    raise InputError(messages.not_a_user_group(group_id)) from None
                raise unavailable("usergroups.users.list", exc) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise unavailable("usergroups.users.list", exc) from None
            return list(response.get("users") or [])

        return await self._groups.get(group_id, fetch)

    async def channel_name(self, channel_id: str) -> str:
        async def fetch() -> str:
            response = await self._client.conversations_info(channel=channel_id)
            return str(response["channel"].get("name") or channel_id)

        return await self._channels.get(channel_id, fetch)

    async def is_member(self, channel_id: str, user_id: str) -> bool | None:
        """Whether the user is in the channel; None when Slack does not show the bot its members (a private
        channel or DM the bot is not in: only its members can see, and so pick, it)."""
        members = await self._members.get(channel_id, lambda: self._fetch_members(channel_id))
        return None if members is None else user_id in members

    async def _fetch_members(self, channel_id: str) -> frozenset[str] | None:
        members: set[str] = set()
        cursor: str | None = None
        for _ in range(MAX_MEMBER_PAGES):
            try:
                response = await self._client.conversations_members(channel=channel_id, limit=1000, cursor=cursor)
            except SlackApiError as exc:
                if exc.response.get("error") in ("channel_not_found", "method_not_supported_for_channel_type"):
                    return None
                raise unavailable("conversations.members", exc) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise unavailable("conversations.members", exc) from None
            members.update(response.get("members") or [])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return frozenset(members)
        raise ServiceUnavailable(f"<#{channel_id}> has more than {MAX_MEMBER_PAGES * 1000} members to check")

    async def permalink(self, channel_id: str, ts: str) -> str:
        response = await self._client.chat_getPermalink(channel=channel_id, message_ts=ts)
        return str(response["permalink"])
