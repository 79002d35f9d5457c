"""The "Send a text with D7" workflow step: its intent is recorded before Slack is answered (a redelivery of the same
``function_execution_id`` finds it and sends nothing again); the outbox sends it under the policy like a command
and completes the step once D7 has answered. Inputs that cannot make a request fail the step at once."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.domain.errors import InputError
from bot.slack.deps import Deps
from bot.slack.payloads import StepCallback
from bot.slack.steps import CALLBACK_ID, SlackSteps, step_request

log = logging.getLogger("bot.slack")


def register(app: AsyncApp, deps: Deps, steps: SlackSteps) -> None:
    @app.function(CALLBACK_ID, auto_acknowledge=False)
    async def send_text_step(ack: AsyncAck, body: dict[str, Any]) -> None:
        try:
            callback = StepCallback.model_validate(body)
        except ValidationError as exc:  # no execution to fail: nothing can be told
            await ack()
            log.warning("malformed workflow step: %s", exc.errors(include_input=False))
            return
        try:
            request = step_request(callback.event, callback.team_id)
        except InputError as exc:
            await ack()
            await steps.fail(callback.event.function_execution_id, str(exc))
            log.info("workflow step refused: %s", exc)
            return
        # Raises when the database did not keep it: no ack, so Slack delivers the event again.
        record = await deps.intake.record(request)
        await ack()
        if record is not None:
            log.info("workflow step recorded send_id=%s", record.id, extra={"send_id": record.id})
