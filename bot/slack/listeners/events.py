"""Message events from the channels the app is in: alerts for the policy's ``alerts`` rules.

A matching post is recorded as an intent before Slack gets its answer (so a crash cannot lose it, and Slack's
retries find it recorded); the outbox does the rest. Messages that are not alerts — people talking, edits,
deletions, the bot's own results — are acknowledged quietly: answering 404 would make Slack retry them and, in
time, disable the app. If the intent cannot be recorded, the answer is an error so that Slack retries.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp

from bot.slack.alerts import alert_request
from bot.slack.listeners import Deps
from bot.slack.payloads import MessageEventCallback

log = logging.getLogger("bot.slack.events")


def register(app: AsyncApp, deps: Deps) -> None:
    own_ids = frozenset(i for i in (deps.bot_user_id, deps.bot_id) if i)

    @app.event("message")
    async def on_message(body: dict[str, Any]) -> None:
        try:
            callback = MessageEventCallback.model_validate(body)
        except ValidationError as exc:
            # Not an alert this app can read: acknowledged quietly like the others (an error would make Slack retry).
            log.warning("malformed message event: %s", exc.errors(include_input=False))
            return
        found = alert_request(callback.event, callback.team_id, deps.policy, own_ids)
        if found is None:
            return
        rule, request = found
        record = await deps.intake.record(request)  # raises when the database is down: Slack will retry
        if record is not None:
            log.info(
                "alert recorded rule=%r send_id=%s event_id=%s",
                rule.name,
                record.id,
                callback.event_id,
                extra={"send_id": record.id},
            )
