"""``HandoffNotices`` on Slack: the incoming person told in the app's DM with them, and a schedule's user group set
to whoever is on call (``usergroups.users.update``, scope ``usergroups:write``, only for schedules that name one)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.oncall import Shift
from bot.slack import messages


class SlackHandoffNotices:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def tell(self, schedule: str, shift: Shift) -> None:
        if shift.user_id is None:
            return
        text = messages.handoff_notice(schedule, shift)
        await self._client.chat_postMessage(channel=shift.user_id, text=text, blocks=[messages.section(text)])

    async def set_group(self, usergroup: str, user_id: str) -> None:
        await self._client.usergroups_users_update(usergroup=usergroup, users=[user_id])
