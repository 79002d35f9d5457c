"""Message events from the channels the app is in.

Alert forwarding (matching monitoring posts against the policy's ``alerts``) is not built yet; until it is,
every message event is acknowledged quietly: answering 404 would make Slack retry it and disable the app.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.listeners import Deps


def register(app: AsyncApp, deps: Deps) -> None:
    @app.event("message")
    async def on_message() -> None:
        return None
