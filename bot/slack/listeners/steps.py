"""The "Send a text with D7" workflow step: its intent is recorded before Slack is answered (a redelivery of the same
``function_execution_id`` finds it and sends nothing again); the outbox sends it under the policy like a command
and completes the step once D7 has answered. Inputs that cannot make a request fail the step at once."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.domain.errors import InputError
from bot.slack.deps import Deps
from bot.slack.steps import CALLBACK_ID, SlackSteps, step_request

log = logging.getLogger("bot.slack")


def register(app: AsyncApp, deps: Deps, steps: SlackSteps) -> None:
    @app.function(CALLBACK_ID, auto_acknowledge=False)
    async def send_text_step(ack: AsyncAck, body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        team_id = str(body.get("team_id") or "")
        try:
            request = step_request(event, team_id)
        except InputError as exc:
            await ack()
            execution_id = event.get("function_execution_id")
            if isinstance(execution_id, str) and execution_id:
                await steps.fail(execution_id, str(exc))
            log.info("workflow step refused: %s", exc)
            return
        # Raises when the database did not keep it: no ack, so Slack delivers the event again.
        record = await deps.intake.record(request)
        await ack()
        if record is not None:
            log.info("workflow step recorded send_id=%s", record.id, extra={"send_id": record.id})
