"""Telling a request's story in Slack: refusals to the requester, a parent message, results in its thread.

Everything needed is in the stored ``Origin`` and ``Placement``, so the story continues after a restart. When the
bot cannot post in the channel it joins it if it is public; otherwise (private channel, DM) the whole story goes
to the requester through the ``response_url`` (or ``chat.postEphemeral``), so no result is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain.delivery import RecipientDelivery
from bot.domain.errors import D7Error
from bot.domain.models import Origin
from bot.domain.sends import NotSent, Outcome, Placement, PreparedSend, Refusal
from bot.metrics import Metrics
from bot.slack import messages
from bot.slack.retry import retry_after_seconds

log = logging.getLogger("bot.slack")

# Errors that mean "this channel is closed to the bot", not "Slack is broken".
_CANNOT_POST = frozenset(
    {"not_in_channel", "channel_not_found", "is_archived", "restricted_action", "cannot_reply_to_message"}
)
# Errors that pass: the post is tried again later (by the outbox), not told privately instead.
_PASSING = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})


def passing(exc: BaseException) -> bool:
    """Slack failed for a reason that passes (5xx, 429, a timeout, no connection), not because of the post."""
    if not isinstance(exc, SlackApiError):
        return True
    status = int(getattr(exc.response, "status_code", 200) or 200)
    return status >= 500 or status == 429 or exc.response.get("error") in _PASSING


@dataclass
class _Channel:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    held_until: float = 0.0  # monotonic: Slack's Retry-After for this channel
    careful_until: float = 0.0  # monotonic: after a 429, posts go one at a time for a while


# After Slack answered 429 in a channel, its posts take turns this long (Slack's limit there is about 1 a second).
CAREFUL_FOR = 60.0


class ChannelPacer:
    """Posts to a channel go out at once while Slack takes them. Once Slack answers 429 there, the channel's posts
    take turns, none before its ``Retry-After``, for a minute: a burst queues instead of being answered 429 again
    and again, and other channels are not held up. (Taking turns always would cost every burst its concurrency.)"""

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}

    @asynccontextmanager
    async def turn(self, channel_id: str) -> AsyncIterator[None]:
        channel = self._channels.get(channel_id)
        if channel is None:
            channel = self._channels[channel_id] = _Channel()
        if time.monotonic() >= channel.careful_until:
            async with self._watching(channel):
                yield
            return
        async with channel.lock:
            # A time to wait for, not an event: a 429 meanwhile (an earlier post's retry) only moves it later.
            while (wait := channel.held_until - time.monotonic()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            async with self._watching(channel):
                yield

    @staticmethod
    @asynccontextmanager
    async def _watching(channel: _Channel) -> AsyncIterator[None]:
        try:
            yield
        except SlackApiError as exc:
            if exc.response.status_code == 429:
                channel.held_until = time.monotonic() + retry_after_seconds(
                    (exc.response.headers or {}).get("Retry-After")
                )
                channel.careful_until = time.monotonic() + CAREFUL_FOR
            raise


class SlackConversations:
    """Opens the Slack conversation of a stored origin; one pacer for every channel's posts."""

    def __init__(self, client: AsyncWebClient, metrics: Metrics, pacer: ChannelPacer | None = None) -> None:
        self._client = client
        self._metrics = metrics
        self._pacer = pacer or ChannelPacer()

    def open(self, origin: Origin) -> SlackConversation:
        return SlackConversation(self._client, origin, self._metrics, self._pacer)


class SlackConversation:
    """The ``Conversation`` of one request, whichever surface it came from."""

    def __init__(self, client: AsyncWebClient, origin: Origin, metrics: Metrics, pacer: ChannelPacer) -> None:
        self._client = client
        self.origin = origin
        self._metrics = metrics
        self._pacer = pacer

    def _failed(self, method: str, exc: SlackApiError) -> str:
        error = str(exc.response.get("error") or "unknown")
        self._metrics.slack_errors.labels(method, error).inc()
        return error

    async def _respond(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Ephemeral to the requester: via the response_url while it works, else chat.postEphemeral."""
        if self.origin.response_url:
            try:
                response = await AsyncWebhookClient(self.origin.response_url).send(
                    text=text, blocks=blocks, response_type="ephemeral", replace_original=False
                )
            except Exception as exc:  # an expired or unreachable response_url: fall through
                log.warning("response_url failed (%s); trying chat.postEphemeral", type(exc).__name__)
            else:
                if response.status_code == 200:
                    return
                self._metrics.slack_errors.labels("response_url", str(response.status_code)).inc()
                log.warning("response_url answered HTTP %s; trying chat.postEphemeral", response.status_code)
        try:
            await self._client.chat_postEphemeral(
                channel=self.origin.channel_id, user=self.origin.user_id, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            self._failed("chat.postEphemeral", exc)
            raise

    @property
    def _alert(self) -> bool:
        return self.origin.surface.is_alert

    async def refuse(self, refusal: Refusal) -> None:
        text, blocks = messages.refusal(refusal, alert=self._alert)
        if self._alert:
            await self._reply(Placement(self.origin.thread_ts), text, blocks)
            return
        await self._respond(text, blocks)

    async def not_sent(self, send: PreparedSend, placement: Placement, why: NotSent) -> None:
        await self._reply(placement, *messages.alert_not_sent(send, why))

    async def _post(self, text: str, blocks: list[dict[str, Any]] | None, thread_ts: str | None) -> str:
        try:
            async with self._pacer.turn(self.origin.channel_id):
                response = await self._client.chat_postMessage(
                    channel=self.origin.channel_id,
                    text=text,
                    blocks=blocks,
                    thread_ts=thread_ts,
                    unfurl_links=False,
                    unfurl_media=False,
                )
        except SlackApiError as exc:
            self._failed("chat.postMessage", exc)
            raise
        return str(response["ts"])

    async def _join(self) -> bool:
        try:
            await self._client.conversations_join(channel=self.origin.channel_id)
        except SlackApiError as exc:
            log.info("cannot join %s: %s", self.origin.channel_id, self._failed("conversations.join", exc))
            return False
        log.info("joined %s to post a send's result", self.origin.channel_id)
        return True

    async def announce(self, send: PreparedSend) -> Placement:
        text, blocks = messages.announcement(send)
        in_thread = self.origin.thread_ts  # a shortcut or an alert: the story goes in that message's thread
        try:
            ts = await self._post(text, blocks, in_thread)
            return Placement(in_thread or ts)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error not in _CANNOT_POST:
                raise
        if error == "not_in_channel" and await self._join():
            ts = await self._post(text, blocks, in_thread)
            return Placement(in_thread or ts)
        await self._respond(text, [messages.section(messages.cannot_post_here(self.origin.channel_id)), *blocks])
        return Placement(None, private=True)

    async def _reply(self, placement: Placement, text: str, blocks: list[dict[str, Any]] | None) -> str | None:
        """Post in the thread (the message's ts), or tell the requester privately (None).

        Alerts have nobody to tell privately: their story is always in the alert's thread.
        """
        if self._alert:
            return await self._post(text, blocks, placement.thread_ts or self.origin.thread_ts)
        if not placement.private and placement.thread_ts is not None:
            try:
                return await self._post(text, blocks, placement.thread_ts)
            except SlackApiError as exc:
                if passing(exc):
                    raise  # Slack is down or busy: the thread gets it when Slack is back, not a private note now
                log.warning("cannot reply in thread: %s; telling the requester instead", exc.response.get("error"))
        await self._respond(text, blocks)
        return None

    async def retrying(self, send: PreparedSend, placement: Placement, error: D7Error) -> None:
        await self._reply(placement, messages.retrying(error), None)

    def _card(
        self, send: PreparedSend, outcome: Outcome, statuses: Sequence[RecipientDelivery]
    ) -> tuple[str, list[dict[str, Any]]]:
        if self._alert:
            return messages.alert_outcome(send, outcome, statuses)
        return messages.outcome(send, outcome, statuses)

    async def finish(
        self, send: PreparedSend, placement: Placement, outcome: Outcome, statuses: Sequence[RecipientDelivery] = ()
    ) -> str | None:
        return await self._reply(placement, *self._card(send, outcome, statuses))

    async def update_card(
        self,
        send: PreparedSend,
        result_ts: str,
        outcome: Outcome,
        statuses: Sequence[RecipientDelivery],
    ) -> None:
        """The result message, rewritten in place with each recipient's latest delivery status."""
        text, blocks = self._card(send, outcome, statuses)
        try:
            async with self._pacer.turn(self.origin.channel_id):
                await self._client.chat_update(channel=self.origin.channel_id, ts=result_ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            self._failed("chat.update", exc)
            raise

    async def undelivered(
        self, send: PreparedSend, placement: Placement, failures: Sequence[RecipientDelivery]
    ) -> None:
        text = messages.undelivered(send, failures)
        await self._reply(placement, text, [messages.section(text)])

    async def still_unknown(self, send: PreparedSend, placement: Placement, created_at: datetime) -> None:
        text = messages.unknown_note(send, created_at)
        await self._reply(placement, text, [messages.section(text)])
