"""Shortcuts: "Send a text" (global) and "Text this message" (message) open the compose modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.models import Surface
from bot.slack.compose import ComposeContext
from bot.slack.listeners import Deps
from bot.slack.listeners.compose import forward_message, open_compose


def register(app: AsyncApp, deps: Deps) -> None:
    @app.shortcut("send_text")
    async def send_text(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        context = ComposeContext(
            surface=Surface.SHORTCUT,
            team_id=(body.get("team") or {}).get("id", ""),
            user_id=(body.get("user") or {}).get("id", ""),
        )
        deps.tasks.spawn(open_compose(deps, client, body["trigger_id"], context, None), "open-compose")

    @app.shortcut("text_this_message")
    async def text_this_message(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        deps.tasks.spawn(forward_message(deps, client, body), "forward-message")
