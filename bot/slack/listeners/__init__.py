"""Bolt listeners, one module per kind; the ids they answer are declared here, in one place.

Bolt runs listeners inline (``process_before_response``): each one records what it must (the intent), acks,
hands anything slow to the outbox or ``Deps.tasks`` and returns, so Slack gets its answer at once.

The manifest test checks that these and ``manifest.yml`` list exactly the same commands, shortcuts and events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from slack_bolt.async_app import AsyncApp

from bot.domain.policy import Policy
from bot.domain.ports import Directory
from bot.metrics import Metrics
from bot.sending.admission import Admission
from bot.sending.alerts import AlertDesk
from bot.sending.deliveries import Deliveries
from bot.sending.intake import Intake
from bot.slack.home import HomeTabs
from bot.slack.steps import SlackSteps
from bot.tasks import BackgroundTasks

COMMANDS = ("/sms", "/whatsapp")
SHORTCUTS = ("send_text", "text_this_message")  # global "Send a text"; message "Text this message"
# Alerts (and replies acknowledging them); the Home tab; the workflow step; reactions acknowledging alerts.
EVENTS = ("message", "app_home_opened", "function_executed", "reaction_added")
FUNCTIONS = ("send_text",)  # Workflow Builder custom steps


@dataclass(frozen=True)
class Deps:
    """What the listeners need from the composition root."""

    policy: Policy
    admission: Admission  # what the forms offer and refuse, in the pipeline's words
    intake: Intake  # intents kept before the ack
    directory: Directory
    tasks: BackgroundTasks
    deliveries: Deliveries  # /sms status
    metrics: Metrics
    bot_user_id: str | None = None
    bot_id: str | None = None  # B…: the app's own posts carry it
    status_asked: dict[str, deque[float]] = field(default_factory=dict)  # /sms status look-ups per person
    home: HomeTabs | None = None  # the App Home tab (None: not published)
    steps: SlackSteps | None = None  # the Workflow Builder step (None: not offered)
    alerts: AlertDesk | None = None  # acknowledging forwarded alerts (None: reactions and replies do nothing)


def register_all(app: AsyncApp, deps: Deps) -> None:
    from bot.slack.listeners import commands, compose, events, home, shortcuts, steps

    commands.register(app, deps)
    compose.register(app, deps)
    shortcuts.register(app, deps)
    events.register(app, deps)
    if deps.home is not None:
        home.register(app, deps, deps.home)
    if deps.steps is not None:
        steps.register(app, deps, deps.steps)
