"""``PhoneNotes`` on Slack: what phones text back, posted where the send that texted them is told (or in a channel),
paced per channel like every post, links never unfurled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.inbound import Unanswered
from bot.domain.ports import CannotTell
from bot.slack import messages
from bot.slack.conversation import ChannelPacer, closed_for_good


class SlackPhoneNotes:
    """Posts a phone's reply (with **Reply…**), a keyword's note, and unreadable bodies' keys to the admin channel."""

    def __init__(self, client: AsyncWebClient, pacer: ChannelPacer | None = None) -> None:
        self._client = client
        self._pacer = pacer or ChannelPacer()

    async def replied(self, channel_id: str, thread_ts: str | None, phone: str, text: str, inbound_id: str) -> str:
        said, blocks = messages.phone_replied(phone, text, inbound_id)
        return await self._post(channel_id, thread_ts, said, blocks)

    async def keyword(self, channel_id: str, thread_ts: str | None, phone: str, word: str, said: Unanswered) -> str:
        text = messages.phone_keyword(phone, word, said)
        return await self._post(channel_id, thread_ts, text, [messages.section(text)])

    async def unreadable(self, channel_id: str, why: str, keys: Sequence[str]) -> None:
        text = messages.inbound_unreadable(why, keys)
        await self._post(channel_id, None, text, [messages.section(text)])

    async def _post(self, channel_id: str, thread_ts: str | None, text: str, blocks: list[dict[str, Any]]) -> str:
        """Post (joining a public channel the bot is not in, once); ``CannotTell`` when Slack will never take it."""
        try:
            return await self._once(channel_id, thread_ts, text, blocks)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error == "not_in_channel" and await self._join(channel_id):
                return await self._post_or_give_up(channel_id, thread_ts, text, blocks)
            if closed_for_good(exc):
                raise CannotTell(f"cannot post in {channel_id} ({error})") from exc
            raise

    async def _post_or_give_up(
        self, channel_id: str, thread_ts: str | None, text: str, blocks: list[dict[str, Any]]
    ) -> str:
        try:
            return await self._once(channel_id, thread_ts, text, blocks)
        except SlackApiError as exc:
            if closed_for_good(exc):
                raise CannotTell(f"cannot post in {channel_id} ({exc.response.get('error')})") from exc
            raise

    async def _join(self, channel_id: str) -> bool:
        try:
            await self._client.conversations_join(channel=channel_id)
        except SlackApiError:
            return False
        return True

    async def _once(self, channel_id: str, thread_ts: str | None, text: str, blocks: list[dict[str, Any]]) -> str:
        response = await self._pacer.run(
            channel_id,
            lambda: self._client.chat_postMessage(
                channel=channel_id,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return str(response["ts"])
