"""The App Home tab: published when a person opens it (``app_home_opened``), with a button that opens the compose
form; refreshed after their sends change by ``HomeTabs``."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.models import Surface
from bot.slack.compose import ComposeContext
from bot.slack.deps import Deps
from bot.slack.home import SEND_BUTTON, HomeTabs
from bot.slack.listeners.compose import open_compose

log = logging.getLogger("bot.slack")


def register(app: AsyncApp, deps: Deps, tabs: HomeTabs) -> None:
    @app.event("app_home_opened")
    async def home_opened(body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        user, tab = event.get("user"), event.get("tab")
        if not isinstance(user, str) or not user or tab not in (None, "home"):
            return  # the Messages tab: nothing to publish
        tabs.opened(user)

    @app.action(SEND_BUTTON)
    async def send_from_home(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        trigger, team, user = (
            body.get("trigger_id"),
            (body.get("team") or {}).get("id"),
            (body.get("user") or {}).get("id"),
        )
        if not (isinstance(trigger, str) and isinstance(team, str) and isinstance(user, str)):
            log.warning("malformed %s click", SEND_BUTTON)
            return
        context = ComposeContext(surface=Surface.SHORTCUT, team_id=team, user_id=user)  # the form asks where
        deps.tasks.spawn(open_compose(deps, client, trigger, context, None), "open-compose")
