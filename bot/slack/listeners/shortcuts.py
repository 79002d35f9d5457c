"""Shortcuts: "Send a text" (global) and "Text this message" (message) open the compose modal."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.models import Surface
from bot.slack import compose, messages
from bot.slack.compose import ComposeContext
from bot.slack.deps import Deps
from bot.slack.listeners.compose import forward_message, open_compose
from bot.slack.payloads import GlobalShortcut, MessageShortcut, Trigger

log = logging.getLogger("bot.slack")

_Shortcut = TypeVar("_Shortcut", GlobalShortcut, MessageShortcut)


def register(app: AsyncApp, deps: Deps) -> None:
    @app.shortcut("send_text")
    async def send_text(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if (shortcut := validated(GlobalShortcut, "send_text", deps, client, body)) is not None:
            context = ComposeContext(surface=Surface.SHORTCUT, team_id=shortcut.team.id, user_id=shortcut.user.id)
            deps.tasks.spawn(open_compose(deps, client, shortcut.trigger_id, context, None), "open-compose")

    @app.shortcut("text_this_message")
    async def text_this_message(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if (shortcut := validated(MessageShortcut, "text_this_message", deps, client, body)) is not None:
            deps.tasks.spawn(forward_message(deps, client, shortcut), "forward-message")


def validated(
    model: type[_Shortcut], callback_id: str, deps: Deps, client: AsyncWebClient, body: dict[str, Any]
) -> _Shortcut | None:
    """The shortcut's payload as ``model``; None (and the person told, when a modal can still open) if unusable."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        tell_incomplete(deps, client, body, callback_id, exc)
        return None


def tell_incomplete(
    deps: Deps, client: AsyncWebClient, body: dict[str, Any], shortcut: str, error: ValidationError
) -> None:
    """A shortcut's ack shows nothing, so the answer to an unusable payload is a modal, when one can still open."""
    log.warning("malformed %s shortcut payload: %s", shortcut, error.errors(include_input=False))
    try:
        trigger_id = Trigger.model_validate(body).trigger_id
    except ValidationError:
        return  # nowhere to answer
    deps.tasks.spawn(_open_notice(client, trigger_id, messages.incomplete_request()), "tell-incomplete")


async def _open_notice(client: AsyncWebClient, trigger_id: str, text: str) -> None:
    await client.views_open(trigger_id=trigger_id, view=compose.notice_view(text))
