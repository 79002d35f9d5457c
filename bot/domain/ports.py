"""What the service needs from the outside: a message gateway (D7 or its dry-run twin) and a directory of people."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from bot.domain.errors import D7Error
from bot.domain.models import Person, SendResult, StatusReport, Via

# Called before the client waits to retry: the error, the attempt that failed (1-based) and the delay.
RetryHook = Callable[[D7Error, int, float], Awaitable[None]]


class MessageGateway(Protocol):
    """Sends texts and looks up their status; raises the ``D7Error`` tree on failure."""

    @property
    def dry_run(self) -> bool:
        """True when nothing really leaves the building."""
        ...

    async def send_sms(
        self,
        recipients: Sequence[str],
        content: str,
        *,
        originator: str | None = None,
        report_url: str | None = None,
        schedule_time: datetime | None = None,
        on_retry: RetryHook | None = None,
    ) -> SendResult: ...

    async def send_whatsapp(
        self,
        recipients: Sequence[str],
        body: str,
        *,
        originator: str,
        cust_ref: str | None = None,
        report_url: str | None = None,
        schedule_time: datetime | None = None,
        preview_url: bool = False,
        on_retry: RetryHook | None = None,
    ) -> SendResult: ...

    async def get_status(self, request_id: str, via: Via) -> StatusReport: ...

    async def aclose(self) -> None: ...


class Directory(Protocol):
    """Who people are (Slack users and user groups) and where things are (channel names, message links)."""

    async def person(self, user_id: str) -> Person:
        """The user's name and profile phone; raises ``InputError`` for an unknown user."""
        ...

    async def group_members(self, group_id: str) -> list[str]:
        """User IDs in a user group (S…); raises ``InputError`` for an unknown group."""
        ...

    async def channel_name(self, channel_id: str) -> str:
        """The channel's name, without ``#``."""
        ...

    async def permalink(self, channel_id: str, ts: str) -> str:
        """A link to the message posted at ``ts`` in the channel."""
        ...
