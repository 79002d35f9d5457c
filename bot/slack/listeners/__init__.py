"""Bolt listeners, one module per kind; the ids they answer are declared in ``ids``, in one place.

Bolt runs listeners inline (``process_before_response``): each one records what it must (the intent), acks,
hands anything slow to the outbox or ``Deps.tasks`` and returns, so Slack gets its answer at once.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.deps import Deps
from bot.slack.listeners import commands, compose, events, home, replies, shortcuts, steps, verify
from bot.slack.listeners.ids import COMMANDS, EVENTS, FUNCTIONS, SHORTCUTS

__all__ = ["COMMANDS", "EVENTS", "FUNCTIONS", "SHORTCUTS", "register_all"]


def register_all(app: AsyncApp, deps: Deps) -> None:
    commands.register(app, deps)
    compose.register(app, deps)
    shortcuts.register(app, deps)
    events.register(app, deps)
    if deps.inbound is not None:
        replies.register(app, deps)
    if deps.home is not None:
        home.register(app, deps, deps.home)
    if deps.steps is not None:
        steps.register(app, deps, deps.steps)
    if deps.verifying is not None:
        verify.register(app, deps, deps.verifying)
