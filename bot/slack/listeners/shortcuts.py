"""Shortcuts: "Send a text" (global) and "Text this message" (message).

The compose modal they open is not built yet; until it is, they answer at once and point to the commands,
rather than leaving the user with Slack's "didn't respond" error.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import messages
from bot.slack.listeners import Deps


def register(app: AsyncApp, deps: Deps) -> None:
    @app.shortcut("send_text")
    async def send_text(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = (body.get("user") or {}).get("id")
        if user:
            deps.tasks.spawn(_dm(client, user), "shortcut-send_text")

    @app.shortcut("text_this_message")
    async def text_this_message(ack: AsyncAck, respond: AsyncRespond) -> None:
        await ack()
        deps.tasks.spawn(_ephemeral(respond), "shortcut-text_this_message")


async def _dm(client: AsyncWebClient, user: str) -> None:
    await client.chat_postMessage(channel=user, text=messages.compose_not_available())


async def _ephemeral(respond: AsyncRespond) -> None:
    await respond(text=messages.compose_not_available(), response_type="ephemeral", replace_original=False)
