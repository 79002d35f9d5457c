"""Telling one command's story in Slack: refusals to the requester, a parent message, results in its thread.

When the bot cannot post in the channel it joins it if it is public; otherwise (private channel, DM) the whole
story goes to the requester through the command's ``response_url``, so no result is lost.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain.errors import D7Error
from bot.service import Outcome, PreparedSend, Refusal
from bot.slack import messages

log = logging.getLogger("bot.slack")

# Errors that mean "this channel is closed to the bot", not "Slack is broken".
_CANNOT_POST = frozenset(
    {"not_in_channel", "channel_not_found", "is_archived", "restricted_action", "cannot_reply_to_message"}
)
_CANNOT_JOIN = frozenset(
    {"method_not_supported_for_channel_type", "channel_not_found", "is_archived", "missing_scope", "is_private"}
)


class SlackCommandConversation:
    """The ``Conversation`` of one slash command."""

    def __init__(self, client: AsyncWebClient, *, channel_id: str, user_id: str, response_url: str | None) -> None:
        self._client = client
        self.channel_id = channel_id
        self.user_id = user_id
        self.response_url = response_url
        self.thread_ts: str | None = None
        self.private = False  # True once the story moved to the response_url

    async def _respond(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Ephemeral to the requester: via response_url, else chat.postEphemeral."""
        if self.response_url:
            response = await AsyncWebhookClient(self.response_url).send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
            if response.status_code == 200:
                return
            log.warning("response_url answered HTTP %s; trying chat.postEphemeral", response.status_code)
        await self._client.chat_postEphemeral(channel=self.channel_id, user=self.user_id, text=text, blocks=blocks)

    async def refuse(self, refusal: Refusal) -> None:
        text, blocks = messages.refusal(refusal)
        await self._respond(text, blocks)

    async def _post(self, text: str, blocks: list[dict[str, Any]] | None, thread_ts: str | None) -> str:
        response = await self._client.chat_postMessage(
            channel=self.channel_id,
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(response["ts"])

    async def _join(self) -> bool:
        try:
            await self._client.conversations_join(channel=self.channel_id)
        except SlackApiError as exc:
            log.info("cannot join %s: %s", self.channel_id, exc.response.get("error"))
            return False
        log.info("joined %s to post a send's result", self.channel_id)
        return True

    async def announce(self, send: PreparedSend) -> None:
        text, blocks = messages.announcement(send)
        try:
            self.thread_ts = await self._post(text, blocks, None)
            return
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error not in _CANNOT_POST:
                raise
        if error == "not_in_channel" and await self._join():
            self.thread_ts = await self._post(text, blocks, None)
            return
        self.private = True
        await self._respond(text, [messages.section(messages.cannot_post_here(self.channel_id)), *blocks])

    async def _reply(self, text: str, blocks: list[dict[str, Any]] | None) -> None:
        if not self.private and self.thread_ts is not None:
            try:
                await self._post(text, blocks, self.thread_ts)
                return
            except SlackApiError as exc:
                log.warning("cannot reply in thread: %s; telling the requester instead", exc.response.get("error"))
        await self._respond(text, blocks)

    async def retrying(self, send: PreparedSend, error: D7Error) -> None:
        await self._reply(messages.retrying(error), None)

    async def finish(self, send: PreparedSend, outcome: Outcome) -> None:
        text, blocks = messages.outcome(send, outcome)
        await self._reply(text, blocks)
