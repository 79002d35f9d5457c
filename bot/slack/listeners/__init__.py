"""Bolt listeners, one module per kind; the ids they answer are declared here, in one place.

Bolt runs listeners inline (``process_before_response``): each one records what it must (the intent), acks,
hands anything slow to the outbox or ``Deps.tasks`` and returns, so Slack gets its answer at once.

The manifest test checks that these and ``manifest.yml`` list exactly the same commands, shortcuts and events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp

from bot.deliveries import Deliveries
from bot.metrics import Metrics
from bot.service import SendService
from bot.tasks import BackgroundTasks

COMMANDS = ("/sms", "/whatsapp")
SHORTCUTS = ("send_text", "text_this_message")  # global "Send a text"; message "Text this message"
EVENTS = ("message",)


@dataclass(frozen=True)
class Deps:
    """What the listeners need from the composition root."""

    service: SendService
    tasks: BackgroundTasks
    wake_outbox: Callable[[], None]
    metrics: Metrics
    bot_user_id: str | None = None
    bot_id: str | None = None  # B…: the app's own posts carry it
    deliveries: Deliveries | None = None  # /sms status


def register_all(app: AsyncApp, deps: Deps) -> None:
    from bot.slack.listeners import commands, compose, events, shortcuts

    commands.register(app, deps)
    compose.register(app, deps)
    shortcuts.register(app, deps)
    events.register(app, deps)
