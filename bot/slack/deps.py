"""What the Bolt listeners need from the composition root, in one value (its own module: the listeners import it,
and the listeners' package imports them)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from bot.domain.policy import Policy
from bot.domain.ports import Conversations, Directory, InboundLog, OptOutList
from bot.metrics import Metrics
from bot.sending.admission import Admission
from bot.sending.alerts import AlertDesk
from bot.sending.deliveries import Deliveries
from bot.sending.intake import Intake
from bot.sending.oncall import OnCall
from bot.sending.verifying import PhoneVerifying
from bot.slack.home import HomeTabs
from bot.slack.steps import SlackSteps
from bot.tasks import BackgroundTasks


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
    conversations: Conversations  # where the bot posts what a listener has to say later (an acknowledgement)
    bot_user_id: str | None = None
    bot_id: str | None = None  # B…: the app's own posts carry it
    status_asked: dict[str, deque[float]] = field(default_factory=dict)  # /sms status look-ups per person
    home: HomeTabs | None = None  # the App Home tab (None: not published)
    steps: SlackSteps | None = None  # the Workflow Builder step (None: not offered)
    alerts: AlertDesk | None = None  # acknowledging forwarded alerts (None: reactions and replies do nothing)
    optouts: OptOutList | None = None  # /sms optout and optin (None: not offered)
    inbound: InboundLog | None = None  # texts phones sent back: their Reply… button (None: not offered)
    oncall: OnCall | None = None  # /sms oncall (None: not offered)
    verifying: PhoneVerifying | None = None  # App Home's "Verify my phone" (None: not offered)
