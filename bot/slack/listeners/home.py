"""The App Home tab: published when a person opens it (``app_home_opened``), with a button that opens the compose
form; refreshed after their sends change by ``HomeTabs``."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.models import Surface
from bot.slack.compose import ComposeContext
from bot.slack.deps import Deps
from bot.slack.home import SEND_BUTTON, HomeTabs
from bot.slack.listeners.compose import open_compose
from bot.slack.payloads import HomeButtonClick, HomeOpenedCallback

log = logging.getLogger("bot.slack")


def register(app: AsyncApp, deps: Deps, tabs: HomeTabs) -> None:
    @app.event("app_home_opened")
    async def home_opened(body: dict[str, Any]) -> None:
        try:
            event = HomeOpenedCallback.model_validate(body).event
        except ValidationError as exc:
            log.warning("malformed app_home_opened: %s", exc.errors(include_input=False))
            return
        if event.tab not in (None, "home"):
            return  # the Messages tab: nothing to publish
        tabs.opened(event.user)

    @app.action(SEND_BUTTON)
    async def send_from_home(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        try:
            click = HomeButtonClick.model_validate(body)
        except ValidationError:
            log.warning("malformed %s click", SEND_BUTTON)
            return
        # The form asks where.
        context = ComposeContext(surface=Surface.SHORTCUT, team_id=click.team.id, user_id=click.user.id)
        deps.tasks.spawn(open_compose(deps, client, click.trigger_id, context, None), "open-compose")
